"""A study is analysed seconds after its association is released, not after stable_seconds.

A real ``calcnode serve`` (the node tests' stand-in analysis) and real peers: DCMTK ``storescu``
sends a study over one association and releases it; a pynetdicom SCU in this process keeps its
association open (or aborts it), which leaves the study to ``assembly.stable_seconds``.
"""
from __future__ import annotations

import subprocess
import time

import pydicom
import pytest

from conftest import CALCNODE, ROOT, free_port
from node_helpers import node_env, node_sections, state_db, wait_until, write_config

__all__ = ["node_env"]


@pytest.fixture(scope="module")
def study_files(tmp_path_factory) -> list:
    out = tmp_path_factory.mktemp("synth-assoc")
    subprocess.run(CALCNODE + ["synth", "--out", str(out), "--cases", "1", "--size", "768x640", "--seed", "4",
                               "--quiet", "--workers", "1"], cwd=ROOT, check=True, capture_output=True)
    files = sorted((out / "dicom" / "SYNTH0001").glob("*.dcm"))
    assert any(f.name.startswith("PR_") for f in files)
    return files


def start(start_node, tmp_path, *, stable: float, grace: float = 2.0):
    config = write_config(tmp_path / "node.toml", **node_sections(
        http_port=free_port(), assembly={"stable_seconds": stable, "association_grace_seconds": grace}))
    return start_node(state_dir=tmp_path / "node", config=config)


def jobs(node):
    db = state_db(node)
    try:
        return db.jobs()
    finally:
        db.close()


def queued_events(node) -> list[dict]:
    return [e for e in node.log_events() if e["event"] == "study queued"]


def test_study_sent_over_one_released_association_is_analysed_within_seconds(node_env, start_node, tmp_path,
                                                                             study_files):
    node = start(start_node, tmp_path, stable=60.0)
    assert node.storescu(*study_files).returncode == 0              # one association, released
    released = time.time()
    [job] = wait_until(lambda: [j for j in jobs(node) if j.state == "done"], 20,
                       "the study analysed well before stable_seconds (60 s)", on_fail=node.log_text)
    assert job.created_at - released < 2.0 + 1.0                    # the grace + a supervisor tick or two
    assert len(job.inputs) == len(study_files)
    [queued] = queued_events(node)
    assert queued["ready"] == "association_released"
    # the identical study again, over a new association: stored once, not analysed again
    assert node.storescu(*study_files).returncode == 0
    time.sleep(4.0)
    assert len(jobs(node)) == 1 and len(queued_events(node)) == 1


def _pynetdicom_send(node, files):
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title="OPENSCU")
    ae.requested_contexts = StoragePresentationContexts[:]
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae_title)
    assert assoc.is_established
    for path in files:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
    return assoc


@pytest.mark.parametrize("end", ["open", "abort"])
def test_study_whose_association_stays_open_or_is_aborted_waits_for_stable_seconds(node_env, start_node, tmp_path,
                                                                                  study_files, end):
    stable = 6.0
    node = start(start_node, tmp_path, stable=stable, grace=0.5)
    assoc = _pynetdicom_send(node, study_files)
    last_stored = time.time()
    try:
        if end == "abort":
            assoc.abort()
        time.sleep(stable - 2.0)                                     # well past the grace
        assert jobs(node) == [], "analysed before stable_seconds although the association was not released"
        [job] = wait_until(lambda: jobs(node), 10, "the study analysed after stable_seconds", on_fail=node.log_text)
        assert job.created_at - last_stored >= stable - 0.1
        [queued] = queued_events(node)
        assert queued["ready"] == "stable"
    finally:
        if assoc.is_established:
            assoc.release()
