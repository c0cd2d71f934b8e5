"""`calcnode batch` on a Dask LocalCluster of 2 worker processes, with the real analysis.

The same scores as `calcnode analyze` per study; a worker killed mid-run loses no study; a
re-run recomputes nothing that is done; a manifest with bad rows gives failures, not a crash;
training's feature extraction gives the same features on Dask as in its own process pool.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from conftest import CALCNODE, ROOT

SCORE = "Actionable calcification cluster score"


def run_batch(*args, check=True) -> tuple[dict, subprocess.CompletedProcess]:
    result = subprocess.run(CALCNODE + ["batch", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result


def table(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def sr_scores(path: Path) -> list[float]:
    """The exact (FLOAT) score values of a TID 1500 SR, in document order."""
    out = []

    def walk(items):
        for item in items:
            name = item.get("ConceptNameCodeSequence")
            if name and name[0].CodeMeaning == SCORE:
                out.append(float(item.MeasuredValueSequence[0].FloatingPointValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(pydicom.dcmread(path).ContentSequence)
    return out


def markers(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in sorted((out / "studies").glob("*/done.json"))}


@pytest.fixture(scope="module")
def synth3(tmp_path_factory) -> Path:
    """Three simulated studies (4 MG images each, GSPS ROIs on some), 768 x 640."""
    out = tmp_path_factory.mktemp("synth3")
    subprocess.run(CALCNODE + ["synth", "--out", str(out), "--cases", "3", "--size", "768x640", "--seed", "21",
                               "--quiet", "--workers", "1"], cwd=ROOT, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(local)
    try:
        yield client
    finally:
        client.close()
        local.close()


@pytest.fixture(scope="module")
def first_run(synth3, cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "out"
    started = time.monotonic()
    summary, result = run_batch("--data", synth3, "--out", out, "--scheduler", cluster.scheduler.address)
    return {"out": out, "summary": summary, "stderr": result.stderr, "seconds": time.monotonic() - started}


def test_batch_gives_the_scores_of_calcnode_analyze(synth3, first_run, tmp_path):
    out, summary = first_run["out"], first_run["summary"]
    assert summary["studies"] == summary["computed"] == 3 and summary["failures"] == 0
    rows = table(out / "results.csv")
    assert len(rows) == summary["rois"] > 3 and {r["status"] for r in rows} <= {"ok", "not_assessable"}
    assert "batch: [" in first_run["stderr"]  # the progress line

    images = sorted((synth3 / "dicom").glob("*/MG_*.dcm"))
    rois = sorted((synth3 / "dicom").glob("*/PR_*.dcm")) + sorted((synth3 / "dicom").glob("*/SEG_*.dcm"))
    ref = tmp_path / "analyze"
    analyzed = subprocess.run(CALCNODE + ["analyze", *map(str, images), "--roi", *map(str, rois), "--json",
                                          "--out", str(ref)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert analyzed.returncode == 0, analyzed.stderr[-3000:]
    # one record per ROI (drawn or detected cluster); a view where no cluster was detected has a
    # record without ROI in `analyze --json` and no row in results.csv
    expected = {(r["sop_instance_uid"], r["roi_id"]): r for r in map(json.loads, analyzed.stdout.splitlines())
                if r["roi_id"] is not None}
    assert set(expected) == {(r["image_sop_instance_uid"], r["roi_id"]) for r in rows}
    for row in rows:
        want = expected[(row["image_sop_instance_uid"], row["roi_id"])]
        assert (row["status"], int(row["n_calcifications"]), row["decision"] or None, float(row["threshold"])) == \
            (want["status"], want["calcifications"], want["decision"], want["threshold"])
        if want["score"] is not None:  # analyze --json rounds to 6 decimals
            assert round(float(row["score"]), 6) == want["score"]

    # the same objects (deterministic UIDs), and the SRs' exact scores agree within 1e-9
    written = {p.name: p for p in (out / "studies").glob("*/*.dcm")}
    assert set(written) == {p.name for p in ref.glob("*.dcm")}
    for name in (n for n in written if n.startswith("SR-")):
        ours, theirs = sr_scores(written[name]), sr_scores(ref / name)
        assert len(ours) == len(theirs) and all(abs(a - b) <= 1e-9 for a, b in zip(ours, theirs))
    assert len([n for n in written if n.startswith("SR-")]) == 3


def test_a_worker_killed_mid_run_loses_no_study(synth3, cluster, first_run, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(CALCNODE + ["batch", "--data", str(synth3), "--out", str(out), "--scheduler",
                                        cluster.scheduler.address], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        busy = []
        while not busy and time.monotonic() < deadline and proc.poll() is None:
            busy = [w for w, keys in cluster.processing().items()
                    if any(str(k).startswith("calcnode-study-") for k in keys)]
            time.sleep(0.2)
        assert busy, "no study task ever ran"
        time.sleep(2.0)  # well into the analysis (a study takes ~10 s here)
        [pid] = cluster.run(os.getpid, workers=busy[:1]).values()
        os.kill(pid, 9)  # the worker process dies mid-study (its nanny starts a new one)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["computed"] == 3 and summary["failures"] == 0
    assert markers(out).keys() == markers(first_run["out"]).keys()
    assert not list((out / "studies").glob(".*"))  # the killed attempt's partial folder is gone
    key = ("image_sop_instance_uid", "roi_id", "status", "n_calcifications", "score")
    assert [[r[k] for k in key] for r in table(out / "results.csv")] == \
        [[r[k] for k in key] for r in table(first_run["out"] / "results.csv")]
    for name in (p.name for p in (first_run["out"] / "studies").glob("*/*.dcm")):
        assert list((out / "studies").glob(f"*/{name}")), name


def test_a_rerun_skips_done_studies_and_recomputes_only_what_is_not(synth3, cluster, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run["out"], out)
    before = markers(out)
    summary, _ = run_batch("--data", synth3, "--out", out, "--scheduler", cluster.scheduler.address)
    assert (summary["computed"], summary["skipped_done"], summary["failures"]) == (0, 3, 0)
    assert markers(out) == before  # nothing rewritten
    assert table(out / "results.csv") == table(first_run["out"] / "results.csv")  # the whole run's table

    # a study whose marker is gone (killed before it was written) is the only one computed again
    gone = sorted(before)[1]
    (out / "studies" / gone / "done.json").unlink()
    summary, _ = run_batch("--data", synth3, "--out", out, "--scheduler", cluster.scheduler.address)
    assert (summary["computed"], summary["skipped_done"]) == (1, 2)
    after = markers(out)
    assert after.keys() == before.keys()
    assert {s for s in before if after[s] != before[s]} == {gone}
    assert table(out / "results.csv") == table(first_run["out"] / "results.csv")


def test_manifest_rows_that_cannot_be_used_are_failures_not_a_crash(synth3, cluster, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run["out"], out)
    cases = sorted((synth3 / "dicom").iterdir())
    done = cases[0]
    (tmp_path / "notes.txt").write_text("not DICOM")
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["images", "rois"])
        w.writerow([";".join(str(p) for p in sorted(done.glob("MG_*.dcm"))),
                    ";".join(str(p) for p in sorted(done.glob("PR_*.dcm")))])
        w.writerow(["missing.dcm", ""])
        w.writerow(["notes.txt", ""])
        w.writerow(["", str(sorted(cases[1].glob("PR_*.dcm"))[0])])  # ROI objects without their images
    summary, result = run_batch("--manifest", manifest, "--out", out, "--scheduler", cluster.scheduler.address,
                                check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (summary["computed"], summary["skipped_done"], summary["failures"]) == (0, 1, 3)
    failures = table(out / "failures.csv")
    assert sorted(f["stage"] for f in failures) == ["inputs"] * 3
    reasons = " ".join(f["reason"] for f in failures)
    assert "no MG image" in reasons and "not a readable DICOM file" in reasons
    assert {r["study_instance_uid"] for r in table(out / "results.csv")} == \
        {str(pydicom.dcmread(next(done.glob("MG_*.dcm")), stop_before_pixels=True).StudyInstanceUID)}


def test_training_features_on_dask_equal_the_local_ones(synth3, cluster):
    """`calcnode train/evaluate --scheduler`: the same extract_features code path on a Dask executor."""
    import numpy as np

    from analysis.classify import segmentation_identity
    from analysis.segmentation.cnn import SegmentationModel
    from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL
    from training.classifier.features import extract_features, use_executor
    from training.classifier.labels import match_outcomes

    matched, _ = match_outcomes([synth3], synth3 / "labels.csv")
    subset = [m for m in matched if m.image.sop_instance_uid == matched[0].image.sop_instance_uid] + \
        [m for m in matched if m.image.sop_instance_uid != matched[0].image.sop_instance_uid][:1]
    sha = segmentation_identity(SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL))
    local = extract_features(subset, DEFAULT_SEGMENTATION_MODEL, seg_sha256=sha, workers=1, progress=False)
    with use_executor(cluster.get_executor(pure=False)):
        remote = extract_features(subset, DEFAULT_SEGMENTATION_MODEL, seg_sha256=sha, workers=1, progress=False)
    assert len(local) == len(remote) == len(subset) >= 2
    for a, b in zip(local, remote):
        assert a.error is None and b.error is None
        da, db = a.features.to_dict(), b.features.to_dict()
        assert da.keys() == db.keys()
        for k in da:
            np.testing.assert_array_equal(np.asarray(da[k]), np.asarray(db[k]), err_msg=k)
