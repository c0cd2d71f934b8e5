"""Bounding boxes of the non-zero part of an array.

Calcifications and ROIs cover a small part of a full-field mammogram (8-14 Mpx). Whole-image
operations on label images (morphology, ``find_objects``, histograms) cost 20-100 ms each and
run several times per ROI; working on this box instead keeps them proportional to what is there.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def nonzero_extent(array: np.ndarray, margin: int = 0) -> tuple[slice, slice] | None:
    """The bounding box of the non-zero part of ``array`` grown by ``margin`` (None if all zero)."""
    if array.size == 0:
        return None
    flags = _nonzero_flags(array)
    rows = np.flatnonzero(flags.max(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(flags[rows[0]:rows[-1] + 1].max(axis=0))
    return (slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, array.shape[0])),
            slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, array.shape[1])))


def _nonzero_flags(array: np.ndarray) -> np.ndarray:
    """``array`` seen as unsigned integers of the same width: non-zero exactly where ``array``
    is, for integer and bool arrays, without a copy. ``max`` over such a view is a vectorised
    pass; ``any`` on an int32 image converts every element to bool first (2.2 against 1.2 ms
    for 8.5 Mpx here, and this runs ~30 times per study). Other dtypes (float: -0.0 has bits
    set) are compared with 0."""
    if array.dtype == bool:
        return array.view(np.uint8)
    if array.dtype.kind in "iu":
        return array.view(f"u{array.dtype.itemsize}")  # non-zero whatever the byte order
    return array != 0


def label_boxes(labels: np.ndarray, extent=False) -> list[tuple[slice, slice] | None]:
    """``scipy.ndimage.find_objects(labels)`` (item k-1 = the box of label k, None when absent),
    searched on the labels' bounding box only and given in whole-image coordinates.
    ``extent``: the labels' :func:`nonzero_extent` when the caller has it (saves a pass)."""
    extent = nonzero_extent(labels) if extent is False else extent
    if extent is None:
        return []
    r0, c0 = extent[0].start, extent[1].start
    return [None if sl is None else
            (slice(sl[0].start + r0, sl[0].stop + r0), slice(sl[1].start + c0, sl[1].stop + c0))
            for sl in ndimage.find_objects(labels[extent])]
