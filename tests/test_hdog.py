"""HDoG candidate detection (docs/method.md §3.3): scale, physical units, lines, bad input, exact cropping."""
from __future__ import annotations

import math
from math import log

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from skimage.feature import peak_local_max

from analysis.dicom_input import load_image
from analysis.segmentation import CANDIDATE_DTYPE, Candidates, HDoGParams, hdog_candidates
from analysis.segmentation.hdog import _gradient
from dicom_factory import rewrap_as_mg

PARAMS = HDoGParams()
# A Gaussian blob of sigma b gives its strongest scale-normalised DoG(s, 1.6 s) response at
# s = b / EFFECTIVE: the DoG pair (s, k s) approximates the LoG at s sqrt((k^2 - 1) / (2 ln k)).
EFFECTIVE = math.sqrt((1.6 ** 2 - 1) / (2 * math.log(1.6)))


def everywhere(image):
    return np.ones(image.shape, bool)


def blob_image(size_mm: float, spacing: float, sigma_mm: float, amplitude=0.2, background=0.3,
               centre_mm=None) -> np.ndarray:
    n = int(round(size_mm / spacing))
    centre = (size_mm / 2, size_mm / 2) if centre_mm is None else centre_mm
    yy, xx = np.mgrid[:n, :n] * spacing
    r2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    return (background + amplitude * np.exp(-r2 / (2 * sigma_mm ** 2))).astype(np.float32)


def textured_image(shape=(400, 400), seed=0) -> np.ndarray:
    """Smooth background, noise, blobs of every scale and a long line: many candidates."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    image = 0.35 + 0.1 * ndimage.gaussian_filter(rng.standard_normal(shape), 25) * 25
    image += 0.008 * rng.standard_normal(shape)
    for _ in range(60):
        r, c = rng.uniform(0, rows), rng.uniform(0, cols)
        s = rng.uniform(1.0, 5.0)
        r0, r1, c0, c1 = max(int(r - 6 * s), 0), int(r + 6 * s) + 1, max(int(c - 6 * s), 0), int(c + 6 * s) + 1
        yy, xx = np.mgrid[r0:min(r1, rows), c0:min(c1, cols)]
        image[r0:r1, c0:c1] += rng.uniform(0.03, 0.25) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s * s))
    # a long bright line across most of the image (a vessel wall, a ridge: one candidate)
    yy, xx = np.mgrid[:min(rows, 400), :cols]
    image[:yy.shape[0]] += 0.12 * np.exp(-((yy - 0.3 * xx - 60) ** 2) / (2 * 1.5 ** 2)) * (xx > 20) * (xx < cols - 20)
    return np.clip(image, 0, 1).astype(np.float32)


def reference_hdog(image, min_sigma, max_sigma, sigma_ratio=1.6, threshold=0.006, hessian_thr=1.4):
    """HDoGReg's blob_detector_hdog + hessian_criterion, written out plainly (whole image, every
    level, np.gradient), in the image's dtype. Returns the candidate mask and the peaks."""
    k = int(log(float(max_sigma) / min_sigma, sigma_ratio)) + 1
    sigma_list = np.array([min_sigma * (sigma_ratio ** i) for i in range(k + 1)])
    gaussians = [ndimage.gaussian_filter(image, s) for s in sigma_list]
    dogs = [(gaussians[i] - gaussians[i + 1]) * sigma_list[i] / (sigma_list[i + 1] - sigma_list[i])
            for i in range(k)]
    peaks = peak_local_max(np.stack(dogs, axis=-1), threshold_abs=threshold, footprint=np.ones((3, 3, 3)),
                           threshold_rel=0.0, exclude_border=False)
    mask = np.zeros(image.shape, bool)
    for i in range(k):
        g = np.gradient(dogs[i])
        h00, h01 = np.gradient(g[0])
        h10, h11 = np.gradient(g[1])
        det = h00 * h11 - h10 * h01
        trace = h00 + h11
        with np.errstate(divide="ignore", invalid="ignore"):
            other = np.abs(det) / np.power(trace + 1e-20, 2)
        blob = ((det > 0) & (trace < 0)) | ((other < hessian_thr) & (trace < 0))
        labels, _ = ndimage.label(blob)
        here = peaks[peaks[:, 2] == i]
        ids = labels[here[:, 0], here[:, 1]]
        mask |= np.isin(labels, ids[ids > 0])
    return mask, peaks


def expected_in_region(whole: Candidates, region: np.ndarray) -> np.ndarray:
    """Labels of the whole-image candidates with a peak inside ``region``."""
    p = whole.peaks
    return np.unique(p["label"][region[p["row"], p["col"]]])


