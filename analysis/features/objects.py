"""Calcification objects of one ROI: which labels belong to it, and per-object crops.

Conventions (used by every feature family):

- ``calc_labels``: int label image of the *whole* image (0 = background); each
  non-zero value is one calcification (the segmentation passes its own labels:
  8-connected objects, docs/method.md §3.5).  A boolean mask passed instead is
  labelled with 4-connectivity (docs/method.md §4.1); a list of boolean object
  masks is turned into labels 1..n in list order.
- An object belongs to the ROI when its centroid (rounded to the nearest pixel)
  lies inside ``roi_mask``; the whole object is kept (docs/method.md §4.1).
  ``roi_mask=None`` keeps every object.
- Coordinates in mm are pixel-centre indices times the spacing:
  y = row * row_spacing (increasing downwards), x = column * column_spacing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from analysis.extent import label_boxes

CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def as_label_image(calc_labels, shape: tuple[int, int]) -> np.ndarray:
    """Normalise the accepted calcification inputs to an int label image."""
    if isinstance(calc_labels, (list, tuple)):
        out = np.zeros(shape, dtype=np.int32)
        for i, m in enumerate(calc_labels, start=1):
            m = np.asarray(m, dtype=bool)
            if m.shape != tuple(shape):
                raise ValueError(f"object mask {i} has shape {m.shape}, image is {tuple(shape)}")
            if np.any(out[m]):
                raise ValueError(f"object mask {i} overlaps an earlier object")
            out[m] = i
        return out
    arr = np.asarray(calc_labels)
    if arr.shape != tuple(shape):
        raise ValueError(f"calcification labels have shape {arr.shape}, image is {tuple(shape)}")
    if arr.dtype == bool:
        return ndimage.label(arr, structure=CROSS)[0]
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"calcification labels must be integer or boolean, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError("calcification labels must be >= 0")
    return arr


@dataclass(frozen=True, eq=False)
class CalcObject:
    """One calcification: its label, bounding box and pixel statistics."""

    label: int
    bbox: tuple[slice, slice]  # tight bounding box in image coordinates
    n_pixels: int
    centroid_px: tuple[float, float]  # (row, col)


def find_objects(labels: np.ndarray) -> list[CalcObject]:
    """All objects of a label image, sorted by label."""
    objs = []
    for idx, sl in enumerate(label_boxes(labels), start=1):  # runs once per ROI: boxes only
        if sl is None:
            continue
        rr, cc = np.nonzero(labels[sl] == idx)
        objs.append(CalcObject(idx, sl, int(rr.size),
                               (float(rr.mean() + sl[0].start), float(cc.mean() + sl[1].start))))
    return objs


def select_roi_objects(labels: np.ndarray, roi_mask: np.ndarray | None) -> list[CalcObject]:
    """Objects whose centroid (nearest pixel) lies inside the ROI."""
    objs = find_objects(labels)
    if roi_mask is None:
        return objs
    roi = np.asarray(roi_mask, dtype=bool)
    if roi.shape != labels.shape:
        raise ValueError(f"ROI mask has shape {roi.shape}, image is {labels.shape}")
    h, w = roi.shape
    keep = []
    for o in objs:
        r = min(max(int(np.floor(o.centroid_px[0] + 0.5)), 0), h - 1)
        c = min(max(int(np.floor(o.centroid_px[1] + 0.5)), 0), w - 1)
        if roi[r, c]:
            keep.append(o)
    return keep


def padded_box(bbox: tuple[slice, slice], pad: tuple[int, int], shape) -> tuple[slice, slice]:
    return (slice(max(bbox[0].start - pad[0], 0), min(bbox[0].stop + pad[0], shape[0])),
            slice(max(bbox[1].start - pad[1], 0), min(bbox[1].stop + pad[1], shape[1])))


def stored_values(pixels: np.ndarray, box, bits_stored: int) -> np.ndarray:
    """Crop of the image on the stored-value scale: rint(pixels * (2**bits - 1)), float32."""
    return np.rint(np.asarray(pixels[box], dtype=np.float64) * float(2 ** int(bits_stored) - 1)
                   ).astype(np.float32)


def ring_mask(obj_mask: np.ndarray, all_calc: np.ndarray, spacing_mm, width_mm: float) -> np.ndarray:
    """Pixels within ``width_mm`` (centre-to-centre, physical distance) of the object,
    minus every calcification pixel (of any object, in or out of the ROI)."""
    dist = ndimage.distance_transform_edt(~obj_mask, sampling=spacing_mm)
    return (dist > 0) & (dist <= width_mm * (1 + 1e-9)) & ~all_calc


def boundary_pixels(obj_mask: np.ndarray) -> np.ndarray:
    """Inner boundary (pixels with a 4-neighbour outside the object), as (row, col) indices.

    The pixel of an object nearest to any outside point is always a boundary pixel
    in this sense, so minimum distances between objects need only these."""
    inner = ndimage.binary_erosion(obj_mask, structure=CROSS, border_value=0)
    return np.argwhere(obj_mask & ~inner)
