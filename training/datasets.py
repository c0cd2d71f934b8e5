"""Finding the images, ROI objects and truth of a training / evaluation data set.

A data set is a folder (searched recursively) that holds:

* DICOM mammograms (any file name; ``*.dcm``);
* their ROI objects: GSPS or SEG files referencing the images (optional);
* for segmentation truth, ``*_labels.npz`` files with ``labels`` (integer label image of the
  image's size, 0 = background, one label per calcification) and ``sop_instance_uid`` (the
  image it belongs to). ``calcnode synth`` writes exactly this; a site exports its own
  annotations in the same form (see docs/segmentation.md).

Files are matched by SOP Instance UID, never by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from analysis.dicom_input import ImageGeometry, InputError, RoiError
from analysis.dicom_input.image import MAMMOGRAPHY_SOP_CLASSES
from analysis.dicom_input.rois import GSPS_SOP_CLASS, SEG_SOP_CLASS, Roi, parse_rois


@dataclass(frozen=True)
class DatasetImage:
    """One mammogram of a data set with what belongs to it."""

    image_path: Path
    sop_instance_uid: str
    patient_id: str
    roi_paths: tuple[Path, ...]
    truth_path: Path | None


def _header(path: Path):
    try:
        return pydicom.dcmread(path, stop_before_pixels=True,
                               specific_tags=["SOPClassUID", "SOPInstanceUID", "PatientID"])
    except Exception:  # not DICOM or unreadable: not part of the data set
        return None


def _referenced_uids(path: Path) -> set[str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    uids = set()
    for elem in ds.iterall():
        if elem.keyword == "ReferencedSOPInstanceUID":
            uids.add(str(elem.value))
    return uids


def scan_dataset(root: str | Path, *, require_truth: bool = False) -> list[DatasetImage]:
    """Every MG image under ``root`` with its ROI objects and truth file, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data folder")
    images: dict[str, tuple[Path, str]] = {}
    roi_files: list[Path] = []
    for path in sorted(root.rglob("*.dcm")):
        header = _header(path)
        if header is None or "SOPClassUID" not in header:
            continue
        sop_class = str(header.SOPClassUID)
        if sop_class in MAMMOGRAPHY_SOP_CLASSES:
            images[str(header.SOPInstanceUID)] = (path, str(header.get("PatientID", "")))
        elif sop_class in (GSPS_SOP_CLASS, SEG_SOP_CLASS):
            roi_files.append(path)
    rois_by_image: dict[str, list[Path]] = {}
    for path in roi_files:
        for uid in _referenced_uids(path) & images.keys():
            rois_by_image.setdefault(uid, []).append(path)
    truth: dict[str, Path] = {}
    for path in sorted(root.rglob("*_labels.npz")):
        with np.load(path) as npz:
            if "sop_instance_uid" in npz:
                truth[str(npz["sop_instance_uid"])] = path
    out = []
    for uid, (path, patient) in sorted(images.items(), key=lambda item: str(item[1][0])):
        if require_truth and uid not in truth:
            continue
        out.append(DatasetImage(image_path=path, sop_instance_uid=uid, patient_id=patient,
                                roi_paths=tuple(rois_by_image.get(uid, ())), truth_path=truth.get(uid)))
    return out


def load_truth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The truth label image (int32) of a ``*_labels.npz``, checked against the image's shape."""
    with np.load(path) as npz:
        labels = np.asarray(npz["labels"]).astype(np.int32)
    if labels.shape != tuple(shape):
        raise ValueError(f"{path}: truth labels are {labels.shape}, the image is {tuple(shape)}")
    return labels


def image_rois(item: DatasetImage, geometry: ImageGeometry,
               point_radius_mm: float = 2.5) -> tuple[list[Roi], list[InputError]]:
    """The ROIs drawn on this image, from all its ROI objects (lenient: problems are returned)."""
    rois: list[Roi] = []
    problems: list[InputError] = []
    for path in item.roi_paths:
        found, errors = parse_rois(path, images=[geometry], point_radius_mm=point_radius_mm)
        rois += [r for r in found if r.referenced_sop_instance_uid == item.sop_instance_uid]
        problems += [e for e in errors if e.reason != "unknown_image"]
    return rois, problems


def roi_region(rois: list[Roi], geometry: ImageGeometry) -> np.ndarray | None:
    """Union of the ROIs' masks, or None when there is none."""
    region = None
    for roi in rois:
        try:
            mask = roi.rasterise(geometry)
        except RoiError:
            continue
        region = mask if region is None else (region | mask)
    return region
