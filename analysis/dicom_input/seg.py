"""ROIs from a DICOM SEG (Segmentation): segments -> :class:`Roi` with a mask.

Read with pydicom directly (highdicom refuses the pixels of some real files by
default, e.g. dcmqi's, which omit Spatial Locations Preserved; here an absent
value counts as YES, while NO and REORIENTED_ONLY are refused). One :class:`Roi` per
(segment, referenced image): the union of that segment's frames that reference
the image. Frame -> image from the per-frame Derivation Image Sequence, else
the shared one, else the Referenced Series Sequence when it lists exactly one
instance; a frame that names several source images counts for each. A segment
with a frame that cannot be placed gives one error and no ROI (a partial mask
would be silently wrong). Referenced Frame Number is ignored (mammograms are
single-frame).
BINARY frames: value 1; FRACTIONAL: value >= 0.5 x Maximum Fractional Value;
LABELMAP: value == segment number. Empty masks are skipped. ``points_px`` is the
outer contour of the largest 8-connected component (``skimage.measure.find_contours``
at level 0.5: it runs half-way between inside and outside pixel centres), for
display; ``area_px`` is the pixel count of the whole mask. ``roi_id``:
``"seg<N>"``, with ``"-img<K>"`` when the segment covers several images.
Coordinates: see :mod:`.roi_types`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset
from skimage import measure

from .errors import RoiError
from .roi_geometry import shoelace_area
from .roi_types import Roi


def seg_rois(ds: Dataset, name: str) -> Iterator[Roi | RoiError]:
    """One ROI per (segment, referenced image) with a non-empty mask."""
    labels = {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or f"segment {item.SegmentNumber}")
              for item in ds.get("SegmentSequence") or [] if "SegmentNumber" in item}
    if not labels:
        raise RoiError("has no Segment Sequence, so it defines no segment", reason="no_roi", source=name)
    masks: dict[tuple[int, str], np.ndarray] = {}
    problems: dict[int, RoiError] = {}
    for segment, image_uids, mask, error in _seg_frames(ds, labels, name):
        if error is not None:
            problems.setdefault(segment, error)
            continue
        for uid in image_uids:
            key = (segment, uid)
            masks[key] = masks[key] | mask if key in masks else mask
    yield from problems.values()
    count = 0
    for segment in sorted(labels):
        if segment in problems:
            continue
        images = [uid for (number, uid), mask in masks.items() if number == segment and mask.any()]
        for i_index, uid in enumerate(images, start=1):
            mask = masks[(segment, uid)]
            count += 1
            yield Roi(
                source_sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                referenced_sop_instance_uid=uid,
                kind="seg",
                label=labels[segment],
                points_px=_outer_contour(mask),
                roi_id=f"seg{segment}" + (f"-img{i_index}" if len(images) > 1 else ""),
                segment_number=segment,
                mask=mask,
            )
    if count == 0 and not problems:
        raise RoiError(f"all {len(labels)} segment(s) are empty, so it marks no region",
                       reason="no_roi", source=name)


def _seg_frames(ds: Dataset, labels: dict[int, str], name: str):
    """Yield (segment number, referenced image UIDs, bool mask, error or None) per frame and segment."""
    seg_type = str(ds.get("SegmentationType", "") or "").upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise RoiError(f"Segmentation Type {seg_type or '(missing)'} is not supported; "
                       "expected BINARY, FRACTIONAL or LABELMAP", reason="unsupported", source=name)
    frames = _seg_pixels(ds, name)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared_items = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_items[0] if shared_items else Dataset()
    series_fallback = _single_series_instance(ds)
    for f_index, frame in enumerate(frames):
        group = per_frame[f_index] if f_index < len(per_frame) else Dataset()
        uids, preserved = _frame_references(group, shared, series_fallback)
        for segment, mask in _frame_masks(seg_type, ds, frame, group, shared, labels):
            if segment is None:
                yield segment, [], mask, RoiError(
                    f"frame {f_index + 1} names no segment (no Segment Identification Sequence) and "
                    f"the segmentation defines {len(labels)}", reason="malformed", source=name)
            elif segment not in labels:
                yield segment, [], mask, RoiError(
                    f"frame {f_index + 1} refers to segment {segment}, which the Segment Sequence "
                    "does not define", reason="malformed", source=name)
            elif not uids:
                yield segment, [], mask, RoiError(
                    f"segment {segment} ({labels[segment]}): frame {f_index + 1} names no source image "
                    "(no Derivation Image Sequence, and the Referenced Series Sequence does not list "
                    "exactly one instance)", reason="no_reference", source=name)
            elif not preserved:
                yield segment, [], mask, RoiError(
                    f"segment {segment} ({labels[segment]}): frame {f_index + 1} says Spatial Locations "
                    "Preserved is not YES, so its pixels do not line up with the image",
                    reason="unsupported", source=name)
            else:
                yield segment, uids, mask, None


def _seg_pixels(ds: Dataset, name: str) -> np.ndarray:
    """All frames as an array (frames, rows, columns) of stored values."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        raise RoiError(f"segmentation pixel data cannot be decoded ({type(exc).__name__}: {exc})",
                       reason="decode", source=name) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if pixels.size != frames * rows * columns:
        raise RoiError(f"pixel data holds {pixels.size} values, not {frames} frames of "
                       f"{columns}x{rows}", reason="malformed", source=name)
    return pixels.reshape(frames, rows, columns)