def assert_same_as_whole(roi: Candidates, whole: Candidates, region: np.ndarray):
    ids = expected_in_region(whole, region)
    np.testing.assert_array_equal(roi.mask, np.isin(whole.labels, ids))
    assert len(roi) == len(ids)
    # same candidates, same numbers (labels are renumbered, in the same raster order)
    want = whole.table[ids - 1]
    got = roi.table
    for name in CANDIDATE_DTYPE.names:
        if name != "label":
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    whole_peaks = whole.peaks[np.isin(whole.peaks["label"], ids)]
    key = lambda p: np.lexsort((p["level"], p["col"], p["row"]))  # noqa: E731
    a, b = roi.peaks[key(roi.peaks)], whole_peaks[key(whole_peaks)]
    for name in ("row", "col", "level", "dog"):
        np.testing.assert_array_equal(a[name], b[name])


# --------------------------------------------------------------------------- parameters

def test_parameters_are_in_mm_and_match_hdogreg_at_0_07():
    pp = PARAMS.to_pixels(0.07)
    assert PARAMS.n_levels == 3
    np.testing.assert_allclose([s[0] for s in pp.sigmas], [1.18 * 1.6 ** i for i in range(4)], rtol=1e-12)
    assert pp.radius == (19, 19) and pp.margin == (21, 21)  # int(4 * 4.83 + 0.5) + 2
    pp5 = PARAMS.to_pixels(0.05)
    assert pp5.margin == (29, 29)
    assert PARAMS.to_pixels((0.05, 0.1)).sigmas[0] == pytest.approx((1.652, 0.826))
    with pytest.raises(ValueError):
        HDoGParams(sigma_ratio=1.0)
    with pytest.raises(ValueError):
        HDoGParams(min_sigma_mm=0.3, max_sigma_mm=0.1)


def test_gradient_matches_numpy_bit_for_bit():
    rng = np.random.default_rng(1)
    for shape in [(2, 5), (7, 3), (64, 50)]:
        f = rng.standard_normal(shape).astype(np.float32)
        for axis in (0, 1):
            np.testing.assert_array_equal(_gradient(f, axis), np.gradient(f, axis=axis))


# --------------------------------------------------------------------------- the method

@pytest.mark.parametrize("level", [0, 1, 2])
def test_gaussian_blob_is_found_at_its_scale(level):
    sigma_mm = PARAMS.sigmas_mm[level] * EFFECTIVE
    image = blob_image(6.0, 0.07, sigma_mm)
    found = hdog_candidates(image, 0.07, everywhere(image))
    assert len(found) == 1
    row = found.table[0]
    assert row["level"] == level
    assert row["sigma_mm"] == pytest.approx(PARAMS.sigmas_mm[level], rel=1e-6)
    centre = (image.shape[0] - 1) / 2
    assert abs(row["row"] - centre) < 1 and abs(row["col"] - centre) < 1
    assert row["dog"] > 0.05  # half the amplitude x a DoG/LoG factor


@pytest.mark.parametrize("level", [1, 2])
def test_same_blob_in_mm_gives_the_same_scale_at_any_spacing(level):
    sigma_mm = PARAMS.sigmas_mm[level] * EFFECTIVE
    results = {}
    for spacing in (0.05, 0.07, 0.094):
        image = blob_image(6.0, spacing, sigma_mm, centre_mm=(2.9, 3.1))
        found = hdog_candidates(image, spacing, everywhere(image))
        assert len(found) == 1, spacing
        row = found.table[0]
        results[spacing] = (int(row["level"]), float(row["sigma_mm"]), row["row"] * spacing,
                            row["col"] * spacing, row["area"] * spacing ** 2)
    levels = {r[0] for r in results.values()}
    assert levels == {level}
    assert len({r[1] for r in results.values()}) == 1
    reference = results[0.07]
    for spacing, (_, _, r_mm, c_mm, area_mm2) in results.items():
        assert abs(r_mm - 2.9) <= spacing and abs(c_mm - 3.1) <= spacing
        # areas agree within pixel quantisation of the component's edge
        assert area_mm2 == pytest.approx(reference[4], rel=0.35), spacing


