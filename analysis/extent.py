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
    rows = np.flatnonzero(array.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(array[rows[0]:rows[-1] + 1].any(axis=0))
    return (slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, array.shape[0])),
            slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, array.shape[1])))


def label_boxes(labels: np.ndarray) -> list[tuple[slice, slice] | None]:
    """``scipy.ndimage.find_objects(labels)`` (item k-1 = the box of label k, None when absent),
    searched on the labels' bounding box only and given in whole-image coordinates."""
    extent = nonzero_extent(labels)
    if extent is None:
        return []
    r0, c0 = extent[0].start, extent[1].start
    return [None if sl is None else
            (slice(sl[0].start + r0, sl[0].stop + r0), slice(sl[1].start + c0, sl[1].stop + c0))
            for sl in ndimage.find_objects(labels[extent])]
