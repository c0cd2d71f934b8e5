"""The batched radiomics path (analysis.features.fastrad) gives pyradiomics' values.

``radiomics_rows`` (batched) is compared with ``radiomics_rows_reference`` (one pyradiomics
``execute`` per object): every feature within 1e-9 relative (1e-12 absolute near zero), NaN
exactly where the reference has NaN, the same error list.  On real objects (HDoG candidates
and the truth calcifications of ``calcnode synth`` images, foreground and background rings,
built by ``extract_roi_features``) and on edge cases.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analysis.features.roi as roi_module
from analysis.features import BACKGROUND_NAMES, FOREGROUND_NAMES, extract_roi_features
from analysis.features import fastrad
from analysis.features.objects import ring_mask
from analysis.features.pyrad import radiomics_rows, radiomics_rows_reference

RTOL, ATOL = 1e-9, 1e-12
ROOT = Path(__file__).resolve().parents[1]


def assert_same_values(new: np.ndarray, ref: np.ndarray, names: list[str], what: str = ""):
    assert new.shape == ref.shape
    nan_new, nan_ref = np.isnan(new), np.isnan(ref)
    if not np.array_equal(nan_new, nan_ref):
        rows, cols = np.nonzero(nan_new != nan_ref)
        raise AssertionError(f"{what}: NaN positions differ at {len(rows)} places, e.g. "
                             + ", ".join(f"row {r} {names[c]} new={new[r, c]} ref={ref[r, c]}"
                                         for r, c in list(zip(rows, cols))[:5]))
    ok = nan_ref | (np.abs(new - ref) <= np.maximum(ATOL, RTOL * np.abs(ref)))
    if not ok.all():
        rows, cols = np.nonzero(~ok)
        raise AssertionError(f"{what}: {len(rows)} values differ, e.g. "
                             + ", ".join(f"row {r} {names[c]} new={new[r, c]!r} ref={ref[r, c]!r}"
                                         for r, c in list(zip(rows, cols))[:8]))


def compare(tasks, spacing=(0.07, 0.07), with_shape=True, what=""):
    ref, ref_err, _ = radiomics_rows_reference(tasks, spacing, 25.0, with_shape)
    new, new_err, _ = radiomics_rows(tasks, spacing, 25.0, with_shape)
    assert new_err == ref_err, what
    assert_same_values(new, ref, FOREGROUND_NAMES if with_shape else BACKGROUND_NAMES, what)
    return new, new_err


# --------------------------------------------------------------------------- real objects

@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([sys.executable, "-m", "dicom_node.cli", "synth", "--out", str(out), "--cases", "2",
                    "--size", "1024x1024", "--seed", "7", "--quiet", "--workers", "1"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def real_features(synth):
    """extract_roi_features with the batched and with the reference radiomics, on

    * the HDoG candidates (the segmentation's first stage: calcifications, vessels, noise
      blobs) of one whole simulated view, and
    * the simulator's truth calcifications of another case's view."""
    from analysis.dicom_input import load_image
    from analysis.segmentation.hdog import hdog_candidates
    from training.datasets import load_truth

    inputs = []
    image = load_image(synth / "dicom" / "SYNTH0001" / "MG_LCC.dcm")
    inputs.append((image, hdog_candidates(image.pixels, image.pixel_spacing_mm, None).labels))
    image = load_image(synth / "dicom" / "SYNTH0002" / "MG_LMLO.dcm")
    inputs.append((image, load_truth(synth / "truth" / "SYNTH0002" / "LMLO_labels.npz", image.pixels.shape)))
    out = []
    for image, labels in inputs:
        args = (image.pixels, image.pixel_spacing_mm, image.bits_stored, None, labels)
        new = extract_roi_features(*args)
        mp = pytest.MonkeyPatch()
        mp.setattr(roi_module, "radiomics_rows", radiomics_rows_reference)
        try:
            ref = extract_roi_features(*args)
        finally:
            mp.undo()
        out.append((new, ref))
    return out


def test_real_objects_equal_reference(real_features):
    n = 0
    for new, ref in real_features:
        np.testing.assert_array_equal(new.labels, ref.labels)
        for family, names in (("foreground", FOREGROUND_NAMES), ("background", BACKGROUND_NAMES)):
            tn, tr = getattr(new, family), getattr(ref, family)
            assert tn.names == tr.names == names
            assert tn.unmeasurable == tr.unmeasurable
            assert_same_values(tn.values, tr.values, names, family)
        np.testing.assert_array_equal(new.regionprops.values, ref.regionprops.values)
        n += new.n_objects
    assert n >= 300
    # the objects are varied: small and large, few and many gray levels
    fg = np.concatenate([new.foreground.values for new, _ in real_features])
    area = fg[:, FOREGROUND_NAMES.index("shape2D_PixelSurface")] / 0.0049
    assert np.nanmin(area) <= 3 and np.nanmax(area) >= 40


def test_real_objects_bit_identical_where_claimed(real_features):
    """firstorder, shape2D, GLCM and GLRLM follow pyradiomics' arithmetic operation by
    operation, summation order included (see analysis/features/fastrad.py): bit-identical for
    the versions this was checked with.  GLSZM, GLDM and NGTDM sum in another order (within
    1e-14 relative here)."""
    import radiomics

    if radiomics.__version__ != "v3.1.4" or not np.__version__.startswith("2.4."):
        pytest.skip(f"bit identity checked for pyradiomics v3.1.4 / numpy 2.4, this is "
                    f"{radiomics.__version__} / {np.__version__} (the 1e-9 test still applies)")
    for new, ref in real_features:
        for family in ("foreground", "background"):
            tn, tr = getattr(new, family), getattr(ref, family)
            for c, name in enumerate(tn.names):
                a, b = tn.values[:, c], tr.values[:, c]
                if name.split("_")[0] in ("firstorder", "shape2D", "glcm", "glrlm"):
                    assert np.array_equal(a, b, equal_nan=True), f"{family} {name}"
                else:
                    np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-300, err_msg=f"{family} {name}")


# --------------------------------------------------------------------------- edge cases

def _edge_tasks():
    """(name, image crop, mask crop): the awkward objects, all in one list (one batch)."""
    rng = np.random.default_rng(11)
    tasks = []

    def add(name, img, msk):
        tasks.append((name, np.asarray(img, np.float32), np.asarray(msk, bool)))

    def textured(shape, base=1500.0, amp=300.0):
        return np.rint(base + amp * rng.random(shape))

    # two pixels: horizontal, vertical, diagonal, anti-diagonal; same and different intensity
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for second in (2300.0, 2000.0):
            img = textured((4, 5))
            m = np.zeros((4, 5), bool)
            m[1, 2] = m[1 + dy, 2 + dx] = True
            img[1, 2], img[1 + dy, 2 + dx] = 2000.0, second
            add(f"2px {dy},{dx} {second}", img, m)
    # one-pixel-wide lines (3 to 15 px, many gray levels): horizontal, vertical, diagonal
    for length in (3, 6, 15):
        ramp = np.rint(np.linspace(1500, 1500 + 40 * length, length))
        img = textured((3, length + 2))
        m = np.zeros_like(img, bool)
        m[1, 1:-1] = True
        img[1, 1:-1] = ramp
        add(f"hline {length}", img, m)
        add(f"vline {length}", img.T, m.T)
        img = textured((length + 2, length + 2))
        m = np.zeros_like(img, bool)
        m[np.arange(1, length + 1), np.arange(1, length + 1)] = True
        img[m] = ramp
        add(f"diagonal {length}", img, m)
        add(f"anti-diagonal {length}", img[:, ::-1], m[:, ::-1])
    # a staircase (horizontal and diagonal neighbours only: two empty GLCM angles)
    img = textured((6, 12))
    m = np.zeros_like(img, bool)
    for k in range(5):
        m[k, 2 * k:2 * k + 2] = True
    img[m] = rng.integers(1500, 2500, m.sum())
    add("staircase", img, m)
    # constant intensity (one gray level), on a disc and on a line
    yy, xx = np.mgrid[:13, :13]
    disc = (yy - 6) ** 2 + (xx - 6) ** 2 <= 16
    img = textured((13, 13))
    img[disc] = 3000.0
    add("constant disc", img, disc)
    img = textured((3, 9))
    m = np.zeros_like(img, bool)
    m[1, 1:8] = True
    img[m] = 2100.0
    add("constant line", img, m)
    # touching the crop border: the whole crop, and a corner object
    add("whole crop", textured((5, 7)), np.ones((5, 7), bool))
    m = np.zeros((6, 6), bool)
    m[:3, :2] = True
    add("corner", textured((6, 6)), m)
    # one pixel, empty
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    add("single pixel", textured((5, 5)), m)
    add("empty", textured((5, 5)), np.zeros((5, 5), bool))
    # many bins: Ng ~200 with ~100 gray levels; and more than MAX_LEVELS gray levels (the
    # per-object reference path)
    add("many levels", rng.integers(0, 5000, (12, 12)), np.ones((12, 12), bool))
    n = fastrad.MAX_LEVELS + 10
    add("very many levels", (1000 + 25 * rng.permutation(n)).reshape(-1, 2), np.ones((n // 2, 2), bool))
    # not connected: two isolated pixels (no neighbouring pair at all), two blobs
    m = np.zeros((7, 7), bool)
    m[1, 1] = m[5, 4] = True
    add("two isolated pixels", textured((7, 7)), m)
    m = np.zeros((9, 9), bool)
    m[1:3, 1:4] = True
    m[6:9, 5:8] = True
    add("two blobs", textured((9, 9), 2000, 900), m)
    # exactly one and exactly two empty gray levels inside the range
    img = textured((6, 6), 1500, 20)
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    img[1:3, 1:5] = 1500.0
    img[3:5, 1:5] = 1550.0  # levels 1 and 3: one empty level
    add("one empty level", img, m)
    img2 = img.copy()
    img2[3:5, 1:5] = 1575.0  # levels 1 and 4: two empty levels
    add("two empty levels", img2, m)
    # non-integer and negative intensities
    m = disc
    add("fractional", 1500 + 300 * rng.random((13, 13)), m)
    add("negative", -200 + 300 * rng.random((13, 13)), m)
    add("float64 input", (1500 + 300 * rng.random((13, 13))).astype(np.float64), m)
    # a ring (the background shape), a 3-pixel L, a hole
    obj = np.zeros((61, 61), bool)
    obj[29:32, 29:32] = True
    add("ring", textured((61, 61), 1400, 600), ring_mask(obj, obj, (0.07, 0.07), 1.75))
    m = np.zeros((4, 4), bool)
    m[1, 1] = m[2, 1] = m[2, 2] = True
    add("L tromino", textured((4, 4)), m)
    m = np.ones((5, 5), bool)
    m[2, 2] = False
    add("with hole", textured((5, 5), 1500, 900), m)
    # ordinary objects of very different sizes and contrasts
    for r, amp in ((1.5, 200), (3, 800), (6, 2500), (10, 400)):
        n = int(2 * r + 5)
        yy, xx = np.mgrid[:n, :n]
        m = (yy - n // 2) ** 2 + (xx - n // 2) ** 2 <= r * r
        img = textured((n, n))
        img[m] += np.rint(amp * rng.random(m.sum()))
        add(f"disc r={r} amp={amp}", img, m)
    return tasks


@pytest.fixture(scope="module")
def edge_tasks():
    return _edge_tasks()


@pytest.mark.parametrize("with_shape", [True, False])
@pytest.mark.parametrize("spacing", [(0.07, 0.07), (0.05, 0.1)])
def test_edge_cases_equal_reference(edge_tasks, with_shape, spacing):
    tasks = [(img, m) for _, img, m in edge_tasks]
    new, errors = compare(tasks, spacing, with_shape, what="edge cases")
    names = [n for n, _, _ in edge_tasks]
    assert dict((names[i], r) for i, r in errors) == {
        "single pixel": "single pixel: pyradiomics cannot measure a one-pixel region",
        "empty": "empty mask"}
    # each awkward object was measured (not just NaN == NaN)
    measured = ~np.isnan(new).all(axis=1)
    assert [n for n, ok in zip(names, measured) if not ok] == ["single pixel", "empty"]


def test_each_edge_case_alone_equals_reference(edge_tasks):
    """One object per call (nothing to batch with) gives the reference values too."""
    for name, img, m in edge_tasks:
        compare([(img, m)], what=name)


def test_paths_taken(edge_tasks):
    """The edge cases exercise the batched path, the per-object pyradiomics GLCM/GLRLM path
    and the full reference path (the layouts the batch reproduces included)."""
    sp = np.array([0.07, 0.07])
    kinds = {}
    for name, img, m in edge_tasks:
        if m.sum() < 2:
            continue
        o = fastrad._prepare(img, m, 25.0, True, sp)
        kinds[name] = "reference" if o is None else ("direct" if o.direct else "batched")
    assert kinds["very many levels"] == "reference"
    assert kinds["hline 15"] == kinds["diagonal 15"] == kinds["staircase"] == "direct"
    assert kinds["two isolated pixels"] == "direct"
    assert kinds["many levels"] == kinds["constant disc"] == kinds["disc r=3 amp=800"] == "batched"
    assert kinds["2px 1,1 2300.0"] == "direct"  # GLRLM: no run along the other directions
    _, img, m = next(t for t in edge_tasks if t[0] == "one empty level")
    one = fastrad._prepare(img, m, 25.0, True, sp)
    assert one.Ng - one.L == 1 and not one.glcm_jmajor  # pyradiomics' P_glcm is C-ordered then


def test_batching_does_not_change_values(edge_tasks, real_features):
    """Each row depends on its own task only: any split into calls (as an executor does) gives
    the same bits."""
    tasks = [(img, m) for _, img, m in edge_tasks]
    whole, errors, _ = radiomics_rows(tasks, (0.07, 0.07), 25.0, True)
    parts, part_errors = [], []
    for lo, hi in ((0, 7), (7, 8), (8, 30), (30, len(tasks))):
        v, e, _ = radiomics_rows(tasks[lo:hi], (0.07, 0.07), 25.0, True)
        parts.append(v)
        part_errors += [(lo + i, r) for i, r in e]
    assert np.array_equal(whole, np.concatenate(parts), equal_nan=True)
    assert part_errors == errors
    shuffled = np.random.default_rng(0).permutation(len(tasks))
    v, _, _ = radiomics_rows([tasks[k] for k in shuffled], (0.07, 0.07), 25.0, True)
    assert np.array_equal(v, whole[shuffled], equal_nan=True)


def test_process_pool_identical_to_serial():
    """extract_roi_features with a worker pool (radiomics_rows on chunks, in other processes)
    gives the same bits as the serial call."""
    from analysis.features import feature_pool
    from analysis.features.synthetic import synthetic_roi

    pixels, roi, labels = synthetic_roi(n_calcs=30, size_mm=10.0, roi_mm=8.0, seed=3)
    serial = extract_roi_features(pixels, (0.07, 0.07), 12, roi, labels)
    with feature_pool(2) as pool:
        parallel = extract_roi_features(pixels, (0.07, 0.07), 12, roi, labels, executor=pool,
                                        chunks_per_family=3)
    for family in ("foreground", "background"):
        a, b = getattr(serial, family), getattr(parallel, family)
        assert np.array_equal(a.values, b.values, equal_nan=True)
        assert a.unmeasurable == b.unmeasurable


def test_empty_task_list():
    for with_shape, n in ((True, 102), (False, 93)):
        v, e, secs = radiomics_rows([], (0.07, 0.07), 25.0, with_shape)
        assert v.shape == (0, n) and e == [] and secs >= 0
