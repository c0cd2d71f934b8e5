"""Mammography CAD SR (SOP class 1.2.840.10008.5.1.4.1.1.88.50), TID 4000, with pydicom.

highdicom has no writer for this IOD, so the content tree is built item by item
from PS3.16 TID 4000-4023 (and the PS3.17 Annex E examples), within the value
types and relationships PS3.3 Table A.35.5-2 allows (DCMTK's ``dsrdump`` checks
those). Every code comes from :mod:`sr_templates.codes`::

    CONTAINER (111036, DCM, "Mammography CAD Report")                    TID 4000
    ├ HAS CONCEPT MOD CODE Language of Content Item and Descendants = en-US     TID 1204
    ├ CONTAINS CONTAINER (111028, DCM, "Image Library")
    │   └ CONTAINS IMAGE (each source image)                                    TID 4020
    │       └ HAS ACQ CONTEXT Image Laterality (CID 6022), Image View (CID 4014)
    │         [> Image View Modifier], Patient Orientation Row/Column, Study Date/Time,
    │         Content Date/Time, Horizontal/Vertical Pixel Spacing (mm)
    ├ CONTAINS CODE (111017, DCM, "CAD Processing and Findings Summary") (CID 6047)  TID 4001
    │   └ INFERRED FROM CONTAINER (111034, "Individual Impression/Recommendation")   TID 4003
    │       ├ HAS CONCEPT MOD CODE Rendering Intent (CID 6034)
    │       └ CONTAINS CODE (111059, "Single Image Finding") = Calcification Cluster  TID 4006
    │           ├ HAS CONCEPT MOD CODE Rendering Intent
    │           │   └ HAS PROPERTIES NUM (111071, "CAD Operating Point") = 1 (Optional only)
    │           ├ HAS PROPERTIES TEXT Algorithm Name / Version / Parameters       TID 4019
    │           ├ HAS PROPERTIES NUM (111012, "Certainty of Finding") = score, % (drawn ROI)
    │           │   or the detection confidence, % (detected cluster)
    │           ├ HAS PROPERTIES NUM (CN001, 99CALCNODE, "Actionable calcification cluster
    │           │   score") [0, 1] (detected cluster, when scored)
    │           ├ HAS PROPERTIES SCOORD (111010, "Center") POINT                  TID 4021
    │           │   └ R-SELECTED FROM -> the image in the Image Library
    │           ├ HAS PROPERTIES SCOORD (111041, "Outline") POLYLINE (the ROI)
    │           │   └ R-SELECTED FROM -> the image
    │           └ HAS PROPERTIES NUM (111038, "Number of calcifications")         TID 4010
    ├ CONTAINS CODE (111064, "Summary of Detections") (CID 6042)
    │   └ INFERRED FROM CONTAINER Successful / Failed Detections                  TID 4015
    │       └ CONTAINS CODE (111022, "Detection Performed") = Calcification Cluster  TID 4017
    │           ├ HAS PROPERTIES TEXT Algorithm Name / Version / Parameters
    │           ├ HAS PROPERTIES TEXT (121106, "Comment") "No calcification cluster
    │           │   detected on image k", per view without ROI where none was found
    │           ├ HAS PROPERTIES NUM Maximum / Recommended CAD Operating Point     TID 4023
    │           └ R-HAS PROPERTIES -> the images processed
    └ CONTAINS CODE (111065, "Summary of Analyses") (CID 6042)
        └ INFERRED FROM CONTAINER Successful / Failed Analyses                    TID 4016
            └ CONTAINS CODE (111004, "Analysis Performed")
                  = Individual Impression/Recommendation Analysis (CID 6043)      TID 4018
                ├ HAS PROPERTIES TEXT Algorithm Name / Version / Parameters
                └ R-HAS PROPERTIES -> the images

Semantics:

* One Single Image Finding per drawn ROI scored ``ok``, and one per detected cluster
  (a view without ROI under ``no_roi = "detect"``; scored or not: the detection is
  the CAD mark). Rendering Intent "Presentation Required" when the decision is
  actionable (and for a detected cluster that could not be scored), else
  "Presentation Optional" with CAD Operating Point 1: a workstation at its default
  operating point 0 shows only the actionable clusters; at 1 it shows all clusters
  (PS3.17 E.4). Maximum CAD Operating Point is 1 and the recommended one 0.
* Certainty of Finding carries, in percent, the score of a drawn ROI (score x 100)
  and the detection confidence of a detected cluster (the certainty that the
  cluster is there); a detected cluster's score is a NUM of the private scheme
  99CALCNODE (declared in the Coding Scheme Identification Sequence), as in the
  TID 1500 SR.
* A view without ROI where the detection found no cluster: its detection succeeded
  (Successful Detections references it), it has no finding, and a Comment under
  Detection Performed says "No calcification cluster detected on image k"; a
  study where no view has a finding says "All algorithms succeeded; without
  findings". A view whose detection failed is under Failed Detections with the
  reason as a Comment.
* Detection (segmentation and grouping of the calcifications of each ROI) succeeded
  on an image when it has a label image; Analysis (the actionable/benign
  classification) succeeded on an image when one of its ROIs was scored, and
  failed when one of its ROIs is ``failed``. Not-assessable ROIs (fewer than two
  calcifications) are a detection without finding, not a failure; the TID 1500
  SR and the GSPS say why. Algorithms never run are "Not Attempted".
* The model name, version, SHA-256, training data and "NOT FOR CLINICAL USE"
  (demonstration model) are the Algorithm Name / Version / Parameters.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
from pydicom.valuerep import DS

from . import codes
from .common import (
    DEVICE_SERIAL_NUMBER, MANUFACTURER, MANUFACTURER_MODEL_NAME, NOT_FOR_CLINICAL_USE, SERIES_NUMBERS,
    clip_outline, closed_outline, copy_patient_study, dicom_date, dicom_datetime, dicom_time, index_sources,
    instance_uid, model_text, ordered, outline_centre, patient_orientation, pixel_spacing_mm,
    series_description, series_uid, set_content_datetime, software_versions,
)
from analysis.results import StudyResult

MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
MAXIMUM_OPERATING_POINT = 1
IMAGE_LIBRARY_POSITION = 2  # root item 1 = language, 2 = Image Library


# ----------------------------------------------------------------------- content items

def coded(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _item(value_type: str, relationship: str | None, name: Code | None,
          children: Sequence[Dataset] = ()) -> Dataset:
    item = Dataset()
    if relationship is not None:
        item.RelationshipType = relationship
    item.ValueType = value_type
    if name is not None:
        item.ConceptNameCodeSequence = DicomSequence([coded(name)])
    if children:
        item.ContentSequence = DicomSequence(list(children))
    return item


def container(relationship: str | None, name: Code, children: Sequence[Dataset] = (),
              template: str | None = None) -> Dataset:
    item = _item("CONTAINER", relationship, name)
    item.ContinuityOfContent = "SEPARATE"
    if template is not None:
        ref = Dataset()
        ref.MappingResource = "DCMR"
        ref.TemplateIdentifier = template
        item.ContentTemplateSequence = DicomSequence([ref])
    if children:
        item.ContentSequence = DicomSequence(list(children))
    return item


def code_item(relationship: str, name: Code, value: Code, children: Sequence[Dataset] = ()) -> Dataset:
    item = _item("CODE", relationship, name, children)
    item.ConceptCodeSequence = DicomSequence([coded(value)])
    return item


def text_item(relationship: str, name: Code, value: str) -> Dataset:
    item = _item("TEXT", relationship, name)
    item.TextValue = value
    return item


def num_item(relationship: str, name: Code, value: float, unit: Code) -> Dataset:
    item = _item("NUM", relationship, name)
    measured = Dataset()
    number = float(value)
    measured.NumericValue = DS(str(int(number)) if number.is_integer() else DS(number, auto_format=True))
    measured.MeasurementUnitsCodeSequence = DicomSequence([coded(unit)])
    item.MeasuredValueSequence = DicomSequence([measured])
    return item


def date_item(relationship: str, name: Code, value: str) -> Dataset:
    item = _item("DATE", relationship, name)
    item.Date = value
    return item


def time_item(relationship: str, name: Code, value: str) -> Dataset:
    item = _item("TIME", relationship, name)
    item.Time = value
    return item


def image_item(relationship: str, source: Dataset, children: Sequence[Dataset] = ()) -> Dataset:
    item = _item("IMAGE", relationship, None, children)
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.ReferencedSOPSequence = DicomSequence([ref])
    return item


def scoord_item(relationship: str, name: Code, graphic_type: str, points: np.ndarray,
                children: Sequence[Dataset] = ()) -> Dataset:
    item = _item("SCOORD", relationship, name, children)
    item.GraphicType = graphic_type
    item.GraphicData = [float(v) for v in np.asarray(points, dtype=np.float32).ravel()]
    return item


def by_reference(relationship: str, path: Sequence[int]) -> Dataset:
    """A by-reference relationship to the content item at ``path`` (1-based, root = 1)."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ReferencedContentItemIdentifier = [int(v) for v in path]
    return item


