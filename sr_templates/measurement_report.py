"""Comprehensive SR, TID 1500 "Measurement Report", one per study (highdicom).

Content tree (what OHIF and other TID 1500 readers show)::

    CONTAINER (126000, DCM, "Imaging Measurement Report")          TID 1500
      Language, Observer Type = Device (calcnode, model), Procedure reported = Mammography
      CONTAINS Image Library (TID 1600: the analysed images with modality, size,
        patient orientation and pixel spacing when the image states them)
      CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
        CONTAINS CONTAINER (125007, DCM, "Measurement Group")       TID 1410, one per ROI
                                                                    (drawn, or a detected cluster)
          Tracking Identifier (ROI label + image number) and Tracking Unique Identifier
            (the same as the SEG segment's and the GSPS annotation's)
          Finding category (49755003, SCT) / Finding (129769006, SCT, "Calcification cluster")
          Algorithm Name / Version / Parameters (model, SHA-256, training data,
            "NOT FOR CLINICAL USE" for the demonstration model)
          SCOORD (111030, DCM, "Image Region") POLYLINE: the ROI outline on the source image
          IMAGE (121214, DCM, "Referenced Segmentation Frame") -> the ROI's SEG frame
            (+ Source image for segmentation), when the ROI was segmented
          NUM (111038, DCM, "Number of calcifications") {no units}
          NUM (111012, DCM, "Certainty of Finding") %: the detection confidence (detected clusters)
          NUM (CN001, 99CALCNODE, "Actionable calcification cluster score") [0, 1]   (ok only)
          NUM (122411, DCM, "Threshold Value") - the operating point
          CODE (CN002, 99CALCNODE, "Decision at operating point") = Actionable | Benign
          CODE (CN005, 99CALCNODE, "Analysis status") = Analysed | Not assessable | Analysis failed
          CODE (CN009, 99CALCNODE, "ROI source") = Drawn by radiologist | Detected by calcnode
            | Whole breast outline by calcnode
          CODE Calcification Type / Calcification Distribution, when known
          TEXT (121106, DCM, "Comment"): the reason (not assessable / failed), the
            clinical-use warning
      CONTAINS CONTAINER (C0034375, UMLS, "Qualitative Evaluations")  TID 1500 row 10, when a view
                                                                    without ROI had no cluster detected
                                                                    (or its detection failed)
        CODE (CN013, 99CALCNODE, "Calcification cluster detection")   one per such view
          = (CN014, "No calcification cluster detected") | (CN015, "... detection failed")
          INFERRED FROM IMAGE (Source): the view
        TEXT Comment "No calcification cluster detected on image k" (or why the detection failed)
        - no score, no decision

Choices and fixes:

* TID 1410 takes the ROI as an Image Region *or* a Referenced Segmentation Frame
  (highdicom accepts exactly one). The region is the primary reference (it is the
  radiologist's ROI and what TID 1500 viewers draw); the SEG frame is appended as
  an extension item of this extensible template, which highdicom reads back.
* highdicom writes Referenced Segment Number next to Referenced Frame Number in
  the Referenced SOP Sequence of the segmentation-frame item; the Image SOP
  Instance Reference macro allows only one of them and dciodvfy reports an error,
  so the segment number is removed (frame number = segment number in our SEGs).
* A view whose cluster detection found nothing is a qualitative evaluation of the report
  (TID 1500 row 10), not a measurement group: OHIF v3 (the open viewer of deploy/viewer/)
  draws every measurement group on an image and stops at the first one without an Image
  Region, showing none (a TID 1501 group has none). A study whose views all had no cluster has
  no "Imaging Measurements" container at all (TID 1500 requires row 6 *or* row 10).
* A whole-study failure (``StudyResult.failure``), or a study without ROI (and
  without a view whose cluster detection ran), gives one image-level group (TID 1501)
  with the analysis status and a Comment that says why; study warnings and the model
  identity are document-level Comments.
* A detected cluster is a TID 1410 group like a drawn ROI; "ROI source" says which it
  is (no standard concept does), and Certainty of Finding (the CAD SR's concept for
  a detection's certainty) carries the detection confidence, apart from the score.
* The Image Library is built here: highdicom's TID 1603 descriptors fail on an MG
  image without Patient Orientation or Imager Pixel Spacing.
* The private concepts (scheme 99CALCNODE) are declared in the Coding Scheme
  Identification Sequence; dciodvfy warns (never errs) that it does not know them.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes as pydicom_codes

from . import codes
from .common import (
    MANUFACTURER, NOT_FOR_CLINICAL_USE, SERIES_NUMBERS, clip_outline, closed_outline, contributing_equipment,
    derived_uid, index_sources, instance_uid, model_text, ordered, patient_orientation, pixel_spacing_mm,
    series_description, series_uid, set_content_datetime, software_versions, tracking_identifier, tracking_uid,
)
from analysis.results import ImageResult, RoiResult, StudyResult
from .seg import segment_number

UNITLESS = codes.NO_UNITS


def coding_scheme_identification() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = codes.PRIVATE_SCHEME
    item.CodingSchemeName = codes.PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = codes.PRIVATE_SCHEME_ORGANIZATION
    return item


def algorithm_parameters(result: StudyResult) -> list[str]:
    """TID 4019 Algorithm Parameters: model identity, settings, the clinical-use flag."""
    model = result.model
    params = [f"model sha256 {model.sha256}", f"training data: {model.training_data}"[:1024]]
    params += [f"{key}={value}" for key, value in result.parameters.items()]
    if model.not_for_clinical_use:
        params.append(f"{NOT_FOR_CLINICAL_USE}: research use only")
    return params


def _comment(text: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=codes.COMMENT, value=text[:1024],
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def detection_sentence(roi: RoiResult) -> str:
    """"detected by calcnode, confidence 73 %" for a detected cluster, else ""."""
    if roi.detection_confidence is None:
        return ""
    return f"detected by calcnode, confidence {roi.detection_confidence * 100:.0f} %"


def status_sentence(roi: RoiResult) -> str:
    """One line a radiologist reads: the score and decision, or why there is none."""
    if roi.status == "ok":
        return (f"score {roi.score:.2f} at threshold {roi.threshold:.2f}: {roi.decision} "
                f"({roi.n_calcifications} calcifications)")
    if roi.status == "not_assessable":
        return f"not assessable: {roi.reason}"
    return f"analysis failed: {roi.reason}"


def _group(result: StudyResult, image: ImageResult, roi: RoiResult, source: Dataset,
           segmentation: Dataset | None) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=clip_outline(closed_outline(roi), image.shape),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    algorithm = hd.sr.AlgorithmIdentification(
        name=result.model.name, version=result.model.version,
        parameters=algorithm_parameters(result))

    measurements = []
    if roi.status != "failed":
        measurements.append(hd.sr.Measurement(name=codes.NUMBER_OF_CALCIFICATIONS,
                                              value=roi.n_calcifications, unit=UNITLESS))
    if roi.score is not None:
        measurements.append(hd.sr.Measurement(name=codes.ACTIONABLE_SCORE, value=roi.score, unit=UNITLESS))
    if roi.threshold is not None:
        measurements.append(hd.sr.Measurement(name=codes.THRESHOLD_VALUE, value=roi.threshold, unit=UNITLESS))
    if roi.detection_confidence is not None:
        measurements.append(hd.sr.Measurement(name=codes.CERTAINTY_OF_FINDING,
                                              value=round(roi.detection_confidence * 100.0, 3), unit=codes.PERCENT))

    evaluations = []
    if roi.decision is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(name=codes.DECISION_AT_OPERATING_POINT,
                                                        value=codes.DECISION_CODES[roi.decision]))
    evaluations.append(hd.sr.QualitativeEvaluation(name=codes.ANALYSIS_STATUS,
                                                    value=codes.STATUS_CODES[roi.status]))
    evaluations.append(hd.sr.QualitativeEvaluation(name=codes.ROI_SOURCE, value=codes.roi_source(roi.kind)))
    if roi.calcification_type is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=codes.CALCIFICATION_TYPE, value=codes.CALCIFICATION_TYPE_CODES[roi.calcification_type]))
    if roi.distribution is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=codes.CALCIFICATION_DISTRIBUTION, value=codes.DISTRIBUTION_CODES[roi.distribution]))

    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid(result, image, roi),
                                                     identifier=tracking_identifier(result, image, roi)),
        referenced_region=region,
        finding_type=codes.CALCIFICATION_CLUSTER,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    container = group[0]
    number = segment_number(image, roi)
    if segmentation is not None and number is not None:
        reference = hd.sr.ReferencedSegmentationFrame(
            sop_class_uid=segmentation.SOPClassUID, sop_instance_uid=segmentation.SOPInstanceUID,
            frame_number=number, segment_number=number,  # one frame per segment, in segment order
            source_image=hd.sr.SourceImageForSegmentation.from_source_image(source))
        for item in reference:
            for ref in item.get("ReferencedSOPSequence", []):
                if "ReferencedSegmentNumber" in ref and "ReferencedFrameNumber" in ref:
                    del ref.ReferencedSegmentNumber  # dciodvfy: only one of the two is allowed
            container.ContentSequence.append(item)
    detected = detection_sentence(roi)
    name = f"{roi.display_name} ({detected})" if detected else roi.display_name
    container.ContentSequence.append(_comment(f"{name}: {status_sentence(roi)}"))
    if result.model.not_for_clinical_use:
        container.ContentSequence.append(_comment(f"{NOT_FOR_CLINICAL_USE}: {model_text(result, flag=False)}"))
    return group


def image_library(images: list[Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1600 Image Library: one group, one IMAGE ("Source") per image with its TID 1602/1603
    descriptors: modality, size in pixels, patient orientation and pixel spacing when known."""
    contains, acq = hd.sr.RelationshipTypeValues.CONTAINS, hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT
    entries = []
    for ds in images:
        entry = hd.sr.ImageContentItem(name=codes.SOURCE, referenced_sop_class_uid=ds.SOPClassUID,
                                       referenced_sop_instance_uid=ds.SOPInstanceUID, relationship_type=contains)
        descriptors = [hd.sr.CodeContentItem(name=pydicom_codes.DCM.Modality, value=codes.MAMMOGRAPHY_MODALITY,
                                             relationship_type=acq)]
        if isinstance(ds.get("Rows"), int) and isinstance(ds.get("Columns"), int):  # a failure report's
            # sources may lack them (sr_templates.headers leaves out what cannot be read)
            descriptors += [hd.sr.NumContentItem(name=pydicom_codes.DCM.PixelDataRows, value=int(ds.Rows),
                                                 unit=codes.PIXELS, relationship_type=acq),
                            hd.sr.NumContentItem(name=pydicom_codes.DCM.PixelDataColumns, value=int(ds.Columns),
                                                 unit=codes.PIXELS, relationship_type=acq)]
        orientation = patient_orientation(ds)
        if orientation and len(orientation) == 2:
            descriptors += [hd.sr.TextContentItem(name=codes.PATIENT_ORIENTATION_ROW, value=str(orientation[0]),
                                                  relationship_type=acq),
                            hd.sr.TextContentItem(name=codes.PATIENT_ORIENTATION_COLUMN,
                                                  value=str(orientation[1]), relationship_type=acq)]
        spacing = pixel_spacing_mm(ds)
        if spacing is not None:
            descriptors += [hd.sr.NumContentItem(name=codes.HORIZONTAL_PIXEL_SPACING, value=spacing[1],
                                                 unit=codes.MILLIMETER, relationship_type=acq),
                            hd.sr.NumContentItem(name=codes.VERTICAL_PIXEL_SPACING, value=spacing[0],
                                                 unit=codes.MILLIMETER, relationship_type=acq)]
        entry.ContentSequence = hd.sr.ContentSequence(descriptors)
        entries.append(entry)
    group = hd.sr.ContainerContentItem(name=pydicom_codes.DCM.ImageLibraryGroup, relationship_type=contains)
    group.ContentSequence = hd.sr.ContentSequence(entries)
    library = hd.sr.ContainerContentItem(name=codes.IMAGE_LIBRARY, relationship_type=contains)
    library.ContentSequence = hd.sr.ContentSequence([group])
    return library