@pytest.mark.parametrize("angle", [0, 30, 90])
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_a_bright_line_is_one_candidate_not_a_row_of_dots(angle, noise):
    """HDoG's Hessian rule accepts ridges (one eigenvalue ~0: |det| / tr^2 ~ 0), so every pixel
    of a line is blob-like at every level and they form one component; the peaks along it
    (a plateau, or noise maxima) all keep that same component. A line is one elongated candidate;
    the CNN stage, not HDoG, decides whether it is a calcification."""
    spacing, n = 0.07, 300
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    theta = math.radians(angle)
    along = (xx - 150) * math.cos(theta) + (yy - 150) * math.sin(theta)
    across = -(xx - 150) * math.sin(theta) + (yy - 150) * math.cos(theta)
    profile = np.exp(-across ** 2 / (2 * (0.15 / spacing) ** 2)) * (np.abs(along) <= 100)
    rng = np.random.default_rng(angle)
    image = (0.3 + 0.15 * profile + noise * rng.standard_normal((n, n))).astype(np.float32)
    found = hdog_candidates(image, spacing, everywhere(image))
    on_line = (np.abs(across) <= 1.5) & (np.abs(along) <= 100)
    ids = np.unique(found.labels[on_line])
    assert list(ids[ids > 0]) == [ids.max()] and ids.min() > 0, "the line is split or has gaps"
    candidate = found.table[ids.max() - 1]
    assert candidate["area"] >= on_line.sum()
    assert candidate["n_peaks"] >= 1


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_empty_and_constant_images_give_no_candidates(value):
    image = np.full((200, 150), value, np.float32)
    for region in (None, everywhere(image)):
        found = hdog_candidates(image, 0.07, region)
        assert len(found) == 0
        assert found.labels.shape == image.shape and found.labels.dtype == np.int32
        assert not found.labels.any()
        assert found.table.dtype == CANDIDATE_DTYPE


def test_matches_the_straightforward_hdogreg_implementation_exactly():
    """Same arithmetic in float32: the crops, the blocked Hessian and the sparse peak test change
    nothing. (In float64, as HDoGReg runs, see bench/bench_hdog.py for the agreement.)"""
    image = textured_image((300, 260), seed=3)
    found = hdog_candidates(image, 0.07, everywhere(image))
    mask, peaks = reference_hdog(image, 1.18, 3.1)
    np.testing.assert_array_equal(found.mask, mask)
    assert len(found) > 20
    # every reference peak on a kept component is one of ours
    levels_labels = {(int(r), int(c), int(l)) for r, c, l in peaks}
    ours = {(int(p["row"]), int(p["col"]), int(p["level"])) for p in found.peaks}
    assert ours <= levels_labels
    assert len(ours) >= 0.8 * len(levels_labels)


def test_threads_give_the_same_result(monkeypatch):
    import analysis.segmentation.hdog as hdog

    image = textured_image((300, 280), seed=7)
    single = hdog_candidates(image, 0.07, everywhere(image), threads=1)
    monkeypatch.setattr(hdog, "_THREAD_MIN_PIXELS", 0)  # use the pool on this small crop too
    threaded = hdog_candidates(image, 0.07, everywhere(image), threads=2)
    np.testing.assert_array_equal(single.labels, threaded.labels)
    np.testing.assert_array_equal(single.table, threaded.table)


def test_anisotropic_spacing_finds_a_round_blob():
    spacing = (0.07, 0.05)
    n_r, n_c = 86, 120  # 6 mm x 6 mm
    yy, xx = np.mgrid[:n_r, :n_c]
    r2 = ((yy * spacing[0] - 3) ** 2 + (xx * spacing[1] - 3) ** 2)
    sigma = PARAMS.sigmas_mm[1] * EFFECTIVE
    image = (0.3 + 0.2 * np.exp(-r2 / (2 * sigma ** 2))).astype(np.float32)
    found = hdog_candidates(image, spacing, everywhere(image))
    assert len(found) == 1 and found.table[0]["level"] == 1


# --------------------------------------------------------------------------- bad input

def test_nan_pixels_are_a_clear_error_only_where_they_are_used():
    image = textured_image((200, 200))
    image[150, 160] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite.*row 150, column 160"):
        hdog_candidates(image, 0.07, everywhere(image))
    roi = np.zeros(image.shape, bool)
    roi[20:40, 20:40] = True  # its crop stays away from the NaN: a normal result
    found = hdog_candidates(image, 0.07, roi)
    assert found.labels.shape == image.shape


def test_region_problems_give_clear_results():
    image = textured_image((200, 200))
    with pytest.raises(ValueError, match="region has shape"):
        hdog_candidates(image, 0.07, np.ones((100, 100), bool))
    # an ROI outside the image rasterises to nothing: no candidates, nothing computed
    found = hdog_candidates(image, 0.07, np.zeros(image.shape, bool))
    assert len(found) == 0 and found.boxes == ()
    # an integer mask is accepted as "non-zero = inside"
    found = hdog_candidates(image, 0.07, everywhere(image).astype(np.uint8))
    assert len(found) > 0