# ----------------------------------------------------------------------- template parts

def _image_library_entry(source: Dataset, relationship: str = "CONTAINS") -> Dataset:
    """TID 4020 CAD Image Library Entry."""
    ctx = "HAS ACQ CONTEXT"
    children = []
    laterality = str(source.get("ImageLaterality", "") or source.get("Laterality", "")).upper()
    if laterality in codes.LATERALITY_CODES:
        children.append(code_item(ctx, codes.IMAGE_LATERALITY, codes.LATERALITY_CODES[laterality]))
    view = _view_code(source)
    if view is not None:
        modifiers = [code_item("HAS CONCEPT MOD", codes.IMAGE_VIEW_MODIFIER, m) for m in _view_modifiers(source)]
        children.append(code_item(ctx, codes.IMAGE_VIEW, view, modifiers))
    orientation = patient_orientation(source)
    if orientation and len(orientation) == 2:
        children.append(text_item(ctx, codes.PATIENT_ORIENTATION_ROW, str(orientation[0])))
        children.append(text_item(ctx, codes.PATIENT_ORIENTATION_COLUMN, str(orientation[1])))
    if source.get("StudyDate"):
        children.append(date_item(ctx, codes.STUDY_DATE, str(source.StudyDate)))
    if source.get("StudyTime"):
        children.append(time_item(ctx, codes.STUDY_TIME, str(source.StudyTime)))
    if source.get("ContentDate"):
        children.append(date_item(ctx, codes.CONTENT_DATE, str(source.ContentDate)))
    if source.get("ContentTime"):
        children.append(time_item(ctx, codes.CONTENT_TIME, str(source.ContentTime)))
    spacing = pixel_spacing_mm(source)
    if spacing is not None:
        children.append(num_item(ctx, codes.HORIZONTAL_PIXEL_SPACING, spacing[1], codes.MILLIMETER))
        children.append(num_item(ctx, codes.VERTICAL_PIXEL_SPACING, spacing[0], codes.MILLIMETER))
    return image_item(relationship, source, children)


