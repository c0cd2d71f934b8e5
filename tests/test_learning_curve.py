"""`calcnode learning-curve` on the small simulated world of tests/test_train_classifier.py, and
patient grouping when several data folders (each with its own labels.csv) are combined."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis.classify import SEGMENTATION_FILE, segmentation_identity
from analysis.segmentation.cnn import SegmentationModel
from test_train_classifier import TRAIN_ARGS, World, classifier_world, run
from training.classifier.labels import default_labels, match_outcomes
from training.classifier.learning_curve import patient_subset
from training.classifier.pipeline import load_data

CURVE_ARGS = ["--grid", "tiny", "--folds", "2", "--outer-folds", "2", "--bootstrap", "200", "--workers", "1",
              "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return classifier_world(tmp_path_factory)


def _usable(world: World, data_dirs, labels) -> list:
    """The usable ROIs (>= 2 calcifications) with the bundle's CNN, read from the feature cache."""
    cnn = world.bundle / SEGMENTATION_FILE
    data = load_data(data_dirs, labels, cnn, segmentation_identity(SegmentationModel.load(cnn)),
                     cache_dir=Path(data_dirs[0]) / ".calcnode-cache" / "features", workers=1, progress=False,
                     log=lambda _: None)
    return data.usable


def _subsets(path: Path) -> dict:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    out: dict = {}
    for r in rows:
        out.setdefault((int(r["n"]), int(r["repeat"])), []).append(r)
    return out


def test_patient_subset_takes_whole_patients_near_n_with_the_pools_prevalence():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"P{i:03d}" for i in range(200)], rng.integers(1, 4, 200))
    y = np.isin(groups, [f"P{i:03d}" for i in range(0, 200, 3)]).astype(int)  # a third of the patients
    for n in (50, 120, 300):
        index = patient_subset(y, groups, n, np.random.default_rng([0, n, 0]))
        chosen = set(groups[index])
        assert all(set(np.flatnonzero(groups == g)) <= set(index.tolist()) for g in chosen)  # whole patients
        assert abs(len(index) - n) <= 3
        assert abs(y[index].mean() - y.mean()) < 0.08
    a = patient_subset(y, groups, 120, np.random.default_rng([0, 120, 0]))
    assert np.array_equal(a, patient_subset(y, groups, 120, np.random.default_rng([0, 120, 0])))  # seeded
    assert not np.array_equal(a, patient_subset(y, groups, 120, np.random.default_rng([0, 120, 1])))


