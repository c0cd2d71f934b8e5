"""The classifier without images: CV hygiene, selection, determinism, the bundle, not-assessable ROIs.

ROI features here are random tables with the real feature names (a class shift on a few
columns), so the training procedure runs in seconds; tests/test_train_classifier.py runs it on
simulated mammograms end to end.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analysis.classify import (AGGREGATOR_FILE, LIGHTGBM_FILE, MANIFEST, BundleError, ClassifierBundle,
                               fill_missing, segmentation_identity)
from analysis.features import (BACKGROUND_NAMES, DEFAULT_PARAMS, FOREGROUND_NAMES, HANDCRAFTED_NAMES,
                               REGIONPROP_NAMES, FeatureTable, FeatureVector, RoiFeatures, topology_names)
from analysis.features.synthetic import synthetic_roi
from analysis.segmentation import HDoGParams
from analysis.segmentation.settings import segmentation_settings
from analysis.study import analyze_roi
from training.classifier import model as M
from training.model_files import save_bundle, save_segmentation_model

TINY = replace(M.Settings(), folds=3, outer_folds=2, grid=M.GRIDS["tiny"])


def fake_roi(rng, n: int, actionable: bool) -> RoiFeatures:
    shift = 1.5 if actionable else 0.0
    labels = np.arange(1, n + 1)

    def table(names):
        values = rng.normal(size=(n, len(names)))
        values[:, :3] += shift
        return FeatureTable(names, values, labels)

    topo = rng.normal(size=64)
    topo[:4] += shift
    return RoiFeatures(labels=labels, foreground=table(FOREGROUND_NAMES), regionprops=table(REGIONPROP_NAMES),
                       background=table(BACKGROUND_NAMES), topology=FeatureVector(topology_names(), topo),
                       handcrafted=FeatureVector(HANDCRAFTED_NAMES, rng.normal(size=3) + shift))


def fake_set(seed: int = 0, patients: int = 18, per_patient: int = 3) -> M.TrainingSet:
    rng = np.random.default_rng(seed)
    rois, y, groups, ids = [], [], [], []
    for p in range(patients):
        for r in range(per_patient):
            label = int(rng.random() < 0.3)
            rois.append(fake_roi(rng, int(rng.integers(4, 12)), bool(label)))
            y.append(label)
            groups.append(f"P{p:02d}")
            ids.append(f"P{p:02d}-{r}")
    return M.TrainingSet(rois, y, groups, ids, np.full(len(y), np.nan))


@pytest.fixture(scope="module")
def data() -> M.TrainingSet:
    return fake_set()


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory):
    import torch

    from analysis.segmentation.cnn import ProximityNet, SegmentationModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cnn") / "untrained.pt"
    save_segmentation_model(SegmentationModel(net=ProximityNet(width=2), info={"notice": "untrained test net"}),
                            path)
    return path


def make_bundle(data, seg_weights, seed=0, **kw) -> ClassifierBundle:
    config = {"k": 4, "num_leaves": 4, "max_depth": -1, "learning_rate": 0.1, "reg_lambda": 0.0,
              "n_estimators": 30, "threshold": 0.4}
    fitted = M.fit_model(data, config, TINY, seed)
    return ClassifierBundle.create(
        name=kw.get("name", "unit-test"), version="0.0.1", threshold=config["threshold"],
        aggregator=fitted.aggregator, booster=fitted.booster, impute=fitted.impute, feature_params=DEFAULT_PARAMS,
        parameters={"kmeans_k": 4}, training_summary={"rois": len(data)}, training_data="random tables",
        segmentation_model_path=seg_weights, hdog_params=kw.get("hdog_params", HDoGParams()))


# --------------------------------------------------------------------------- CV hygiene

def test_resampling_sees_training_rows_only_and_validation_rows_are_scored_untouched(data):
    resampler_inputs, folds = [], []

    def spy(x, y, seed):
        resampler_inputs.append((x.copy(), y.copy()))
        return M.smoteenn_resample(x, y, seed)

    splits = M.splits_for(data, TINY.folds, seed=0)
    oof = M.cross_validate(data, splits, TINY, seed=0, resample=spy, on_fold=folds.append)

    assert len(folds) == len(splits) == len(resampler_inputs)
    seen_validation = []
    for fd, (x_in, y_in) in zip(folds, resampler_inputs):
        # the resampler got exactly this fold's training rows, never a validation row
        assert x_in.shape[0] == len(fd.train_index) < len(data)
        np.testing.assert_array_equal(x_in, fd.x_train)
        np.testing.assert_array_equal(y_in, data.y[fd.train_index])
        validation_rows = {row.tobytes() for row in fd.x_validation}
        assert not validation_rows & {row.tobytes() for row in x_in}
        assert not validation_rows & {row.tobytes() for row in fd.x_fit}
        # resampling did change the training rows (so the checks above mean something)
        assert fd.resampling["applied"] and fd.x_fit.shape[0] != fd.x_train.shape[0]
        # what was scored is the original validation fold, row for row, transformed by this
        # fold's training-only aggregator and fill
        expected = fill_missing(fd.aggregator.transform_many([data.rois[i] for i in fd.validation_index]), fd.impute)
        np.testing.assert_array_equal(fd.x_validation, expected)
        assert fd.x_validation.shape[0] == len(fd.validation_index)
        # patients never straddle training and validation
        assert not set(data.groups[fd.train_index]) & set(data.groups[fd.validation_index])
        seen_validation.extend(fd.validation_index.tolist())
    assert sorted(seen_validation) == list(range(len(data)))  # every ROI validated exactly once
    for scores in oof.values():
        assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


def test_aggregator_of_a_fold_is_fitted_on_its_training_objects_only(data):
    folds = []
    splits = M.splits_for(data, TINY.folds, seed=0)
    M.cross_validate(data, splits, TINY, seed=0, on_fold=folds.append)
    for fd in folds:
        train_objects = sum(data.rois[i].n_objects for i in fd.train_index)
        all_objects = sum(r.n_objects for r in data.rois)
        refit = M.fit_aggregation([data.rois[i] for i in fd.train_index], "kmeans", fd.k, 0, TINY.kmeans_n_init)
        assert train_objects < all_objects
        np.testing.assert_array_equal(refit.sets["foreground"].centroids, fd.aggregator.sets["foreground"].centroids)
        np.testing.assert_array_equal(refit.sets["foreground"].mean, fd.aggregator.sets["foreground"].mean)


def test_selection_is_sensitivity_first_then_auc_with_a_specificity_floor():
    base = {"k": 10, "num_leaves": 7, "max_depth": -1, "learning_rate": 0.1, "reg_lambda": 0.0, "n_estimators": 100}
    rows = [
        base | {"threshold": 0.1, "sensitivity": 1.00, "specificity": 0.05, "auc": 0.90},  # below the floor
        base | {"threshold": 0.3, "sensitivity": 0.95, "specificity": 0.40, "auc": 0.70},
        base | {"k": 15, "threshold": 0.3, "sensitivity": 0.94, "specificity": 0.30, "auc": 0.80},  # tied: AUC wins
        base | {"k": 15, "threshold": 0.5, "sensitivity": 0.80, "specificity": 0.70, "auc": 0.95},
    ]
    settings = M.Settings(min_specificity=0.25, sensitivity_tolerance=0.02)
    chosen = M.select(rows, settings)
    assert (chosen["k"], chosen["threshold"]) == (15, 0.3) and chosen["specificity_floor_met"]
    strict = M.select(rows, replace(settings, sensitivity_tolerance=0.0))
    assert (strict["k"], strict["threshold"]) == (10, 0.3)
    nothing_meets_floor = M.select(rows, replace(settings, min_specificity=0.99))
    assert not nothing_meets_floor["specificity_floor_met"] and nothing_meets_floor["threshold"] == 0.1


def test_too_few_patients_is_a_clear_error(data):
    with pytest.raises(M.TrainingError, match="patients cannot be split"):
        M.splits_for(data.subset(np.arange(6)), 5, seed=0)


def test_nested_cv_scores_every_roi_once_on_an_outer_test_fold(data):
    result = M.nested_cv(data, TINY)
    assert np.isfinite(result.scores).all() and np.isfinite(result.baseline_scores).all()
    assert set(result.fold.tolist()) == {0, 1}
    for f in (0, 1):  # patients of an outer test fold were not in its training part
        test_patients = set(data.groups[result.fold == f])
        assert not test_patients & set(data.groups[result.fold != f])
    assert M.auc(data.y, result.scores) > 0.75  # the class shift is easy to find


# --------------------------------------------------------------------------- bundle

def _content_hash(bundle_dir) -> str:
    lgb_text = (bundle_dir / LIGHTGBM_FILE).read_bytes()
    arrays = json.loads((bundle_dir / AGGREGATOR_FILE).read_text())
    digest = hashlib.sha256(lgb_text)
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.asarray(arrays[key]["data"]).tobytes())
    return digest.hexdigest()


def test_same_seed_gives_an_identical_bundle_and_another_seed_does_not(data, seg_weights, tmp_path):
    a = save_bundle(make_bundle(data, seg_weights, seed=3), tmp_path / "a")
    b = save_bundle(make_bundle(data, seg_weights, seed=3), tmp_path / "b")
    c = save_bundle(make_bundle(data, seg_weights, seed=4), tmp_path / "c")
    assert _content_hash(a) == _content_hash(b) != _content_hash(c)
    assert (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    assert ClassifierBundle.load(a).sha256 == ClassifierBundle.load(b).sha256 != ClassifierBundle.load(c).sha256


def test_bundle_round_trip(data, seg_weights, tmp_path):
    bundle = make_bundle(data, seg_weights)
    path = save_bundle(bundle, tmp_path / "model")
    loaded = ClassifierBundle.load(path)
    assert loaded.sha256 == bundle.sha256 == hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    # hashed once per bundle (every study quotes it): the same string object each time
    assert loaded.identity().sha256 is loaded.sha256 is loaded.sha256
    x = bundle.vectors(data.rois[:10])
    np.testing.assert_array_equal(loaded.predict(x), bundle.predict(x))
    assert loaded.feature_names == bundle.feature_names and len(loaded.feature_names) == 3 * 4 + 67
    first = loaded.score(data.rois[0])
    assert 0 <= first.score <= 1 and first.decision == ("actionable" if first.score >= 0.4 else "benign")
    assert first.top_features and all(c.feature in loaded.feature_names for c in first.top_features)
    # SHAP values: the contributions and the bias add up to the log-odds of the score
    contrib = loaded.contributions(x[:1])[0]
    assert abs(1 / (1 + np.exp(-contrib.sum())) - loaded.predict(x[:1])[0]) < 1e-6
    identity = loaded.identity()
    assert (identity.name, identity.version, identity.sha256) == ("unit-test", "0.0.1", bundle.sha256)
    assert identity.not_for_clinical_use
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["not_for_clinical_use"] is True and "NOT FOR CLINICAL USE" in manifest["notice"]
    assert segmentation_identity(loaded.segmentation_model()) == manifest["segmentation_model"]["sha256"]
    assert loaded.hdog_params == HDoGParams() and manifest["segmentation_model"]["settings"] == segmentation_settings()


def test_bundle_records_its_hdog_parameters_in_the_manifest_and_the_identity(data, seg_weights, tmp_path):
    strict = HDoGParams(dog_threshold=0.008)
    default = ClassifierBundle.load(save_bundle(make_bundle(data, seg_weights), tmp_path / "default"))
    other = ClassifierBundle.load(save_bundle(make_bundle(data, seg_weights, hdog_params=strict), tmp_path / "other"))
    manifest = json.loads((tmp_path / "other" / MANIFEST).read_text())
    assert other.hdog_params == strict and manifest["segmentation_model"]["settings"]["hdog"]["dog_threshold"] == 0.008
    cnn = other.segmentation_model()
    assert other.segmentation_sha256 == segmentation_identity(cnn, strict) == manifest["segmentation_model"]["sha256"]
    assert default.segmentation_sha256 == segmentation_identity(cnn) != other.segmentation_sha256
    assert default.sha256 != other.sha256  # what the SRs quote tells the two apart


def test_the_shipped_bundle_loads_and_its_segmentation_identity_matches():
    """The demonstration bundle records the default settings and the identity they give with its
    CNN; the value is pinned: a change to the identity formula or a default must be deliberate
    (it changes the manifest, so the bundle SHA-256 every SR quotes)."""
    from analysis.classify import load_bundle

    bundle = load_bundle(None)
    assert bundle.hdog_params == HDoGParams()
    assert bundle.segmentation_info["settings"] == segmentation_settings()
    identity = segmentation_identity(bundle.segmentation_model(), bundle.hdog_params)
    assert identity == bundle.segmentation_sha256 == "9eed82e485360d8ea116188d085fd75f42f7758815b51fa812981a4d674da79a"
    assert bundle.sha256 == "0cd04fbb5a3f81ff231611d74686e0dfb94468a435a3a17651ea899f10745569"
    # one operating point: the bundle segments at its CNN's own calibrated threshold, as the SEG,
    # `calcnode segment` and the cluster detector do
    from analysis.segmentation.cnn import SegmentationModel
    from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL
    shipped = SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL)
    assert bundle.segmentation_model().params == shipped.params
    assert bundle.segmentation_model().sha256 == shipped.sha256


@pytest.fixture(scope="module")
def saved_bundle(data, seg_weights, tmp_path_factory):
    return save_bundle(make_bundle(data, seg_weights), tmp_path_factory.mktemp("bundle") / "model")


@pytest.fixture
def bundle_copy(saved_bundle, tmp_path):
    return Path(shutil.copytree(saved_bundle, tmp_path / "model"))


def _edit_manifest(path, change):
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, reason", [
    (lambda m: m.update(format_version=1), "version"),  # before the segmentation settings were recorded
    (lambda m: m["segmentation_model"].pop("settings"), "malformed"),
    (lambda m: m["segmentation_model"]["settings"]["hdog"].update(dog_threshold="high"), "malformed"),
    (lambda m: m["segmentation_model"]["settings"]["hdog"].update(sigma_ratio=0.5), "malformed"),
    (lambda m: m["feature_names"].__setitem__(0, "foreground.cluster99"), "feature_mismatch"),
    (lambda m: m["feature_extraction"]["params"].update(bin_width=10.0), "feature_mismatch"),
    (lambda m: m["files"].update({LIGHTGBM_FILE: "0" * 64}), "integrity"),
])
def test_load_refuses_a_bundle_with_another_version_or_feature_list(bundle_copy, change, reason):
    path = bundle_copy
    ClassifierBundle.load(path)  # fine as written
    _edit_manifest(path, change)
    with pytest.raises(BundleError) as info:
        ClassifierBundle.load(path)
    assert info.value.reason == reason


def test_load_refuses_a_booster_with_other_features(bundle_copy):
    path = bundle_copy
    text = (path / LIGHTGBM_FILE).read_text().replace("foreground.cluster00", "foreground.clusterXX")
    (path / LIGHTGBM_FILE).write_text(text)
    _edit_manifest(path, lambda m: m["files"].update(
        {LIGHTGBM_FILE: hashlib.sha256(text.encode()).hexdigest()}))
    with pytest.raises(BundleError, match="LightGBM model"):
        ClassifierBundle.load(path)


def test_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="not a classifier bundle"):
        ClassifierBundle.load(tmp_path)


# --------------------------------------------------------------------------- not assessable

@pytest.mark.parametrize("keep, status, reason", [
    (0, "not_assessable", "no calcification in the ROI; at least 2 are needed"),
    (1, "not_assessable", "1 calcification in the ROI; at least 2 are needed"),
    (6, "ok", None),
])
def test_rois_with_fewer_than_two_calcifications_are_not_assessable(saved_bundle, keep, status, reason):
    bundle = ClassifierBundle.load(saved_bundle)
    pixels, roi, labels = synthetic_roi(n_calcs=6, size_mm=8.0, roi_mm=6.0, seed=1)
    labels = np.where(labels <= keep, labels, 0).astype(np.int32)
    before = (pixels.copy(), labels.copy())
    found = analyze_roi(pixels, (0.07, 0.07), 12, roi, labels, bundle)
    assert found.status == status and found.reason == reason
    assert found.n_calcifications == keep
    if status == "ok":
        assert 0 <= found.score.score <= 1 and found.score.threshold == bundle.threshold
    else:
        assert found.score is None
    np.testing.assert_array_equal(before[0], pixels)  # pure: inputs untouched
    np.testing.assert_array_equal(before[1], labels)
