"""What every writer shares: identity of the device, deterministic UIDs, the
patient/study attributes copied from the source images, dates, outlines.

Deterministic UIDs
------------------
Every Series and SOP Instance UID is "2.25." followed by the integer value of a
name-based UUID (RFC 4122 version 5, ISO/IEC 9834-8 UUID-derived UID) of: "calcnode", the object kind,
the Study Instance UID, the source SOP Instance UID(s) the object is about, the
model identity (name, version, SHA-256) and a digest of the ROI set (ids,
outlines, image) and of the algorithm parameters. Re-running the same model on
the same images and ROIs gives the same UIDs, so a PACS stores the result once;
a new ROI, a changed outline or another model gives new instances.
"""
from __future__ import annotations

import functools
import hashlib
import uuid
from datetime import datetime
from importlib import metadata
from typing import Iterable, Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from analysis.dicom_input.image import header_pixel_spacing

from analysis.results import ImageResult, RoiResult, StudyResult

from . import codes

MANUFACTURER = "calcnode"
MANUFACTURER_MODEL_NAME = "calcnode"
DEVICE_SERIAL_NUMBER = "calcnode"
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE"
# Namespace of the name-based UUIDs behind every UID this package derives.
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:calcnode:sr_templates")

# Series numbers of the result series (one series per object type and study).
SERIES_NUMBERS = {"SEG": 9101, "SR": 9102, "CADSR": 9103, "GSPS": 9104}

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

# Attributes of the Patient, Clinical Trial Subject, General Study and Patient Study
# modules that are copied from the source images into every result object, so a
# PACS files them under the same patient and study (dcentvfy checks this).
PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup", "PatientComments",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyDescription",
)


@functools.cache  # the installed version does not change under a running process; the lookup
def software_version() -> str:  # scans every installed distribution (0.4 ms, 6-8 times a study)
    try:
        return metadata.version("calcnode")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.1.0"


def software_versions(result: StudyResult) -> list[str]:
    """Software Versions (0018,1020): the node, then the model."""
    return [f"calcnode {software_version()}"[:64], f"{result.model.name} {result.model.version}"[:64]]


def model_text(result: StudyResult, *, flag: bool = True) -> str:
    """The model in one line; ``flag``: append "NOT FOR CLINICAL USE" when it applies."""
    model = result.model
    text = f"{model.name} {model.version} (sha256 {model.sha256[:12]}; trained on {model.training_data})"
    if flag and model.not_for_clinical_use:
        text += f" - {NOT_FOR_CLINICAL_USE}"
    return text


def series_description(result: StudyResult, kind: str) -> str:
    """Series Description (LO, 64 characters): object kind and the clinical-use flag."""
    suffix = f" - {NOT_FOR_CLINICAL_USE}" if result.model.not_for_clinical_use else ""
    return f"calcnode {kind}{suffix}"[:64]


def contributing_equipment(result: StudyResult):
    """Contributing Equipment item: this node, the model, when it finished."""
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER, purpose_of_reference=codes.PROCESSING_EQUIPMENT,
        manufacturer_model_name="calcnode", software_versions=software_versions(result),
        contribution_datetime=result.finished,
        contribution_description=f"Calcification analysis with {model_text(result)}"[:1024])




# ----------------------------------------------------------------------- UIDs

def _roi_digest(roi: RoiResult) -> str:
    outline = np.round(np.asarray(roi.outline_px, dtype=float), 3)
    h = hashlib.sha256()
    h.update(roi.roi_id.encode())
    h.update(roi.referenced_sop_instance_uid.encode())
    h.update(outline.tobytes())
    return h.hexdigest()


def input_digest(result: StudyResult) -> str:
    """SHA-256 over what defines the analysis request: images, ROIs, parameters."""
    h = hashlib.sha256()
    for image in result.images:
        h.update(image.sop_instance_uid.encode())
        for roi in image.rois:
            h.update(_roi_digest(roi).encode())
    for key, value in result.parameters.items():
        h.update(f"{key}={value!r};".encode())
    return h.hexdigest()


def derived_uid(result: StudyResult, *parts: str) -> str:
    """A UID that depends only on ``parts``, the study, the model and the inputs."""
    model = result.model
    sources = ["calcnode", *parts, result.study_instance_uid, model.name, model.version, model.sha256,
               input_digest(result)]
    return uuid_uid("\x1f".join(sources))


