"""analysis.extent.nonzero_extent: the bounding box of the non-zero pixels, for every integer
and bool dtype (it reads them as unsigned integers of the same width) and for floats."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.extent import label_boxes, nonzero_extent


def _expected(array, margin=0):
    rows, cols = np.nonzero(array)
    if rows.size == 0:
        return None
    return (slice(max(int(rows.min()) - margin, 0), min(int(rows.max()) + 1 + margin, array.shape[0])),
            slice(max(int(cols.min()) - margin, 0), min(int(cols.max()) + 1 + margin, array.shape[1])))


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int8, np.int16, np.uint16, np.int32, ">i4",
                                   np.int64, np.float32])
def test_nonzero_extent_matches_numpy_nonzero(dtype):
    rng = np.random.default_rng(7)
    signed = np.dtype(dtype).kind in "if"
    for _ in range(60):
        array = np.zeros((int(rng.integers(1, 30)), int(rng.integers(1, 30))), dtype)
        for _ in range(int(rng.integers(0, 4))):
            array[rng.integers(array.shape[0]), rng.integers(array.shape[1])] = -1 if signed else 1
        margin = int(rng.integers(0, 3))
        assert nonzero_extent(array, margin) == _expected(array, margin)


def test_nonzero_extent_of_a_strided_view():
    array = np.zeros((40, 40), np.int32)
    array[21, 5] = 7
    assert nonzero_extent(array[::2, ::3]) == _expected(array[::2, ::3])  # a view, not a copy
    assert nonzero_extent(array[::2, 1::3]) is None
    assert nonzero_extent(np.zeros((5, 0), np.int32)) is None  # no pixels: nothing non-zero
    assert nonzero_extent(np.zeros((0, 5), bool)) is None


def test_label_boxes_are_find_objects_in_image_coordinates():
    labels = np.zeros((50, 60), np.int32)
    labels[10:12, 40:45] = 1
    labels[30, 7] = 3
    assert label_boxes(labels) == [(slice(10, 12), slice(40, 45)), None, (slice(30, 31), slice(7, 8))]
    assert label_boxes(labels, nonzero_extent(labels)) == label_boxes(labels)  # a known extent
    assert label_boxes(np.zeros((4, 4), np.int32), None) == []