def test_learning_curve_reports_each_size_beside_the_bayes_auc_and_skips_what_the_data_cannot(world, tmp_path):
    usable = _usable(world, [world.data], world.data / "labels.csv")
    pool = len(usable)
    out = tmp_path / "curve"
    sizes = [pool - 4, "all", pool + 40]   # "all": the whole pool
    result = run("learning-curve", "--data", world.data, "--sizes", ",".join(map(str, sizes)), "--out", out,
                 "--seg-model", world.bundle / SEGMENTATION_FILE, "--repeats", "2", *CURVE_ARGS)
    report = json.loads((out / "learning_curve.json").read_text())
    assert json.loads(result.stdout)["skipped"] == report["skipped"]
    assert report["not_for_clinical_use"] is True and "NOT FOR CLINICAL USE" in report["notice"]
    assert report["sizes_requested"] == [pool - 4, pool + 40, "all"]
    assert report["data"]["rois_used"] == pool
    # the size beyond the data is reported, with the reason
    beyond = [k for k in report["skipped"] if k["n"] == pool + 40]
    assert beyond and f"only {pool} usable ROIs" in beyond[0]["reason"] and "repeat" not in beyond[0]
    by_n = {e["n"]: e for e in report["curve"]}
    assert pool in by_n and by_n[pool]["repeats"] == 1  # the whole pool is drawn once
    assert set(by_n) | {k["n"] for k in report["skipped"]} == {pool - 4, pool, pool + 40}
    for entry in report["curve"]:
        for r in entry["runs"]:
            for key in ("auc", "bayes_auc", "mean_std_auc"):
                value, (lo, hi) = r[key]["value"], r[key]["ci95"]
                assert 0 <= lo <= value <= hi <= 1, (entry["n"], key)
    # every subset's rows: whole patients, and the Bayes AUC is sklearn's on exactly those rows
    bayes_of = {e.labelled.key: e.labelled.row.bayes_score for e in usable}
    rois_of = Counter(e.labelled.row.patient_key for e in usable)
    subsets = _subsets(out / "learning_curve_subsets.csv")
    assert {key for key in subsets} == {(e["n"], r["repeat"]) for e in report["curve"] for r in e["runs"]}
    for entry in report["curve"]:
        for r in entry["runs"]:
            rows = subsets[(entry["n"], r["repeat"])]
            assert len(rows) == r["rois"] and len({x["roi"] for x in rows}) == len(rows)
            assert Counter(x["patient_id"] for x in rows) == {p: rois_of[p] for p in {x["patient_id"] for x in rows}}
            assert all(float(x["bayes_score"]) == pytest.approx(bayes_of[x["roi"]], abs=1e-6) for x in rows)
            y = [x["outcome"] == "actionable" for x in rows]
            assert r["bayes_auc"]["value"] == pytest.approx(roc_auc_score(y, [float(x["bayes_score"]) for x in rows]))
            assert r["auc"]["value"] == pytest.approx(roc_auc_score(y, [float(x["score"]) for x in rows]), abs=1e-5)
    # a proper subset: two different draws of whole patients
    a, b = (subsets[(pool - 4, k)] for k in (0, 1))
    assert {x["roi"] for x in a} != {x["roi"] for x in b} and len(a) < pool
    md = (out / "learning_curve.md").read_text()
    assert "NOT FOR CLINICAL USE" in md and "Bayes-optimal AUC, same ROIs" in md and f"n = {pool + 40}" in md
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_data_folders_read_their_own_labels_and_keep_their_patients_apart(world, tmp_path):
    """Every synth folder numbers its patients from SYNTH0001: combined, the folders' patients
    must stay different cross-validation groups (in train as in the learning curve)."""
    other = tmp_path / "other"
    run("synth", "--out", other, "--cases", 4, "--seed", 13, "--size", "768x640", "--quiet")
    labels = default_labels([world.data, other])
    assert labels == [world.data / "labels.csv", other / "labels.csv"]
    matched, problems = match_outcomes([world.data, other], labels)
    assert not problems
    per_table = {}
    for m in matched:
        per_table.setdefault(m.row.table, set()).add(m.row.patient_id)
    assert set(per_table) == {world.data.name, "other"}
    shared = per_table[world.data.name] & per_table["other"]
    assert shared  # same IDs in both tables ...
    keys = {m.row.patient_key for m in matched}
    assert len(keys) == sum(len(v) for v in per_table.values())  # ... yet different patients
    # a single table keeps the patient IDs as written (bundles trained on one folder do not change)
    single, _ = match_outcomes(world.data, world.data / "labels.csv")
    assert {m.row.patient_key for m in single} == per_table[world.data.name]

    out = tmp_path / "curve"
    run("learning-curve", "--data", world.data, "--data", other, "--sizes", "10000", "--out", out,
        "--seg-model", world.bundle / SEGMENTATION_FILE, *CURVE_ARGS)
    report = json.loads((out / "learning_curve.json").read_text())
    usable = _usable(world, [world.data, other], labels)
    assert report["data"]["rois_used"] == len(usable) > len(_usable(world, [world.data], labels[:1]))
    assert report["data"]["patients"] == len({e.labelled.row.patient_key for e in usable})
    assert [t["file"] for t in report["data"]["labels_files"]] == [f"{world.data.name}/labels.csv",
                                                                  "other/labels.csv"]
    assert report["curve"] == [] and report["skipped"][0]["n"] == 10000
    # calcnode train reads both tables too, with the same patient groups (features cached by the curve)
    trained = run("train", "--data", world.data, "--data", other, "--out", tmp_path / "model", "--seg-model",
                  world.cnn, "--seed", 0, *TRAIN_ARGS, "--outer-folds", "0", "--workers", "1")
    summary = json.loads(trained.stdout)["data"]
    assert summary["rois_used"] == len(usable) and summary["patients"] == report["data"]["patients"]
    assert summary["labels_file"] == f"{world.data.name}/labels.csv, other/labels.csv"


def test_sizes_take_all_for_every_usable_roi():
    """'all' is accepted beside integers (the largest point whatever the data hold); junk is refused."""
    from dicom_node.commands.learning_curve import _sizes

    assert _sizes("100,all") == [100, "all"]
    with pytest.raises(SystemExit):
        _sizes("1,all")
    with pytest.raises(SystemExit):
        _sizes("some")