def _code_from_item(item: Dataset) -> Code | None:
    try:
        return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))
    except AttributeError:
        return None


def _view_code(source: Dataset) -> Code | None:
    """Image View: the source's View Code Sequence, else its View Position mapped to CID 4014."""
    for item in source.get("ViewCodeSequence", []):
        code = _code_from_item(item)
        if code is not None:
            return code
    return codes.VIEW_CODES.get(str(source.get("ViewPosition", "")).upper())


def _view_modifiers(source: Dataset) -> list[Code]:
    out = []
    for item in source.get("ViewCodeSequence", []):
        for modifier in item.get("ViewModifierCodeSequence", []):
            code = _code_from_item(modifier)
            if code is not None:
                out.append(code)
    return out


def _algorithm(result: StudyResult, relationship: str = "HAS PROPERTIES") -> list[Dataset]:
    """TID 4019 Algorithm Identification."""
    model = result.model
    items = [text_item(relationship, codes.ALGORITHM_NAME, model.name),
             text_item(relationship, codes.ALGORITHM_VERSION, model.version),
             text_item(relationship, codes.ALGORITHM_PARAMETERS, f"model sha256 {model.sha256}"),
             text_item(relationship, codes.ALGORITHM_PARAMETERS, f"training data: {model.training_data}")]
    items += [text_item(relationship, codes.ALGORITHM_PARAMETERS, f"{key}={value}")
              for key, value in result.parameters.items()]
    if model.not_for_clinical_use:
        items.append(text_item(relationship, codes.ALGORITHM_PARAMETERS,
                               f"{NOT_FOR_CLINICAL_USE}: research use only"))
    return items