@pytest.mark.parametrize("bad", [np.zeros((2, 50)), np.zeros(10), np.zeros((5, 5, 5)), [[1, 2], [3, 4]]])
def test_images_that_are_not_2d_or_too_small_are_value_errors(bad):
    with pytest.raises(ValueError, match="2D image|too small"):
        hdog_candidates(bad, 0.07)


def test_stored_integer_values_are_refused():
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\]"):
        hdog_candidates(np.full((50, 50), 2000, np.uint16), 0.07)


@pytest.mark.parametrize("spacing", [0, -0.07, float("nan"), None, (0.07,), "abc"])
def test_unusable_spacing_is_a_value_error(spacing):
    with pytest.raises(ValueError, match="spacing"):
        hdog_candidates(np.zeros((20, 20), np.float32), spacing)


def test_a_tiny_image_gives_a_result():
    image = np.zeros((3, 3), np.float32)
    image[1, 1] = 1
    found = hdog_candidates(image, 0.07, everywhere(image))
    assert found.labels.shape == (3, 3)


# --------------------------------------------------------------------------- exact cropping

@pytest.fixture(scope="module")
def textured():
    image = textured_image((400, 400))
    return image, hdog_candidates(image, 0.07, everywhere(image))


def _disk(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


ROIS = {
    "rectangle": lambda s: np.pad(np.ones((100, 120), bool), ((150, s[0] - 250), (130, s[1] - 250))),
    "disk": lambda s: _disk(s, (200, 210), 60),
    "corner": lambda s: np.pad(np.ones((50, 40), bool), ((0, s[0] - 50), (s[1] - 40, 0))),
    "two_far_apart": lambda s: _disk(s, (40, 40), 15) | _disk(s, (350, 360), 20),
    "thin_strip_on_the_line": lambda s: np.pad(np.ones((4, 30), bool), ((103, s[0] - 107), (150, s[1] - 180))),
}


@pytest.mark.parametrize("name", list(ROIS))
def test_roi_mode_gives_exactly_the_whole_image_candidates(textured, name):
    image, whole = textured
    region = ROIS[name](image.shape)
    roi = hdog_candidates(image, 0.07, region)
    assert len(roi) > 0
    assert_same_as_whole(roi, whole, region)
    if name == "two_far_apart":
        assert len(roi.boxes) == 2


def test_a_candidate_reaching_far_beyond_the_roi_is_returned_whole(textured):
    """The line crosses the whole image: an ROI on it must grow its crop to return all of it."""
    image, whole = textured
    line_label = whole.labels[105, 150]  # on the line (row = 0.3 col + 60)
    assert line_label > 0 and whole.table[line_label - 1]["area"] > 1000
    for region in (ROIS["thin_strip_on_the_line"](image.shape), np.pad([[True]], ((105, 294), (150, 249)))):
        roi = hdog_candidates(image, 0.07, region)
        line = roi.labels[105, 150]
        assert line > 0
        np.testing.assert_array_equal(roi.labels == line, whole.labels == line_label)
        assert_same_as_whole(roi, whole, region)
        r0, r1, c0, c1 = roi.boxes[0]
        assert c1 - c0 > 300, "the crop should have grown along the line"


def test_one_pixel_roi_on_a_blob_centre(textured):
    image, whole = textured
    peak = whole.peaks[np.argmax(whole.peaks["dog"])]
    region = np.zeros(image.shape, bool)
    region[peak["row"], peak["col"]] = True
    roi = hdog_candidates(image, 0.07, region)
    assert len(roi) == 1
    assert_same_as_whole(roi, whole, region)


def test_roi_mode_computes_only_around_the_roi():
    image = textured_image((2400, 1800), seed=5)  # 168 x 126 mm
    region = _disk(image.shape, (700, 600), round(7.5 / 0.07))  # a 15 mm ROI
    roi = hdog_candidates(image, 0.07, region)
    assert roi.computed_pixels < 0.1 * image.size
    r0, r1, c0, c1 = roi.boxes[0]
    assert r0 > 0 and c0 > 0 and r1 < image.shape[0] and c1 < image.shape[1]


def test_roi_mode_is_exact_on_a_real_mammogram(interop):
    image = load_image(rewrap_as_mg(pydicom.dcmread(interop / "mg" / "MG1_J2KI.dcm")))
    assert image.pixel_spacing_mm == (0.05, 0.05)
    # a 40 x 40 mm part of the breast around the mass and its calcification, as "the image"
    part = np.ascontiguousarray(image.pixels[1200:2000, 900:1700])
    whole = hdog_candidates(part, image.pixel_spacing_mm, everywhere(part))
    assert len(whole) > 100
    region = _disk(part.shape, (400, 400), round(7.5 / 0.05))
    roi = hdog_candidates(part, image.pixel_spacing_mm, region)
    assert_same_as_whole(roi, whole, region)