def no_cluster_sentence(result: StudyResult, image: ImageResult) -> str:
    """What a view without ROI and without detected cluster says (or why its detection failed)."""
    number = result.images.index(image) + 1
    if image.cluster_detection == "detection_failed":
        return f"Calcification cluster detection failed on image {number}: {image.detection_failure}"
    return f"{codes.NO_CLUSTER_DETECTED_TEXT} on image {number}"


def detection_evaluations(result: StudyResult, sources: Mapping[str, Dataset]) -> hd.sr.ContainerContentItem | None:
    """TID 1500 row 10, "Qualitative Evaluations": for each view without ROI whose cluster
    detection found no cluster (or failed), the outcome inferred from the view and a Comment
    that says so; None when there is no such view. No score, no decision."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items = []
    for image in result.images:
        if image.rois or image.cluster_detection not in codes.DETECTION_OUTCOME_CODES:
            continue
        source = sources[image.sop_instance_uid]
        outcome = hd.sr.CodeContentItem(name=codes.CLUSTER_DETECTION,
                                        value=codes.DETECTION_OUTCOME_CODES[image.cluster_detection],
                                        relationship_type=contains)
        outcome.ContentSequence = hd.sr.ContentSequence([hd.sr.ImageContentItem(
            name=codes.SOURCE, referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM)])
        items += [outcome, _comment(no_cluster_sentence(result, image))]
    if not items:
        return None
    container = hd.sr.ContainerContentItem(name=codes.QUALITATIVE_EVALUATIONS, relationship_type=contains)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _study_group(result: StudyResult) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    status = "failed" if result.failure is not None else "ok"
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(result, "tracking", "study"),
                                                     identifier="calcnode analysis of the study"),
        algorithm_id=hd.sr.AlgorithmIdentification(name=result.model.name, version=result.model.version,
                                                   parameters=algorithm_parameters(result)),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=codes.ANALYSIS_STATUS,
                                                             value=codes.STATUS_CODES[status])])
    reason = f"analysis failed: {result.failure}" if result.failure is not None else "no region of interest"
    group[0].ContentSequence.append(_comment(reason))
    return group


def build_measurement_report(result: StudyResult, sources: Iterable[Dataset] | Mapping[str, Dataset],
                             segmentations: Mapping[str, Dataset] | None = None) -> Dataset:
    """The TID 1500 Measurement Report of the study.

    ``sources``: the source image datasets (pixels not needed), as a list or as
    SOP Instance UID -> dataset. ``segmentations``: source SOP Instance UID -> its
    SEG (from :func:`sr_templates.seg.build_segmentation`), referenced frame by frame.
    """
    sources = index_sources(result, sources)
    segmentations = dict(segmentations or {})
    groups = []
    for image in result.images:
        source = sources[image.sop_instance_uid]
        for roi in image.rois:
            groups.append(_group(result, image, roi, source, segmentations.get(image.sop_instance_uid)))
    evaluations = detection_evaluations(result, sources)

    referenced = [sources[uid] for uid in ordered([im.sop_instance_uid for im in result.images])]
    if not referenced:  # whole-study failure before any image was analysed
        referenced = list(sources.values())
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid(result, "device-observer"), name="calcnode",
        manufacturer_name=MANUFACTURER, model_name=f"{result.model.name} {result.model.version}"[:64])
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=pydicom_codes.DCM.Device, observer_identifying_attributes=device))
    only_evaluations = not groups and evaluations is not None and result.failure is None
    if not groups:  # nothing was analysed: one image-level group (TID 1501) says so and why
        groups.append(_study_group(result))  # (highdicom needs one; dropped below when only_evaluations)
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.MAMMOGRAPHY_PROCEDURE,
        imaging_measurements=groups,
    )
    root = report[0]
    # TID 1500 row 4, Image Library (TID 1600), before "Imaging Measurements". Built here rather
    # than by highdicom, whose projection-radiography descriptors (TID 1603) fail on an image
    # without Patient Orientation or Imager Pixel Spacing; unknown descriptors are left out.
    position = next(k for k, item in enumerate(root.ContentSequence)
                    if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "126010")
    root.ContentSequence.insert(position, image_library(referenced))
    if evaluations is not None:  # TID 1500 row 10, after the Imaging Measurements (row 6)
        if only_evaluations:
            del root.ContentSequence[position + 1]
            root.ContentSequence.insert(position + 1, evaluations)
        else:
            root.ContentSequence.insert(position + 2, evaluations)
    notes = []
    if result.failure is not None:
        notes.append(f"Analysis failed: {result.failure}")
    notes += [f"Warning: {w}" for w in result.warnings]
    notes.append(f"Model: {model_text(result)}")
    if result.model.not_for_clinical_use:
        notes.append(f"{NOT_FOR_CLINICAL_USE}. Research software; the model is not validated for clinical "
                     f"use (training data: {result.model.training_data}).")
    for note in notes:
        root.ContentSequence.append(_comment(note))

    evidence = referenced + [segmentations[uid] for uid in ordered(list(segmentations))]
    _check_references(root, evidence)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=_without_children(root),
        series_instance_uid=series_uid(result, "SR"),
        series_number=SERIES_NUMBERS["SR"],
        sop_instance_uid=instance_uid(result, "SR"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        record_evidence=True,
        contributing_equipment=[contributing_equipment(result)],
    )
    sr.SeriesDescription = series_description(result, "measurement report")
    sr.ManufacturerModelName = "calcnode"
    sr.SoftwareVersions = software_versions(result)
    sr.CodingSchemeIdentificationSequence = DicomSequence([coding_scheme_identification()])
    set_content_datetime(sr, result)
    document = Dataset(sr)  # the same elements, as a plain data set (see _without_children)
    document.file_meta = sr.file_meta
    document.ContentSequence = root.ContentSequence
    return document


def _without_children(root: Dataset) -> Dataset:
    """The root CONTAINER item with an empty ContentSequence.

    highdicom's SR constructor deep-copies the content tree it is given, parses the copy into
    its typed content items and walks it three more times (the references, the value types):
    0.1 s of the 0.15 s a study's report costs, for a tree that highdicom's template classes
    have just built and checked. So the document is made from the root item alone and the tree
    is attached afterwards, once; the reference check is :func:`_check_references`, and
    SCOORD3D (which a Comprehensive SR may not hold) is never written here. The document is
    returned as a plain pydicom data set: highdicom's typed view of it would show the root alone.
    """
    stub = Dataset()
    for element in root:
        if element.keyword != "ContentSequence":
            stub.add(element)
    stub.ContentSequence = DicomSequence([])
    return stub


def _check_references(root: Dataset, evidence: list[Dataset]) -> None:
    """Every instance an IMAGE or COMPOSITE item of the tree refers to is in ``evidence`` (the
    check highdicom's constructor makes; a reference without evidence is a programming error)."""
    known = {str(ds.SOPInstanceUID) for ds in evidence}
    pending = list(root.get("ContentSequence", []))
    while pending:
        item = pending.pop()
        if item.get("ValueType") in ("IMAGE", "COMPOSITE"):
            uid = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            if uid not in known:
                raise ValueError(f"the report refers to instance {uid}, which is not in its evidence")
        pending.extend(item.get("ContentSequence", []))