def _status(n_success: int, n_failed: int) -> Code:
    if n_success and n_failed:
        return codes.PARTIALLY_SUCCEEDED
    if n_success:
        return codes.SUCCEEDED
    if n_failed:
        return codes.FAILED
    return codes.NOT_ATTEMPTED


def _performed(result: StudyResult, name: Code, value: Code, image_paths: Iterable[list[int]],
               operating_points: bool, comments: Sequence[str] = ()) -> Dataset:
    """TID 4017 / TID 4018: Detection / Analysis Performed; ``comments``: TEXT (121106, DCM,
    "Comment") items after the algorithm identification."""
    children = _algorithm(result)
    children += [text_item("HAS PROPERTIES", codes.COMMENT, text[:1024]) for text in comments]
    if operating_points:  # TID 4023 CAD Operating Points
        children.append(num_item("HAS PROPERTIES", codes.MAXIMUM_CAD_OPERATING_POINT,
                                 MAXIMUM_OPERATING_POINT, codes.ARBITRARY_UNIT))
        children.append(num_item("HAS PROPERTIES", codes.RECOMMENDED_CAD_OPERATING_POINT, 0,
                                 codes.OPERATING_POINT_RANGE))
    children += [by_reference("HAS PROPERTIES", path) for path in image_paths]
    return code_item("CONTAINS", name, value, children)


def _summary(result: StudyResult, name: Code, success_name: Code, failed_name: Code, performed_name: Code,
             performed_value: Code, succeeded: list[list[int]], failed: list[list[int]],
             operating_points: bool, success_comments: Sequence[str] = (),
             failure_comments: Sequence[str] = ()) -> Dataset:
    children = []
    if succeeded:
        children.append(container("INFERRED FROM", success_name, [
            _performed(result, performed_name, performed_value, succeeded, operating_points, success_comments)]))
    if failed:
        children.append(container("INFERRED FROM", failed_name, [
            _performed(result, performed_name, performed_value, failed, operating_points, failure_comments)]))
    return code_item("CONTAINS", name, _status(len(succeeded), len(failed)), children)


def _finding(result: StudyResult, roi, image, path: list[int]) -> Dataset:
    """TID 4003 Individual Impression/Recommendation holding one TID 4006 Single Image Finding."""
    detected = roi.detection_confidence is not None
    # a detected cluster is a CAD mark whatever its score; only a benign one is optional
    required = roi.decision == "actionable" or (detected and roi.decision is None)
    intent = codes.PRESENTATION_REQUIRED if required else codes.PRESENTATION_OPTIONAL

    def rendering_intent() -> Dataset:
        children = [] if required else [num_item("HAS PROPERTIES", codes.CAD_OPERATING_POINT, 1,
                                                 codes.OPERATING_POINT_RANGE)]
        return code_item("HAS CONCEPT MOD", codes.RENDERING_INTENT, intent, children)

    centre = np.array([outline_centre(roi)], dtype=float)
    finding_children = [rendering_intent()]
    finding_children += _algorithm(result)
    certainty = roi.detection_confidence if detected else roi.score
    finding_children.append(num_item("HAS PROPERTIES", codes.CERTAINTY_OF_FINDING,
                                     round(certainty * 100.0, 3), codes.PERCENT))
    if detected and roi.score is not None:
        finding_children.append(num_item("HAS PROPERTIES", codes.ACTIONABLE_SCORE, round(roi.score, 6),
                                         codes.NO_UNITS))
    finding_children.append(scoord_item("HAS PROPERTIES", codes.CENTER, "POINT",
                                        clip_outline(centre, image.shape),
                                        [by_reference("SELECTED FROM", path)]))
    finding_children.append(scoord_item("HAS PROPERTIES", codes.OUTLINE, "POLYLINE",
                                        clip_outline(closed_outline(roi), image.shape),
                                        [by_reference("SELECTED FROM", path)]))
    if roi.status != "failed":
        finding_children.append(num_item("HAS PROPERTIES", codes.NUMBER_OF_CALCIFICATIONS,
                                         roi.n_calcifications, codes.NO_UNITS))
    finding = code_item("CONTAINS", codes.SINGLE_IMAGE_FINDING, codes.CALCIFICATION_CLUSTER, finding_children)
    return container("INFERRED FROM", codes.INDIVIDUAL_IMPRESSION_RECOMMENDATION, [
        code_item("HAS CONCEPT MOD", codes.RENDERING_INTENT, intent), finding])


