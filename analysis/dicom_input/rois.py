"""Regions of interest: GSPS annotations and SEG segments -> :class:`Roi`.

The public entry of the ROI readers: :func:`read_rois` and :func:`parse_rois`
read a GSPS or a SEG and hand it, by SOP class, to :mod:`.gsps` or :mod:`.seg`.
The :class:`Roi` type and its coordinate convention are in :mod:`.roi_types`,
the shape geometry (areas, masks) in :mod:`.roi_geometry`; they are re-exported
here, so callers import everything from this module.

Errors
------
Every problem is a :class:`RoiError` with a sentence and a ``reason``:
``not_found``, ``not_dicom``, ``corrupt`` (unreadable or truncated file: pydicom
itself reads a cut file silently, so short reads are detected here), ``sop_class``,
``no_roi``, ``no_reference``, ``unknown_image``, ``no_displayed_area``,
``unsupported``, ``malformed``, ``degenerate``, ``decode``, ``size_mismatch``,
``wrong_image``, ``no_spacing``, ``empty``.
:func:`read_rois` raises the first; :func:`parse_rois` returns them beside the
good ROIs (a problem with the whole object gives no ROI and one error).
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator

from pydicom.dataset import Dataset

from ..results import DRAWN_ROI_KINDS
from .errors import RoiError
from .gsps import gsps_rois
from .image import ImageGeometry, read_dataset, sop_class_name
from .roi_types import Roi, size_mismatch_sentence
from .seg import seg_rois

__all__ = [
    "GSPS_SOP_CLASS",
    "SEG_SOP_CLASS",
    "DEFAULT_POINT_RADIUS_MM",
    "DRAWN_ROI_KINDS",
    "Roi",
    "read_rois",
    "parse_rois",
]

GSPS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DEFAULT_POINT_RADIUS_MM = 2.5


def read_rois(source: str | os.PathLike | Dataset, *, images: Iterable[ImageGeometry] = (),
              point_radius_mm: float = DEFAULT_POINT_RADIUS_MM) -> list[Roi]:
    """All ROIs of a GSPS or SEG; raises :class:`RoiError` on the first problem.

    ``images``: when given, every ROI must reference one of them
    (``unknown_image``) and a SEG must have their size (``size_mismatch``).
    ``point_radius_mm``: radius (mm) of the disk that stands for a POINT.
    """
    rois = []
    for item in _iter_rois(source, images, point_radius_mm):
        if isinstance(item, RoiError):
            raise item
        rois.append(item)
    return rois


def parse_rois(source: str | os.PathLike | Dataset, *, images: Iterable[ImageGeometry] = (),
               point_radius_mm: float = DEFAULT_POINT_RADIUS_MM) -> tuple[list[Roi], list[RoiError]]:
    """Lenient :func:`read_rois`: the good ROIs and one error per bad object.

    A problem with the whole object (unreadable, wrong SOP class, no region at
    all) gives ``([], [error])``; this function does not raise RoiError.
    """
    rois: list[Roi] = []
    errors: list[RoiError] = []
    try:
        for item in _iter_rois(source, images, point_radius_mm):
            (errors if isinstance(item, RoiError) else rois).append(item)
    except RoiError as exc:
        errors.append(exc)
    return rois, errors


def _iter_rois(source, images: Iterable[ImageGeometry],
               point_radius_mm: float) -> Iterator[Roi | RoiError]:
    """Yield each ROI or per-object error; raise for whole-object problems."""
    if not point_radius_mm > 0:
        raise ValueError(f"point_radius_mm must be > 0, got {point_radius_mm}")
    by_uid = {geometry.sop_instance_uid: geometry for geometry in images}
    ds = read_dataset(source, error=RoiError)
    name = _source_name(source, ds)
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == GSPS_SOP_CLASS:
        items = gsps_rois(ds, name, point_radius_mm)
    elif sop_class == SEG_SOP_CLASS:
        items = seg_rois(ds, name)
    else:
        raise RoiError(f"is a {sop_class_name(ds)}, not a Grayscale Softcopy Presentation State "
                       "or a Segmentation; regions of interest are read only from those",
                       reason="sop_class", source=name)
    try:
        for item in items:
            problem = _check_against_images(item, by_uid, name) if isinstance(item, Roi) else None
            yield problem or item
    except RoiError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        # A required attribute missing or of the wrong form somewhere we did not
        # check one by one: still a sentence for the log, not a traceback.
        raise RoiError(f"is malformed ({type(exc).__name__}: {exc})", reason="malformed",
                       source=name) from exc


def _source_name(source, ds: Dataset) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"SOP instance {ds.get('SOPInstanceUID', '(no SOP Instance UID)')}"


def _check_against_images(roi: Roi, images: dict[str, ImageGeometry], name: str) -> RoiError | None:
    if not images:
        return None
    geometry = images.get(roi.referenced_sop_instance_uid)
    if geometry is None:
        return RoiError(f"ROI {roi.roi_id} ({roi.label}) references image "
                        f"{roi.referenced_sop_instance_uid}, which is not among the {len(images)} "
                        "image(s) given", reason="unknown_image", source=name)
    if roi.mask is not None and roi.mask.shape != (geometry.rows, geometry.columns):
        return RoiError(f"ROI {roi.roi_id} ({roi.label}): "
                        + size_mismatch_sentence(roi.mask.shape, geometry),
                        reason="size_mismatch", source=name)
    return None
