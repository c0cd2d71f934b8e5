"""extract_roi_features as a whole: object selection, input forms, purity, parallel workers."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from analysis.features import (LOCAL_SETS, RoiFeatures, extract_image_roi_features,
                               extract_roi_features, feature_pool)
from analysis.features.synthetic import synthetic_roi

SP = (0.07, 0.07)


@pytest.fixture(scope="module")
def small_roi():
    return synthetic_roi(n_calcs=25, size_mm=10.0, roi_mm=7.0, seed=1)


def assert_same(a: RoiFeatures, b: RoiFeatures):
    np.testing.assert_array_equal(a.labels, b.labels)
    for s in LOCAL_SETS:
        ta, tb = getattr(a, s), getattr(b, s)
        assert ta.names == tb.names
        np.testing.assert_array_equal(ta.values, tb.values)
        assert ta.unmeasurable == tb.unmeasurable
    np.testing.assert_array_equal(a.topology.values, b.topology.values)
    np.testing.assert_array_equal(a.handcrafted.values, b.handcrafted.values)


def test_shapes_and_purity(small_roi):
    pixels, roi, labels = small_roi
    before = (pixels.copy(), roi.copy(), labels.copy())
    f = extract_roi_features(pixels, SP, 12, roi, labels)
    assert f.n_objects == 25
    assert f.foreground.values.shape == (25, 102)
    assert f.regionprops.values.shape == (25, 13)
    assert f.background.values.shape == (25, 93)
    assert f.topology.values.shape == (64,) and f.handcrafted.values.shape == (3,)
    assert len(f.global_features().names) == 67
    # inputs untouched; a second call gives the same numbers
    for x, y in zip(before, (pixels, roi, labels)):
        np.testing.assert_array_equal(x, y)
    assert_same(f, extract_roi_features(pixels, SP, 12, roi, labels))


def test_objects_selected_by_centroid_and_kept_whole():
    pixels = np.full((40, 40), 0.4, np.float32)
    lab = np.zeros((40, 40), np.int32)
    lab[10:14, 8:20] = 1    # centroid column 13.5 -> 14: inside an ROI of columns < 15
    lab[25:29, 12:24] = 2   # centroid column 17.5: outside
    pixels[lab > 0] = 0.8
    roi = np.zeros((40, 40), bool)
    roi[:, :15] = True
    f = extract_roi_features(pixels, SP, 12, roi, lab)
    assert list(f.labels) == [1]
    # the whole object, including its pixels outside the ROI, is measured
    assert f.regionprops.column("area_mm2")[0] == pytest.approx(48 * 0.0049)


def test_input_forms_agree():
    pixels = np.full((50, 50), 0.35, np.float32)
    masks = []
    for (r, c, h, w) in ((5, 5, 3, 4), (20, 30, 5, 2), (40, 10, 2, 2)):
        m = np.zeros((50, 50), bool)
        m[r:r + h, c:c + w] = True
        masks.append(m)
        pixels[m] = 0.7 + 0.01 * r
    lab = np.zeros((50, 50), np.int32)
    for i, m in enumerate(masks, start=1):
        lab[m] = i
    a = extract_roi_features(pixels, SP, 12, None, lab)
    b = extract_roi_features(pixels, SP, 12, None, masks)
    c = extract_roi_features(pixels, SP, 12, None, lab > 0)
    assert_same(a, b)
    assert_same(a, c)
    with pytest.raises(ValueError):
        extract_roi_features(pixels, SP, 12, None, lab[:10])
    with pytest.raises(ValueError):
        extract_roi_features(pixels, (0.07, 0), 12, None, lab)
    with pytest.raises(ValueError):
        extract_roi_features(pixels, SP, 12, np.ones((3, 3), bool), lab)


def test_roi_without_objects():
    f = extract_roi_features(np.zeros((30, 30), np.float32), SP, 12, np.ones((30, 30), bool),
                             np.zeros((30, 30), np.int32))
    assert f.n_objects == 0
    assert f.foreground.values.shape == (0, 102) and f.background.values.shape == (0, 93)
    assert np.isnan(f.global_features().values).all()


def test_round_trip_through_npz(tmp_path, small_roi):
    pixels, roi, labels = small_roi
    f = extract_roi_features(pixels, SP, 12, roi, labels)
    path = tmp_path / "f.npz"
    np.savez(path, **f.to_dict())
    with np.load(path, allow_pickle=False) as d:
        g = RoiFeatures.from_dict(dict(d))
    assert_same(f, g)


def test_process_pool_gives_identical_results(small_roi):
    pixels, roi, labels = small_roi
    serial = extract_roi_features(pixels, SP, 12, roi, labels)
    with feature_pool(2) as pool:
        parallel = extract_roi_features(pixels, SP, 12, roi, labels, executor=pool)
    assert_same(serial, parallel)
    assert "radiomics_wall" in parallel.timings


def test_mammogram_image_wrapper(small_roi):
    pixels, roi, labels = small_roi
    image = SimpleNamespace(pixels=pixels, bits_stored=12, sop_instance_uid="1.2.3",
                            geometry=SimpleNamespace(pixel_spacing_mm=SP))
    assert_same(extract_image_roi_features(image, roi, labels), extract_roi_features(pixels, SP, 12, roi, labels))
    image.geometry.pixel_spacing_mm = None
    with pytest.raises(ValueError, match="no pixel spacing"):
        extract_image_roi_features(image, roi, labels)
