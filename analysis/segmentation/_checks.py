"""Input checks shared by the segmentation functions: clear ValueErrors, never a crash later on."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def spacing_pair(spacing_mm: float | Sequence[float] | None) -> tuple[float, float]:
    """(row spacing, column spacing) in mm from a number or a pair; ValueError when unusable."""
    if spacing_mm is None:
        raise ValueError("pixel spacing (mm) is required: every length parameter is defined in mm")
    if np.isscalar(spacing_mm):
        values = (spacing_mm, spacing_mm)
    else:
        values = tuple(spacing_mm)
        if len(values) != 2:
            raise ValueError(f"pixel spacing must be one number or a (row, column) pair in mm, got {spacing_mm!r}")
    try:
        row, col = float(values[0]), float(values[1])
    except (TypeError, ValueError):
        raise ValueError(f"pixel spacing must be numbers in mm, got {spacing_mm!r}") from None
    if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
        raise ValueError(f"pixel spacing must be positive and finite (mm), got {spacing_mm!r}")
    return row, col


def image_array(pixels) -> np.ndarray:
    """The pixels as a 2D array (not copied when already an array); ValueError when not an image."""
    array = np.asarray(pixels)
    if array.ndim != 2:
        raise ValueError(f"pixels must be a 2D image, got an array of shape {array.shape}")
    if array.shape[0] < 3 or array.shape[1] < 3:
        raise ValueError(f"image of shape {array.shape} is too small: at least 3 x 3 pixels are needed")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == bool):
        raise ValueError(f"pixels must be numbers, got dtype {array.dtype}")
    return array


def require_finite(array: np.ndarray, what: str = "pixels", offset: tuple[int, int] = (0, 0)) -> None:
    """ValueError naming how many values are NaN/inf and where the first one is
    (``offset``: where ``array`` starts in the image, so the position is the image's)."""
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)
            raise ValueError(f"{what} contain {len(bad)} NaN or infinite value(s) (first at row {bad[0][0] + offset[0]}, "
                             f"column {bad[0][1] + offset[1]}); replace them (e.g. with 0) before segmentation")
