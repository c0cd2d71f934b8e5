"""Breast mask (docs/method.md §3.2): threshold, largest bright region, 3.15 mm erosion, at ~0.5 mm."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from analysis.dicom_input import load_image
from analysis.segmentation import BreastMaskParams, breast_mask, working_factors
from dicom_factory import rewrap_as_mg

SIZE_MM = (80.0, 60.0)


def synthetic_breast(spacing: float, background: float = 0.02, seed: int = 0, strip: bool = False):
    """A half-ellipse breast against the left border (the chest wall), darker towards the skin,
    with texture and noise; returns (image, true breast mask)."""
    rng = np.random.default_rng(seed)
    rows, cols = (int(round(s / spacing)) for s in SIZE_MM)
    yy, xx = np.mgrid[:rows, :cols] * spacing
    # ellipse centred on the left border: 35 mm up and down, 45 mm towards the nipple
    r = np.sqrt(((yy - 40.0) / 35.0) ** 2 + (xx / 45.0) ** 2)
    breast = r <= 1.0
    texture = ndimage.gaussian_filter(rng.standard_normal((rows, cols)), 2.0 / spacing) * (2.0 / spacing)
    tissue = 0.45 - 0.2 * r ** 4 + 0.05 * texture  # thinner, darker towards the skin line
    image = np.where(breast, tissue, background) + 0.01 * rng.standard_normal((rows, cols))
    if strip:  # the bright unexposed edge of a digitised film, along the bottom and right borders
        width = int(round(2.0 / spacing))
        image[-width:, :] = 0.85
        image[:, -width:] = 0.85
    return np.clip(image, 0, 1).astype(np.float32), breast


def expected_mask(breast: np.ndarray, spacing: float, erosion_mm: float = 3.15) -> np.ndarray:
    """The exact erosion by a disk, the image border counting as breast."""
    return ndimage.distance_transform_edt(breast, sampling=spacing) > erosion_mm


def iou(a, b) -> float:
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("spacing, factor", [(0.05, 10), (0.07, 7), (0.094, 5), (0.2, 2), (1.0, 1)])
def test_mask_is_computed_at_about_half_a_millimetre(spacing, factor):
    assert working_factors(spacing) == (factor, factor)
    assert working_factors((0.05, 0.1)) == (10, 5)


@pytest.mark.parametrize("spacing", [0.05, 0.07, 0.094])
def test_synthetic_breast_is_found_and_eroded_by_3_15_mm(spacing):
    image, breast = synthetic_breast(spacing)
    mask = breast_mask(image, spacing)
    assert mask.dtype == bool and mask.shape == image.shape
    want = expected_mask(breast, spacing)
    assert iou(mask, want) > 0.97
    # the edge: never closer than 3.15 mm (- half a 0.5 mm working pixel) to the skin line
    depth = ndimage.distance_transform_edt(breast, sampling=spacing)
    assert depth[mask].min() >= 3.15 - 0.3
    assert mask[depth > 3.15 + 0.5].all()
    assert ndimage.label(mask)[1] == 1
    assert mask[:, 0].sum() > 0.8 * breast[:, 0].sum(), "the chest-wall border must not be eroded"


def test_same_breast_in_mm_gives_the_same_mask_area_at_any_spacing():
    areas = {}
    for spacing in (0.05, 0.07, 0.094):
        image, _ = synthetic_breast(spacing)
        areas[spacing] = breast_mask(image, spacing).sum() * spacing ** 2
    assert max(areas.values()) / min(areas.values()) < 1.02, areas


def test_film_background_and_bright_border_strips_are_left_out():
    """Digitised film: the background is ~0.13, not 0, and the unexposed film edge is bright
    (NEMA's MG1 has both). The plain 0.2 x Otsu threshold would call the whole film breast."""
    spacing = 0.07
    image, breast = synthetic_breast(spacing, background=0.13, strip=True)
    mask = breast_mask(image, spacing)
    assert iou(mask, expected_mask(breast, spacing)) > 0.95
    assert ndimage.label(mask)[1] == 1
    width = int(round(2.0 / spacing))
    assert not mask[-width:, :].any() and not mask[:, -width:].any()
    # HDoGReg's exact threshold is still available
    plain = breast_mask(image, spacing, BreastMaskParams(background_offset=False))
    assert plain.mean() > 0.9  # ... and shows why it is not the default


@pytest.mark.parametrize("image", [np.zeros((300, 200), np.float32), np.full((300, 200), 0.6, np.float32),
                                   np.ones((300, 200), np.float32), np.zeros((3, 3), np.float32)])
def test_images_without_contrast_give_an_empty_mask(image):
    mask = breast_mask(image, 0.07)
    assert mask.shape == image.shape and not mask.any()


def test_a_small_bright_spot_on_black_is_not_a_breast():
    image = np.zeros((300, 200), np.float32)
    image[100:110, 100:110] = 1.0  # 0.7 mm: eroded away
    assert not breast_mask(image, 0.07).any()


def test_bad_input_is_a_clear_value_error():
    image, _ = synthetic_breast(0.1)
    image[5, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite.*row 5, column 7"):
        breast_mask(image, 0.1)
    with pytest.raises(ValueError, match="spacing"):
        breast_mask(np.zeros((50, 50)), 0)
    with pytest.raises(ValueError, match="2D image"):
        breast_mask(np.zeros((4, 50, 50)), 0.1)
    with pytest.raises(ValueError, match="too small"):
        breast_mask(np.zeros((1, 50)), 0.1)


def test_real_mammogram_mask(interop):
    image = load_image(rewrap_as_mg(pydicom.dcmread(interop / "mg" / "MG1_J2KI.dcm")))
    spacing = image.pixel_spacing_mm
    mask = breast_mask(image.pixels, spacing)
    assert mask.shape == image.shape
    assert 0.35 < mask.mean() < 0.65  # an MLO view: about half the film
    assert ndimage.label(mask)[1] == 1
    # the "L MLO" marker and the film background (right half, top) are left out
    assert not mask[:600, 2200:].any()
    assert not mask[1500:3000, 2400:].any()
    # the chest wall (left border) is kept; the skin line is eroded by 3.15 mm: compare with the
    # same mask without erosion (which keeps the bright film edges), on a 0.25 mm grid
    plain = breast_mask(image.pixels, spacing, BreastMaskParams(erosion_mm=0))
    step = 5
    depth = ndimage.distance_transform_edt(plain[::step, ::step], sampling=spacing[0] * step)
    eroded = mask[::step, ::step]
    assert plain.sum() > mask.sum()
    assert depth[eroded].min() >= 3.15 - 0.5
    deep = depth > 3.15 + 0.75
    body = (slice(600 // step, 4400 // step), slice(0, 2200 // step))  # away from the film's edges
    assert eroded[body][deep[body]].mean() > 0.99
    assert mask[:, 0].mean() > 0.8