def uuid_uid(name: str) -> str:
    """A "2.25." UID from a version-5 UUID of ``name`` (deterministic; pydicom's
    ``generate_uid(prefix=None, entropy_srcs=...)`` ignores the entropy and is random)."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"


def per_image_object(result: StudyResult, kind: str, image: ImageResult) -> dict:
    """The identity keywords highdicom's per-image builders (SEG, GSPS) take: series, instance,
    and the device that made it."""
    return dict(
        series_instance_uid=series_uid(result, kind),
        series_number=SERIES_NUMBERS[kind],
        sop_instance_uid=instance_uid(result, kind, image.sop_instance_uid),
        instance_number=result.images.index(image) + 1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER_MODEL_NAME,
        software_versions=software_versions(result),
        device_serial_number=DEVICE_SERIAL_NUMBER,
    )


def series_uid(result: StudyResult, kind: str) -> str:
    return derived_uid(result, "series", kind)


def instance_uid(result: StudyResult, kind: str, *source_uids: str) -> str:
    return derived_uid(result, "instance", kind, *source_uids)


def tracking_uid(result: StudyResult, image: ImageResult, roi: RoiResult) -> str:
    """Tracking Unique Identifier shared by the SEG segment, the TID 1500 group and the GSPS
    annotations of one ROI."""
    return derived_uid(result, "tracking", image.sop_instance_uid, roi.roi_id)


def tracking_identifier(result: StudyResult, image: ImageResult, roi: RoiResult) -> str:
    """Human-readable Tracking Identifier: the ROI label (or id) and the image number."""
    number = result.images.index(image) + 1
    return f"{roi.display_name} (image {number})"


# ----------------------------------------------------------------------- sources

def index_sources(result: StudyResult, source_datasets: Iterable[Dataset] | Mapping[str, Dataset]
                  ) -> dict[str, Dataset]:
    """SOP Instance UID -> source dataset, after checking they match the result.

    Raises :class:`ValueError` when an analysed image has no source, when a source
    belongs to another study or when its size differs from the result's.
    """
    datasets = list(source_datasets.values()) if isinstance(source_datasets, Mapping) else list(source_datasets)
    by_uid: dict[str, Dataset] = {}
    for ds in datasets:
        if not isinstance(ds, Dataset):
            raise ValueError(f"source datasets must be pydicom Datasets, got {type(ds).__name__}")
        uid = str(ds.get("SOPInstanceUID", ""))
        if not uid or not str(ds.get("SeriesInstanceUID", "")):  # an image the analysis could not use
            continue  # either (no result can reference it); it is named in the warnings
        if str(ds.get("StudyInstanceUID", "")) != result.study_instance_uid:
            raise ValueError(f"source image {uid} belongs to study {ds.get('StudyInstanceUID')}, "
                             f"not to the analysed study {result.study_instance_uid}")
        by_uid[uid] = ds
    if not by_uid:
        raise ValueError("no source dataset given" if not datasets
                         else "no source dataset has a SOP and a Series Instance UID")
    for image in result.images:
        ds = by_uid.get(image.sop_instance_uid)
        if ds is None:
            raise ValueError(f"analysed image {image.sop_instance_uid} is not among the source datasets")
        shape = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
        if shape != image.shape:
            raise ValueError(f"image {image.sop_instance_uid}: the result is for {image.shape} "
                             f"(rows, columns) but the source image is {shape}")
    return by_uid


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the patient and study attributes (and the character set) of ``source``."""
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            target[keyword] = source[keyword]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if keyword not in target:  # Type 2 attributes: present, maybe empty
            setattr(target, keyword, "")


def patient_orientation(source: Dataset):
    """Patient Orientation of the source, or an empty value (Type 2C in the results)."""
    value = source.get("PatientOrientation")
    return value if value not in (None, "") else ""


def pixel_spacing_mm(source: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: Imager Pixel Spacing, else Pixel Spacing (as the analysis)."""
    return header_pixel_spacing(source)[0]


# ----------------------------------------------------------------------- dates

def dicom_date(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def dicom_time(moment: datetime) -> str:
    return moment.strftime("%H%M%S.%f")


def dicom_datetime(moment: datetime) -> str:
    text = moment.strftime("%Y%m%d%H%M%S.%f")
    if moment.tzinfo is not None:
        text += moment.strftime("%z")
    return text


def set_content_datetime(ds: Dataset, result: StudyResult) -> None:
    """Content Date/Time = when the analysis finished (the same on a re-run)."""
    ds.ContentDate = dicom_date(result.finished)
    ds.ContentTime = dicom_time(result.finished)


# ----------------------------------------------------------------------- geometry

def closed_outline(roi: RoiResult) -> np.ndarray:
    """(N + 1, 2) float32 (column, row): the outline with its first vertex repeated."""
    outline = np.asarray(roi.outline_px, dtype=np.float64)
    return np.vstack([outline, outline[:1]]).astype(np.float32)


def outline_centre(roi: RoiResult) -> tuple[float, float]:
    """(column, row) centroid of the outline polygon (vertex mean when degenerate)."""
    pts = np.asarray(roi.outline_px, dtype=float)
    x, y = pts[:, 0], pts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2
    if abs(area) < 1e-9:
        return float(x.mean()), float(y.mean())
    return float(((x + xn) * cross).sum() / (6 * area)), float(((y + yn) * cross).sum() / (6 * area))


def clip_outline(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Clamp (column, row) points into the image area [0, columns] x [0, rows]."""
    rows, cols = shape
    pts = np.asarray(points, dtype=np.float64).copy()
    pts[:, 0] = np.clip(pts[:, 0], 0.0, float(cols))
    pts[:, 1] = np.clip(pts[:, 1], 0.0, float(rows))
    return pts


def ordered(values: Sequence[str]) -> list[str]:
    """Unique values in first-seen order."""
    return list(dict.fromkeys(values))
