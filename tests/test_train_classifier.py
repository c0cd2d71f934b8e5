"""`calcnode train` and `calcnode evaluate` end to end on a small simulated data set.

The world (a simulated data set, a 1-epoch segmentation CNN and a bundle trained with the tiny
grid) is built once per session by :func:`classifier_world`, and reused by tests/test_analyze.py.
"""
from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from analysis.classify import AGGREGATOR_FILE, LIGHTGBM_FILE, MANIFEST, ClassifierBundle, segmentation_identity
from analysis.segmentation import HDoGParams
from analysis.segmentation.cnn import SegmentationModel
from analysis.segmentation.settings import segmentation_settings
from conftest import CALCNODE, ROOT
from training.classifier.labels import match_outcomes

# A 1-epoch net's calibrated threshold can reject every candidate: the bundle's copy of the CNN
# gets HDoGReg's 10^-3.5, which keeps enough objects per ROI for the classifier to learn from.
SEG_THRESHOLD = 10 ** -3.5
TRAIN_ARGS = ["--grid", "tiny", "--folds", "2", "--outer-folds", "2", "--bootstrap", "200", "--workers", "2",
              "--name", "test-classifier", "--version", "0.0.1", "--seg-threshold", str(SEG_THRESHOLD)]


def run(*args, check=True):
    result = subprocess.run(CALCNODE + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@dataclass(frozen=True)
class World:
    data: Path
    cnn: Path
    bundle: Path
    report: Path
    train_stdout: str
    train_stderr: str


_WORLD: dict = {}


def classifier_world(tmp_path_factory) -> World:
    """Simulated data (8 cases, 768 x 640), a 1-epoch CNN, a bundle; built once per session."""
    if "world" not in _WORLD:
        root = tmp_path_factory.mktemp("classifier-world")
        data, cnn_data = root / "data", root / "cnn-data"
        run("synth", "--out", data, "--cases", 8, "--seed", 11, "--size", "768x640", "--quiet")
        run("synth", "--out", cnn_data, "--cases", 2, "--seed", 12, "--size", "768x640", "--quiet")
        cnn = root / "seg.pt"
        # A 1-epoch net predicts below the 0.7 outline level everywhere: HDoGReg's whole-candidate
        # rule (with --seg-threshold 10^-3.5 in TRAIN_ARGS) keeps candidates for the classifier to learn
        run("train-seg", "--data", cnn_data, "--out", cnn, "--max-epochs", 1, "--seed", 0,
            "--outline-level", "none")
        bundle = root / "model"
        result = run("train", "--data", data, "--out", bundle, "--seg-model", cnn, "--seed", 0, *TRAIN_ARGS)
        _WORLD["world"] = World(data, cnn, bundle, root / "model-report", result.stdout, result.stderr)
    return _WORLD["world"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return classifier_world(tmp_path_factory)


def test_train_writes_a_bundle_that_loads_and_says_not_for_clinical_use(world):
    bundle = ClassifierBundle.load(world.bundle)
    manifest = json.loads((world.bundle / MANIFEST).read_text())
    assert bundle.name == "test-classifier" and bundle.version == "0.0.1"
    assert manifest["not_for_clinical_use"] is True and bundle.identity().not_for_clinical_use
    assert "calcnode synth (simulated, not patients): seed 11, 8 cases" in bundle.training_data
    cnn = bundle.segmentation_model()
    assert segmentation_identity(cnn) == manifest["segmentation_model"]["sha256"] == bundle.segmentation_sha256
    # trained with the default HDoG parameters: recorded, and part of the identity
    assert bundle.hdog_params == HDoGParams()
    assert manifest["segmentation_model"]["settings"] == segmentation_settings(HDoGParams())
    assert segmentation_identity(cnn, HDoGParams(dog_threshold=0.007)) != bundle.segmentation_sha256
    assert cnn.params.prediction_threshold == SEG_THRESHOLD == manifest["segmentation_model"]["prediction_threshold"]
    assert cnn.sha256 == SegmentationModel.load(world.cnn).sha256 == manifest["segmentation_model"]["weights_sha256"]
    assert manifest["threshold"] in (0.3, 0.5) and manifest["aggregation"] == {"kind": "kmeans_histogram", "k": 4,
                                                                                 "seed": 0}
    assert len(manifest["feature_names"]) == 3 * 4 + 67
    summary = manifest["training_summary"]
    assert summary["data"]["rois_used"] == summary["data"]["actionable"] + summary["data"]["benign"] > 10
    assert "NOT FOR CLINICAL USE" in world.train_stderr
    assert sum(p.stat().st_size for p in world.bundle.iterdir()) < 5e6


def test_training_report_has_metrics_with_intervals_figures_and_the_bayes_auc(world):
    report = json.loads((world.report / "report.json").read_text())
    stdout = json.loads(world.train_stdout)
    assert stdout["model"]["sha256"] == ClassifierBundle.load(world.bundle).sha256 == report["model"]["sha256"]
    nested = report["nested_cv"]
    used = report["data"]["rois_used"]
    for method in ("kmeans", "mean_std"):
        m = nested[method]["metrics"]
        for name in ("accuracy", "sensitivity", "specificity", "f1", "ppv", "auc"):
            value, (lo, hi) = m[name]["value"], m[name]["ci95"]
            assert value is not None and lo is not None and lo <= hi and 0 <= lo and hi <= 1, (method, name)
        assert sum(nested[method]["confusion"].values()) == used
    bayes = nested["bayes"]["auc"]
    assert 0 <= bayes["ci95"][0] <= bayes["value"] <= bayes["ci95"][1] <= 1
    # the pooled confusion matrix agrees with the per-ROI predictions
    with open(world.report / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == used
    tp = sum(r["outcome"] == "actionable" and r["decision"] == "actionable" for r in rows)
    assert tp == nested["kmeans"]["confusion"]["tp"]
    labels = {(r["image_sop_instance_uid"], r["roi_id"]): float(r["bayes_score"])
              for r in csv.DictReader(open(world.data / "labels.csv"))}
    assert {float(r["bayes_score"]) for r in rows} <= set(labels.values())
    md = (world.report / "report.md").read_text()
    assert "Bayes-optimal AUC on the same ROIs" in md and "mean/std baseline" in md and "NOT FOR CLINICAL USE" in md
    for png in ("roc.png", "importance.png"):
        with Image.open(world.report / png) as image:
            image.verify()
        with Image.open(world.report / png) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def _bundle_content(path: Path) -> tuple[bytes, bytes, bytes]:
    return ((path / LIGHTGBM_FILE).read_bytes(), (path / AGGREGATOR_FILE).read_bytes(),
            (path / MANIFEST).read_bytes())


def test_retraining_reuses_the_feature_cache_and_the_same_seed_gives_the_same_bundle(world, tmp_path):
    again = run("train", "--data", world.data, "--out", tmp_path / "again", "--seg-model", world.cnn, "--seed", 0,
                *TRAIN_ARGS)
    used = json.loads(again.stdout)["data"]["rows_matched"]
    assert f"{used}/{used} ROIs ({used} cached)" in again.stderr
    assert _bundle_content(tmp_path / "again") == _bundle_content(world.bundle)
    other = run("train", "--data", world.data, "--out", tmp_path / "other", "--seg-model", world.cnn, "--seed", 1,
                *TRAIN_ARGS, "--outer-folds", "0")
    assert _bundle_content(tmp_path / "other")[0] != _bundle_content(world.bundle)[0]
    assert json.loads(other.stdout)["nested_cv_auc"] is None  # --outer-folds 0 skips the nested CV


def test_the_feature_cache_key_and_the_segmentation_follow_the_hdog_parameters(world, tmp_path, monkeypatch):
    """Other HDoG parameters: another cache key, and the images are segmented again with them
    (cached features of the default parameters are not reused)."""
    from analysis.segmentation import pipeline
    from training.classifier import features as F

    matched, _ = match_outcomes(world.data, world.data / "labels.csv")
    subset = [m for m in matched if m.image.sop_instance_uid == matched[0].image.sop_instance_uid]
    cnn = SegmentationModel.load(world.cnn)
    strict = HDoGParams(dog_threshold=0.012)
    roi, uid, identity = subset[0].roi, subset[0].image.sop_instance_uid, segmentation_identity(cnn)
    key = F.cache_key(uid, roi, identity, "h")
    assert key == F.cache_key(uid, roi, identity, "h", HDoGParams()) == F.cache_key(uid, roi, identity, "h")
    assert F.cache_key(uid, roi, identity, "h", strict) != key  # even with the same identity passed
    assert F.cache_key(uid, roi, segmentation_identity(cnn, strict), "h", strict) != key

    seen = []
    real = pipeline.segment
    monkeypatch.setattr(pipeline, "segment", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    cache = F.FeatureCache(tmp_path / "cache")

    def extract(hdog):
        return F.extract_features(subset, world.cnn, seg_sha256=segmentation_identity(cnn, hdog), hdog_params=hdog,
                                  cache=cache, workers=1, progress=False)

    first = extract(HDoGParams())
    assert seen == [HDoGParams()] and not any(e.cached for e in first)
    assert any(e.features is not None for e in first)
    again = extract(HDoGParams())
    assert len(seen) == 1 and all(e.cached for e in again if e.features is not None)
    third = extract(strict)
    assert seen[1:] == [strict] and not any(e.cached for e in third)


def test_evaluate_scores_a_labelled_set_with_the_same_report(world, tmp_path):
    result = run("evaluate", "--model", world.bundle, "--data", world.data, "--out", tmp_path / "eval",
                 "--bootstrap", 200)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert json.loads(result.stdout)["model"]["sha256"] == ClassifierBundle.load(world.bundle).sha256
    bundle = ClassifierBundle.load(world.bundle)
    with open(tmp_path / "eval" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    decisions = [float(r["score"]) >= bundle.threshold for r in rows]
    assert [r["decision"] == "actionable" for r in rows] == decisions
    c = report["confusion"]
    assert c["tp"] + c["fp"] == sum(decisions) and sum(c.values()) == len(rows) == report["data"]["rois_used"]
    for name in ("accuracy", "sensitivity", "specificity", "f1", "ppv", "auc"):
        assert report["metrics"][name]["ci95"][0] is not None
    assert report["bayes"]["auc"]["value"] is not None
    with Image.open(tmp_path / "eval" / "roc.png") as image:
        assert image.format == "PNG"
    used = report["data"]["rows_matched"]
    assert f"{used}/{used} ROIs ({used} cached)" in result.stderr  # same CNN and features: nothing recomputed


def test_outcome_rows_match_by_number_by_reader_id_and_report_the_rest(world, tmp_path):
    with open(world.data / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    rows[0] = dict(rows[0], roi_id="ann1-obj1")  # the ROI reader's id works too
    bad = dict(rows[1], roi_id="7")
    missing = dict(rows[1], image_sop_instance_uid="1.2.3.4")
    labels = world.data / "labels-edited.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows + [bad, missing])
    try:
        matched, problems = match_outcomes(world.data, labels)
    finally:
        labels.unlink()
    assert len(matched) == len(rows)
    assert matched[0].roi.roi_id == "ann1-obj1" and matched[0].row.image_uid == rows[0]["image_sop_instance_uid"]
    assert [m.row.outcome for m in matched] == [int(r["outcome"] == "actionable") for r in rows]
    assert len(problems) == 2
    assert "no ROI '7'" in problems[0] and "not in the data folder" in problems[1]


def test_train_errors_are_one_line_without_traceback(world, tmp_path):
    result = run("train", "--data", world.data, "--labels", tmp_path / "nope.csv", "--out", tmp_path / "m",
                 "--seg-model", world.cnn, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "nope.csv: no such outcome table" in result.stderr
    (tmp_path / "bad.csv").write_text("patient_id,roi_id\nP1,1\n")
    result = run("train", "--data", world.data, "--labels", tmp_path / "bad.csv", "--out", tmp_path / "m",
                 "--seg-model", world.cnn, check=False)
    assert result.returncode == 1 and "lacks the column(s) image_sop_instance_uid, outcome" in result.stderr
    result = run("evaluate", "--model", tmp_path, "--data", world.data, "--out", tmp_path / "r", check=False)
    assert result.returncode == 1 and "not a classifier bundle" in result.stderr and "Traceback" not in result.stderr