def _processing_summary(any_finding: bool, any_success: bool, any_failure: bool) -> Code:
    if any_finding:
        return codes.NOT_ALL_SUCCEEDED_WITH_FINDINGS if any_failure else codes.ALL_SUCCEEDED_WITH_FINDINGS
    if not any_success:
        return codes.NONE_SUCCEEDED_WITHOUT_FINDINGS
    return codes.NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS if any_failure else codes.ALL_SUCCEEDED_WITHOUT_FINDINGS


# ----------------------------------------------------------------------- document

def _evidence(sources: Sequence[Dataset], study_uid: str) -> DicomSequence:
    """Current Requested Procedure Evidence Sequence (Hierarchical SOP Instance Reference macro)."""
    by_series: dict[str, list[Dataset]] = {}
    for ds in sources:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = DicomSequence()
    for series, members in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series
        item.ReferencedSOPSequence = DicomSequence()
        for ds in members:
            ref = Dataset()
            ref.ReferencedSOPClassUID = ds.SOPClassUID
            ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            item.ReferencedSOPSequence.append(ref)
        study.ReferencedSeriesSequence.append(item)
    return DicomSequence([study])


def build_mammography_cad_sr(result: StudyResult, sources: Iterable[Dataset] | Mapping[str, Dataset], *,
                             created: datetime | None = None) -> Dataset:
    """The Mammography CAD SR of the study (a pydicom Dataset with file meta).

    ``sources``: the source image datasets (pixels not needed), as a list or as SOP
    Instance UID -> dataset. The Image Library lists the analysed images (all sources
    when the whole analysis failed before any). ``created``: Instance Creation
    Date/Time (default: now).
    """
    sources = index_sources(result, sources)
    analysed = [im.sop_instance_uid for im in result.images]
    library_uids = ordered(analysed) if analysed else list(sources)
    library = [sources[uid] for uid in library_uids]
    path_of = {uid: [1, IMAGE_LIBRARY_POSITION, k] for k, uid in enumerate(library_uids, start=1)}

    findings = []
    for image, roi in result.rois:
        if roi.status == "ok" or roi.detection_confidence is not None:
            findings.append(_finding(result, roi, image, path_of[image.sop_instance_uid]))

    def detection_failed(image) -> bool:
        return image.label_image is None or image.cluster_detection == "detection_failed"

    detected_ok = [path_of[im.sop_instance_uid] for im in result.images if not detection_failed(im)]
    detected_failed = [path_of[im.sop_instance_uid] for im in result.images if detection_failed(im)]
    numbers = {im.sop_instance_uid: k for k, im in enumerate(result.images, start=1)}
    no_cluster = [f"{codes.NO_CLUSTER_DETECTED_TEXT} on image {numbers[im.sop_instance_uid]}"
                  for im in result.images if im.cluster_detection == "no_cluster_detected"]
    detection_failures = [f"Calcification cluster detection failed on image {numbers[im.sop_instance_uid]}: "
                          f"{im.detection_failure}" for im in result.images
                          if im.cluster_detection == "detection_failed"]
    if result.failure is not None and not result.images:
        detected_failed = [path_of[uid] for uid in library_uids]
    analysed_ok = [path_of[im.sop_instance_uid] for im in result.images
                   if any(r.status == "ok" for r in im.rois)]
    analysed_failed = [path_of[im.sop_instance_uid] for im in result.images
                       if im.label_image is not None and any(r.status == "failed" for r in im.rois)]
    any_failure = bool(detected_failed or analysed_failed or result.failure)
    summary_value = _processing_summary(bool(findings), bool(detected_ok or analysed_ok), any_failure)

    root_children = [
        code_item("HAS CONCEPT MOD", codes.LANGUAGE_OF_CONTENT, codes.LANGUAGE_EN_US),
        container("CONTAINS", codes.IMAGE_LIBRARY, [_image_library_entry(ds) for ds in library]),
        code_item("CONTAINS", codes.CAD_PROCESSING_AND_FINDINGS_SUMMARY, summary_value, findings),
        _summary(result, codes.SUMMARY_OF_DETECTIONS, codes.SUCCESSFUL_DETECTIONS, codes.FAILED_DETECTIONS,
                 codes.DETECTION_PERFORMED, codes.CALCIFICATION_CLUSTER, detected_ok, detected_failed,
                 operating_points=True, success_comments=no_cluster, failure_comments=detection_failures),
        _summary(result, codes.SUMMARY_OF_ANALYSES, codes.SUCCESSFUL_ANALYSES, codes.FAILED_ANALYSES,
                 codes.ANALYSIS_PERFORMED, codes.INDIVIDUAL_IMPRESSION_ANALYSIS, analysed_ok, analysed_failed,
                 operating_points=False),
    ]
    assert root_children[IMAGE_LIBRARY_POSITION - 1].ConceptNameCodeSequence[0].CodeValue == \
        codes.IMAGE_LIBRARY.value

    created = created or datetime.now()
    sop_uid = instance_uid(result, "CADSR")
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMOGRAPHY_CAD_SR
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta

    copy_patient_study(library[0], ds)
    # SOP Common
    ds.SOPClassUID = MAMMOGRAPHY_CAD_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = dicom_date(created)
    ds.InstanceCreationTime = dicom_time(created)
    # SR Document Series
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_uid(result, "CADSR")
    ds.SeriesNumber = SERIES_NUMBERS["CADSR"]
    ds.SeriesDescription = series_description(result, "mammography CAD SR")
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER_MODEL_NAME
    ds.DeviceSerialNumber = DEVICE_SERIAL_NUMBER
    ds.SoftwareVersions = software_versions(result)
    # SR Document General
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    set_content_datetime(ds, result)
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(library, result.study_instance_uid)
    if any(r.detection_confidence is not None and r.score is not None for _, r in result.rois):
        # the private score concept (99CALCNODE) is declared, as in the TID 1500 SR
        scheme = Dataset()
        scheme.CodingSchemeDesignator = codes.PRIVATE_SCHEME
        scheme.CodingSchemeName = codes.PRIVATE_SCHEME_NAME
        scheme.CodingSchemeResponsibleOrganization = codes.PRIVATE_SCHEME_ORGANIZATION
        ds.CodingSchemeIdentificationSequence = DicomSequence([scheme])
    # Contributing Equipment (SOP Common): this node and the model
    equipment = Dataset()
    equipment.Manufacturer = MANUFACTURER
    equipment.ManufacturerModelName = MANUFACTURER_MODEL_NAME
    equipment.SoftwareVersions = software_versions(result)
    equipment.ContributionDateTime = dicom_datetime(result.finished)
    equipment.ContributionDescription = f"Calcification analysis with {model_text(result)}"[:1024]
    equipment.PurposeOfReferenceCodeSequence = DicomSequence([coded(codes.PROCESSING_EQUIPMENT)])
    ds.ContributingEquipmentSequence = DicomSequence([equipment])
    # SR Document Content (the root content item)
    root = container(None, codes.MAMMOGRAPHY_CAD_REPORT, root_children, template="4000")
    for keyword in ("ValueType", "ConceptNameCodeSequence", "ContinuityOfContent", "ContentTemplateSequence",
                    "ContentSequence"):
        ds[keyword] = root[keyword]
    return ds