def _frame_masks(seg_type: str, ds: Dataset, frame: np.ndarray, group: Dataset, shared: Dataset,
                 labels: dict[int, str]) -> list[tuple[int | None, np.ndarray]]:
    """(segment number, bool mask) carried by one frame."""
    if seg_type == "LABELMAP":  # one frame holds every segment, by value
        return [(segment, frame == segment) for segment in labels]
    if seg_type == "FRACTIONAL":
        maximum = float(ds.get("MaximumFractionalValue", 255) or 255)
        mask = frame >= 0.5 * maximum
    else:
        mask = frame > 0
    segment = _frame_segment(group, shared, labels)
    return [(segment, mask)]


def _frame_segment(group: Dataset, shared: Dataset, labels: dict[int, str]) -> int | None:
    """The segment a BINARY/FRACTIONAL frame belongs to, or None when it does not say."""
    for item in (group, shared):
        identification = item.get("SegmentIdentificationSequence")
        if identification and identification[0].get("ReferencedSegmentNumber") is not None:
            return int(identification[0].ReferencedSegmentNumber)
    # Without an identification a frame can only belong to the SEG's single segment.
    return next(iter(labels)) if len(labels) == 1 else None


def _frame_references(group: Dataset, shared: Dataset,
                      series_fallback: list[str]) -> tuple[list[str], bool]:
    """(source image UIDs, spatial locations preserved) of one frame."""
    for item in (group, shared):
        sources = [source for derivation in item.get("DerivationImageSequence") or []
                   for source in derivation.get("SourceImageSequence") or []
                   if source.get("ReferencedSOPInstanceUID")]
        if sources:
            # Absent (dcmqi omits it) counts as preserved; NO and REORIENTED_ONLY do not.
            preserved = all(str(source.get("SpatialLocationsPreserved", "YES") or "YES").upper() == "YES"
                            for source in sources)
            uids = [str(source.ReferencedSOPInstanceUID) for source in sources]
            return list(dict.fromkeys(uids)), preserved
    return series_fallback, True


def _single_series_instance(ds: Dataset) -> list[str]:
    instances = [str(item.ReferencedSOPInstanceUID)
                 for series in ds.get("ReferencedSeriesSequence") or []
                 for item in series.get("ReferencedInstanceSequence") or []
                 if item.get("ReferencedSOPInstanceUID")]
    return instances if len(set(instances)) == 1 else []


def _outer_contour(mask: np.ndarray) -> np.ndarray:
    """Outer contour (column, row), DICOM PIXEL convention, of the largest 8-connected component."""
    components = measure.label(mask, connectivity=2)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    # Pad so a component touching the border still yields a closed contour.
    contours = measure.find_contours(np.pad(largest, 1).astype(float), 0.5, fully_connected="high")
    outer = max(contours, key=lambda contour: abs(shoelace_area(contour)))
    if len(outer) > 1 and np.array_equal(outer[0], outer[-1]):
        outer = outer[:-1]
    # find_contours: (row, col) with pixel centres at integers, shifted by the pad of 1;
    # DICOM PIXEL puts the centre of pixel (r, c) at (c + 0.5, r + 0.5).
    return np.column_stack([outer[:, 1] - 0.5, outer[:, 0] - 0.5])
