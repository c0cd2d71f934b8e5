"""k-means histogram aggregation and the mean-and-std baseline."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.aggregate import (Aggregator, MeanStdAggregator, aggregator_from_dict, fit_aggregator,
                                fit_mean_std_aggregator)
from analysis.features import (BACKGROUND_NAMES, FOREGROUND_NAMES, GLOBAL_NAMES, HANDCRAFTED_NAMES,
                               LOCAL_SETS, REGIONPROP_NAMES, FeatureTable, FeatureVector, RoiFeatures,
                               extract_roi_features, topology_names)
from analysis.features.synthetic import synthetic_roi

NAMES = {"foreground": FOREGROUND_NAMES, "regionprops": REGIONPROP_NAMES, "background": BACKGROUND_NAMES}


def fake_roi(rng, n, shift=0.0, nan_rows=()) -> RoiFeatures:
    """RoiFeatures with random local values (no image needed); rows in nan_rows unmeasurable."""
    labels = np.arange(1, n + 1)
    tables = {}
    for s, names in NAMES.items():
        v = rng.normal(shift, 1.0, (n, len(names))) * (1 + np.arange(len(names)))
        um = []
        if s == "foreground":
            for i in nan_rows:
                v[i] = np.nan
                um.append((int(labels[i]), "single pixel"))
        tables[s] = FeatureTable(names, v, labels, um)
    return RoiFeatures(labels=labels, **tables,
                       topology=FeatureVector(topology_names(), rng.random(64)),
                       handcrafted=FeatureVector(HANDCRAFTED_NAMES, rng.random(3)))


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(0)
    return [fake_roi(rng, int(rng.integers(3, 30)), shift=float(rng.choice([-2, 0, 2])))
            for _ in range(30)]


def test_vector_layout_and_histograms_sum_to_one(train):
    agg = fit_aggregator(train, k=15, seed=1)
    assert agg.n_features == 3 * 15 + 67 == len(agg.feature_names)
    assert agg.feature_names[0] == "foreground.cluster00"
    assert agg.feature_names[45:] == GLOBAL_NAMES
    X = agg.transform_many(train)
    assert X.shape == (30, 112)
    for j, s in enumerate(LOCAL_SETS):
        block = X[:, 15 * j:15 * (j + 1)]
        np.testing.assert_allclose(block.sum(axis=1), 1.0, rtol=0, atol=1e-12, err_msg=s)
        assert (block >= 0).all()
        # fraction = count / n objects: multiples of 1/n
        n = np.array([r.n_objects for r in train])
        np.testing.assert_allclose(block * n[:, None], np.rint(block * n[:, None]), atol=1e-9)
    for i, r in enumerate(train):
        np.testing.assert_array_equal(X[i, 45:], r.global_features().values)


def test_deterministic_for_a_seed(train):
    a, b = fit_aggregator(train, k=8, seed=7), fit_aggregator(train, k=8, seed=7)
    for s in LOCAL_SETS:
        np.testing.assert_array_equal(a.sets[s].centroids, b.sets[s].centroids)
    np.testing.assert_array_equal(a.transform_many(train), b.transform_many(train))
    np.testing.assert_array_equal(a.transform(train[3]), a.transform(train[3]))


def test_assignment_matches_sklearn_and_uses_training_statistics(train):
    from sklearn.cluster import KMeans

    agg = fit_aggregator(train, k=6, seed=3)
    x = np.concatenate([r.regionprops.values for r in train])
    m = agg.sets["regionprops"]
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.scale, x.std(axis=0), rtol=1e-12)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    km = KMeans(n_clusters=6, random_state=3, n_init=10).fit(z)
    np.testing.assert_array_equal(m.assign(z), km.predict(z))


def test_nan_inf_and_constant_columns(train):
    rng = np.random.default_rng(5)
    rois = [fake_roi(rng, 12, nan_rows=(0,)) for _ in range(6)]
    for r in rois:
        r.foreground.values[:, 3] = 7.0                      # constant
        r.foreground.values[:, 4] = np.nan                   # never measured
        r.foreground.values[1, 5] = np.inf                   # one infinite value
    agg = fit_aggregator(rois, k=4, seed=0)
    m = agg.sets["foreground"]
    assert not m.keep[3] and not m.keep[4] and m.keep[5]
    assert m.mean[3] == 0 and m.scale[4] == 1
    assert np.isfinite(m.centroids).all()
    # the infinite value is ignored in the statistics
    col = np.concatenate([r.foreground.values[:, 5] for r in rois])
    fin = col[np.isfinite(col)]
    assert m.mean[5] == pytest.approx(fin.mean()) and m.scale[5] == pytest.approx(fin.std())
    v = agg.transform(rois[0])
    assert np.isfinite(v).all()
    # the unmeasurable (all-NaN) object is left out: fractions are over the 11 measured objects
    fg = v[:4]
    assert fg.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(fg * 11, np.rint(fg * 11), atol=1e-9)
    rp = v[4:8]
    np.testing.assert_allclose(rp * 12, np.rint(rp * 12), atol=1e-9)
    # the same ROI with the inf turned into NaN gives the same vector (inf == missing)
    r2 = rois[1]
    v_inf = agg.transform(r2)
    r2.foreground.values[1, 5] = np.nan
    np.testing.assert_array_equal(v_inf, agg.transform(r2))


def test_roi_without_objects_gives_zero_histograms(train):
    agg = fit_aggregator(train, k=5, seed=0)
    empty = extract_roi_features(np.zeros((20, 20), np.float32), (0.07, 0.07), 12, None,
                                 np.zeros((20, 20), np.int32))
    v = agg.transform(empty)
    assert v.shape == (15 + 67,)
    np.testing.assert_array_equal(v[:15], 0.0)
    assert np.isnan(v[15:]).all()


def test_serialisation_round_trip(tmp_path, train):
    agg = fit_aggregator(train, k=9, seed=2)
    path = tmp_path / "agg.npz"
    np.savez(path, **agg.to_dict())
    with np.load(path, allow_pickle=False) as d:
        back = aggregator_from_dict(dict(d))
    assert isinstance(back, Aggregator) and back.k == 9 and back.seed == 2
    assert back.feature_names == agg.feature_names
    np.testing.assert_array_equal(back.transform_many(train), agg.transform_many(train))


def test_too_few_objects_for_k():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="fewer than k"):
        fit_aggregator([fake_roi(rng, 5)], k=15)


def test_mean_std_baseline(tmp_path, train):
    base = fit_mean_std_aggregator(train)
    assert base.n_features == 2 * (102 + 13 + 93) + 67 == 483
    r = train[0]
    v = base.transform(r)
    names = base.feature_names
    i = names.index("regionprops.area_mm2.mean")
    assert v[i] == pytest.approx(r.regionprops.column("area_mm2").mean())
    assert v[i + 1] == pytest.approx(r.regionprops.column("area_mm2").std())
    np.testing.assert_array_equal(v[-67:], r.global_features().values)
    np.savez(tmp_path / "b.npz", **base.to_dict())
    with np.load(tmp_path / "b.npz", allow_pickle=False) as d:
        back = aggregator_from_dict(dict(d))
    assert isinstance(back, MeanStdAggregator)
    np.testing.assert_array_equal(back.transform(r), v)
    # NaN rows are ignored; a feature with no value in the ROI is NaN
    rng = np.random.default_rng(2)
    r2 = fake_roi(rng, 4, nan_rows=(0, 1))
    v2 = base.transform(r2)
    j = names.index("foreground.glcm_Contrast.mean")
    col = r2.foreground.column("glcm_Contrast")
    assert v2[j] == pytest.approx(np.nanmean(col))
    r3 = fake_roi(rng, 2, nan_rows=(0, 1))
    assert np.isnan(base.transform(r3)[j])


def test_end_to_end_on_real_features():
    rois = []
    for seed in range(3):
        pixels, roi, labels = synthetic_roi(n_calcs=12, size_mm=8.0, roi_mm=6.0, seed=seed)
        rois.append(extract_roi_features(pixels, (0.07, 0.07), 12, roi, labels))
    agg = fit_aggregator(rois, k=4, seed=0)
    X = agg.transform_many(rois)
    assert X.shape == (3, 12 + 67)
    for j in range(3):
        np.testing.assert_allclose(X[:, 4 * j:4 * (j + 1)].sum(axis=1), 1.0, atol=1e-12)
    assert np.isfinite(X).all()
