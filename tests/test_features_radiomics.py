"""pyradiomics foreground/background features and region properties per calcification."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk

from analysis.features import (BACKGROUND_NAMES, FOREGROUND_NAMES, REGIONPROP_NAMES, SHAPE2D_NAMES,
                               extract_roi_features)
from analysis.features.objects import ring_mask
from analysis.features.pyrad import FEATURE_CLASSES, get_extractor, radiomics_rows


def textured(shape, seed=0, base=1500.0, amp=300.0):
    rng = np.random.default_rng(seed)
    return np.rint(base + amp * rng.random(shape)).astype(np.float32)


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_feature_counts_102_and_93():
    from radiomics.shape2D import RadiomicsShape2D

    n_shape = sum(not dep for dep in RadiomicsShape2D.getFeatureNames().values())
    assert n_shape == len(SHAPE2D_NAMES) == 9  # the shape2D count with pyradiomics defaults
    assert len(FOREGROUND_NAMES) == 102 and len(set(FOREGROUND_NAMES)) == 102
    assert len(BACKGROUND_NAMES) == 102 - n_shape == 93
    # the names we hard-code are exactly what the configured extractor returns, in order
    img = textured((30, 30))
    m = disc(img.shape, 15, 15, 5)
    img[m] += 1000
    for with_shape, names in ((True, FOREGROUND_NAMES), (False, BACKGROUND_NAMES)):
        si = sitk.GetImageFromArray(img)
        sm = sitk.GetImageFromArray(m.astype(np.uint8))
        res = get_extractor(25.0, with_shape).execute(si, sm)
        keys = [k[len("original_"):] for k in res if not k.startswith("diagnostics")]
        assert keys == names
    # and extract_roi_features returns them
    lab = m.astype(np.int32)
    f = extract_roi_features(img / 4095, (0.07, 0.07), 12, None, lab)
    assert f.foreground.values.shape == (1, 102) and f.background.values.shape == (1, 93)
    assert np.isfinite(f.foreground.values).all() and np.isfinite(f.background.values).all()
    assert f.regionprops.names == REGIONPROP_NAMES and len(REGIONPROP_NAMES) == 13


def test_native_2d_equals_one_slice_force2d_and_force2d_on_2d_differs():
    from radiomics import featureextractor

    img = textured((40, 40), seed=1)
    m = disc(img.shape, 20, 19, 6) & ~disc(img.shape, 22, 22, 2)
    img[m] += np.rint(np.linspace(200, 900, m.sum())).astype(np.float32)
    ours, errs, _ = radiomics_rows([(img, m)], (0.07, 0.07), 25.0, True)
    assert not errs

    def run(image, mask, **kw):
        e = featureextractor.RadiomicsFeatureExtractor(binWidth=25, additionalInfo=False, **kw)
        e.disableAllFeatures()
        for c in FEATURE_CLASSES:
            e.enableFeatureClassByName(c)
        r = e.execute(image, mask)
        return np.array([float(r[f"original_{n}"]) for n in FOREGROUND_NAMES])

    si3 = sitk.GetImageFromArray(img[None])
    si3.SetSpacing((0.07, 0.07, 1.0))
    sm3 = sitk.GetImageFromArray(m[None].astype(np.uint8))
    sm3.CopyInformation(si3)
    one_slice = run(si3, sm3, force2D=True, force2Ddimension=0)
    np.testing.assert_allclose(ours[0], one_slice, rtol=1e-10)
    si = sitk.GetImageFromArray(img)
    si.SetSpacing((0.07, 0.07))
    sm = sitk.GetImageFromArray(m.astype(np.uint8))
    sm.CopyInformation(si)
    forced = run(si, sm, force2D=True, force2Ddimension=0)
    changed = ~np.isclose(ours[0], forced, rtol=1e-9, equal_nan=True)
    assert changed.sum() == 71  # docs/method.md §4.2: force2D on a native 2D image changes 71 features


def test_crop_equals_full_image_call():
    img = textured((120, 150), seed=2)
    masks = [disc(img.shape, 30, 40, 4), disc(img.shape, 80, 100, 6), disc(img.shape, 60, 20, 2)]
    for m in masks:
        img[m] += 700
    full, _, _ = radiomics_rows([(img, m) for m in masks], (0.07, 0.07), 25.0, True)
    lab = np.zeros(img.shape, np.int32)
    for i, m in enumerate(masks, start=1):
        lab[m] = i
    f = extract_roi_features(img / 4095, (0.07, 0.07), 12, None, lab)
    np.testing.assert_allclose(f.foreground.values, full, rtol=1e-9)


def test_one_pixel_object_is_unmeasurable_not_a_crash():
    img = textured((40, 40), seed=3)
    lab = np.zeros(img.shape, np.int32)
    lab[10, 10] = 1                       # one pixel
    lab[20, 20:22] = 2                    # two pixels in a line: measured
    lab[30:34, 28:32] = 3                 # a 4x4 square
    img[lab > 0] += 800
    f = extract_roi_features(img / 4095, (0.07, 0.07), 12, None, lab)
    assert list(f.labels) == [1, 2, 3]
    assert [l for l, _ in f.foreground.unmeasurable] == [1]
    assert "single pixel" in f.foreground.unmeasurable[0][1]
    assert np.isnan(f.foreground.values[0]).all()
    assert np.isfinite(f.foreground.values[2]).all()
    assert np.isfinite(f.foreground.values[1, FOREGROUND_NAMES.index("firstorder_Mean")])
    assert f.unmeasurable() == {"foreground": f.foreground.unmeasurable}
    # the one-pixel object still has region properties and a background ring
    assert f.regionprops.column("area_mm2")[0] == pytest.approx(0.0049)
    assert np.isfinite(f.background.values[0]).all()


def test_intensities_are_stored_values_and_regionprops_in_mm():
    img = textured((60, 60), seed=4)
    lab = disc(img.shape, 30, 30, 8).astype(np.int32)
    img[lab > 0] = 3000
    img[30, 30] = 3210
    f = extract_roi_features(img / 4095, (0.05, 0.05), 12, None, lab)
    fg = dict(zip(f.foreground.names, f.foreground.values[0]))
    rp = dict(zip(f.regionprops.names, f.regionprops.values[0]))
    assert fg["firstorder_Maximum"] == 3210 and fg["firstorder_Minimum"] == 3000
    assert rp["max_intensity"] == 3210 and rp["min_intensity"] == 3000
    n = int(lab.sum())
    assert rp["area_mm2"] == pytest.approx(n * 0.0025)
    assert fg["shape2D_PixelSurface"] == pytest.approx(rp["area_mm2"])  # SimpleITK spacing is set
    assert rp["equivalent_diameter_mm"] == pytest.approx(np.sqrt(4 * n * 0.0025 / np.pi))
    assert rp["major_axis_length_mm"] == pytest.approx(0.8, rel=0.05)  # disc of radius 0.4 mm
    assert rp["perimeter_mm"] == pytest.approx(2 * np.pi * 0.4, rel=0.1)
    assert 0.9 < rp["solidity"] <= 1 and rp["eccentricity"] < 0.2
    # 14-bit: the same [0, 1] pixels are read as 0..16383
    f14 = extract_roi_features(img / 4095, (0.05, 0.05), 14, None, lab)
    assert f14.regionprops.column("max_intensity")[0] == round(3210 / 4095 * 16383)


def test_anisotropic_spacing_is_passed_to_simpleitk():
    img = textured((40, 40), seed=5)
    lab = np.zeros(img.shape, np.int32)
    lab[10:16, 10:14] = 1  # 6 rows x 4 columns
    img[lab > 0] += 900
    f = extract_roi_features(img / 4095, (0.05, 0.1), 12, None, lab)
    fg = dict(zip(f.foreground.names, f.foreground.values[0]))
    assert fg["shape2D_PixelSurface"] == pytest.approx(24 * 0.005)
    assert f.regionprops.column("area_mm2")[0] == pytest.approx(24 * 0.005)
    # 6 rows x 0.05 = 0.3 mm tall, 4 cols x 0.1 = 0.4 mm wide: the major axis is horizontal
    assert abs(f.regionprops.column("orientation_rad")[0]) == pytest.approx(np.pi / 2, abs=1e-6)


def test_mm_features_agree_across_spacings():
    # a disc of radius 1 mm and an ellipse, rendered at 0.05 and 0.1 mm
    def render(sp):
        n = round(8 / sp)
        yy, xx = (np.mgrid[:n, :n] + 0.5) * sp
        lab = np.zeros((n, n), np.int32)
        lab[(yy - 3) ** 2 + (xx - 3) ** 2 <= 1.0] = 1
        lab[((yy - 5.5) / 0.5) ** 2 + ((xx - 5) / 1.2) ** 2 <= 1.0] = 2
        img = 1500 + 200 * np.sin(xx * 3) * np.cos(yy * 2) + 800 * (lab > 0)
        return extract_roi_features(np.rint(img) / 4095, (sp, sp), 12, None, lab)

    a, b = render(0.1), render(0.05)
    for name, tol in (("area_mm2", 0.03), ("equivalent_diameter_mm", 0.02), ("perimeter_mm", 0.08),
                      ("major_axis_length_mm", 0.03), ("minor_axis_length_mm", 0.03),
                      ("convex_area_mm2", 0.04)):
        np.testing.assert_allclose(a.regionprops.column(name), b.regionprops.column(name), rtol=tol,
                                   err_msg=name)
    for name in ("shape2D_PixelSurface", "shape2D_MeshSurface", "shape2D_Perimeter",
                 "shape2D_MaximumDiameter", "shape2D_MajorAxisLength"):
        np.testing.assert_allclose(a.foreground.column(name), b.foreground.column(name), rtol=0.08,
                                   err_msg=name)
    assert a.regionprops.column("area_mm2")[0] == pytest.approx(np.pi, rel=0.03)


def test_ring_is_in_mm_and_excludes_every_calcification():
    sp = (0.07, 0.07)
    obj = np.zeros((80, 80), bool)
    obj[40, 40] = True
    other = np.zeros_like(obj)
    other[40, 50:53] = True
    ring = ring_mask(obj, obj | other, sp, 1.75)
    assert ring[40 + 25, 40] and ring[40, 40 - 25]                      # 25 px = 1.75 mm: inside
    assert not ring[40 + 26, 40] and not ring[40, 40 - 26]              # 26 px: outside
    assert not ring[40, 51] and not ring[40, 40]                        # calcifications removed
    assert ring[40, 41]
    ring05 = ring_mask(obj, obj, (0.05, 0.05), 1.75)
    assert ring05[40 + 35, 40] and not ring05[40 + 36, 40]              # 35 px at 0.05 mm


def test_background_ring_removes_calcifications_outside_the_roi():
    img = textured((100, 100), seed=6)
    lab = np.zeros(img.shape, np.int32)
    lab[48:52, 28:32] = 1     # inside the ROI
    lab[48:52, 40:44] = 2     # outside the ROI but in object 1's ring
    img[lab == 1] += 900
    img[lab == 2] = 4000      # very bright: it would raise the ring maximum if it were kept
    roi = np.zeros(img.shape, bool)
    roi[:, :36] = True
    f = extract_roi_features(img / 4095, (0.07, 0.07), 12, roi, lab)
    assert list(f.labels) == [1]
    bg_max = f.background.column("firstorder_Maximum")[0]
    assert bg_max <= 1800
    # without object 2 the ring gets its pixels back (same area, higher maximum when bright)
    lab2 = lab.copy()
    lab2[lab2 == 2] = 0
    f2 = extract_roi_features(img / 4095, (0.07, 0.07), 12, roi, lab2)
    assert f2.background.column("firstorder_Maximum")[0] == 4000


def test_radiomics_logging_is_quiet(caplog):
    from analysis.features.pyrad import quiet_radiomics_logging

    img = textured((30, 30), seed=7)
    lab = np.zeros(img.shape, np.int32)
    lab[10:13, 10:12] = 1
    lab[20, 20] = 2
    with caplog.at_level(logging.DEBUG):
        extract_roi_features(img / 4095, (0.07, 0.07), 12, None, lab)
    assert not [r for r in caplog.records if r.name.startswith("radiomics")]
    assert logging.getLogger("radiomics").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("radiomics.glcm").getEffectiveLevel() == logging.WARNING
    assert get_extractor(25.0, True) is get_extractor(25.0, True)  # one extractor, reused
