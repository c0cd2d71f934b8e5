"""The node end to end against real DCMTK peers: storescu in, calcnode serve, storescp out.

The analysis is the stand-in engine of node_helpers (fast, deterministic, controllable);
everything around it -- SCP, state database, assembly, worker processes, writers, sender,
audit log, monitoring -- is the real node in its own process.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from conftest import CALCNODE, ROOT, free_port
from node_helpers import (
    audit_events, dciodvfy_errors, http_get, node_env, node_sections, start_storescp, state_db, wait_until,
    write_config,
)

__all__ = ["node_env", "start_storescp"]  # fixtures used below

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"


@pytest.fixture(scope="module")
def synth_study(tmp_path_factory) -> dict:
    """One simulated case (4 MG images, GSPS ROIs on the images with a cluster), 768 x 640."""
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(CALCNODE + ["synth", "--out", str(out), "--cases", "1", "--size", "768x640", "--seed", "3",
                               "--quiet", "--workers", "1"], cwd=ROOT, check=True, capture_output=True)
    folder = out / "dicom" / "SYNTH0001"
    images = sorted(folder.glob("MG_*.dcm"))
    rois = sorted(folder.glob("PR_*.dcm")) + sorted(folder.glob("SEG_*.dcm"))
    assert len(images) == 4 and rois
    return {"images": images, "rois": rois,
            "study_uid": str(pydicom.dcmread(images[0], stop_before_pixels=True).StudyInstanceUID)}


def start(start_node, tmp_path, name="node", destinations=(), **overrides):
    http_port = free_port()
    config = write_config(tmp_path / f"{name}.toml", destinations=destinations,
                          **node_sections(http_port=http_port, **overrides))
    node = start_node(state_dir=tmp_path / name, config=config)
    node.http_port = http_port
    return node


def jobs(node, states=None):
    db = state_db(node)
    try:
        return db.jobs(states)
    finally:
        db.close()


def sends(node, states=None):
    db = state_db(node)
    try:
        return db.sends(states)
    finally:
        db.close()


def wait_jobs_finished(node, count: int, timeout: float = 120):
    return wait_until(lambda: (lambda js: js if len(js) >= count and all(j.state in ("done", "failed") for j in js)
                               else None)(jobs(node)),
                      timeout, f"{count} finished job(s)", on_fail=node.log_text)


def wait_all_sent(node, timeout: float = 60):
    return wait_until(lambda: (lambda ss: ss if ss and all(s.state == "sent" for s in ss) else None)(sends(node)),
                      timeout, "every result object sent", on_fail=node.log_text)


def kinds_by_class(paths) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in paths:
        sop_class = str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID)
        counts[sop_class] = counts.get(sop_class, 0) + 1
    return counts


def _items(ds):
    yield ds
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                yield from _items(item)


# --------------------------------------------------------------------------------------------- tests

def test_study_analysed_results_sent_and_input_changes_handled(node_env, start_node, start_storescp, tmp_path,
                                                                synth_study):
    dest = start_storescp()
    node = start(start_node, tmp_path, destinations=[dest.destination("pacs")], workers={"warm_up": True})
    images, rois = synth_study["images"], synth_study["rois"]

    # 1. the images alone: analysed under the default no-ROI policy (the stand-in engine outlines each
    #    whole image; the real analysis detects clusters, tests/test_node_orthanc.py)
    assert node.storescu(*images).returncode == 0
    [job1] = wait_jobs_finished(node, 1)
    assert job1.state == "done" and len(job1.images) == 4 and not job1.roi_objects
    wait_all_sent(node)
    first = dest.received()
    assert kinds_by_class(first) == {SEG: 4, COMPREHENSIVE_SR: 1, MAMMOGRAPHY_CAD_SR: 1, GSPS: 4}

    # 2. the ROIs arrive later: a changed input set is analysed again, its results sent
    assert node.storescu(*rois).returncode == 0
    job1, job2 = wait_jobs_finished(node, 2)
    assert job2.state == "done" and len(job2.roi_objects) == len(rois)
    wait_all_sent(node)
    for path in dest.received():
        assert not dciodvfy_errors(path), path.name

    # 3. everything re-sent: identical input set, no new analysis
    assert node.storescu(*images, *rois).returncode == 0
    time.sleep(3)  # > stable_seconds + a supervisor round
    assert len(jobs(node)) == 2
    duplicates = [e for e in node.log_events() if e["event"] == "C-STORE duplicate: already in spool"]
    assert len(duplicates) == len(images) + len(rois)

    # 4. a second ROI object for the same image: analysed again
    second = pydicom.dcmread(rois[0])
    second.SOPInstanceUID = pydicom.uid.generate_uid()
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    second.save_as(tmp_path / "second_pr.dcm")
    assert node.storescu(tmp_path / "second_pr.dcm").returncode == 0
    *_, job3 = wait_jobs_finished(node, 3)
    assert job3.state == "done" and len(job3.roi_objects) == len(rois) + 1
    wait_all_sent(node)

    # never sent twice: one reception per SOP Instance UID at the destination
    received = dest.received_sop_uids()
    assert len(received) == len(set(received))
    sent = audit_events(node, "object_sent")
    assert len(sent) == len(received) == len({e["sop_instance_uid"] for e in sent})

    # 5. a result object routed back to the node is acknowledged and not taken as input
    assert node.storescu(first[0]).returncode == 0
    time.sleep(2.5)
    assert len(jobs(node)) == 3
    assert any(e["event"] == "C-STORE ignored: a result object of this node" for e in node.log_events())

    # audit trail: associations, receptions, sends; no patient identity anywhere
    received_events = audit_events(node, "instance_received")
    assert {e["status"] for e in received_events} == {"0x0000"}
    assert {e["result"] for e in audit_events(node, "association")} >= {"accepted", "released"}
    patient = pydicom.dcmread(images[0], stop_before_pixels=True)
    for text in ((node.state_dir / "audit.log").read_text(), node.log_text()):
        assert str(patient.PatientName) not in text and str(patient.PatientID) not in text

    # monitoring
    status, body = http_get(node.http_port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert json.loads(body)["workers"] == {"configured": 1, "alive": 1, "ready": 1}  # models loaded
    # ... and warmed up on a simulated study before the first real one (it left nothing behind)
    assert [e["event"] for e in node.log_events() if e["event"].startswith("worker warmed up")] \
        == ["worker warmed up"]
    assert not (node.state_dir / "warmup" / "worker-0").exists()
    status, metrics = http_get(node.http_port, "/metrics")
    assert status == 200
    lines = metrics.splitlines()
    assert 'calcnode_analyses_total{outcome="done"} 3' in lines
    assert 'calcnode_jobs{state="queued"} 0' in lines
    assert f'calcnode_objects_sent_total{{destination="pacs"}} {len(sent)}' in lines
    assert 'calcnode_outbound{destination="pacs",state="pending"} 0' in lines
    assert 'calcnode_analysis_seconds_count 3' in lines
    assert 'calcnode_workers{state="ready"} 1' in lines
    assert node.stop() == 0


def test_failed_analysis_still_sends_a_report(node_env, start_node, start_storescp, tmp_path, synth_study):
    node_env.setenv("CALCNODE_TEST_ENGINE_FAIL", "simulated out-of-memory in feature extraction")
    dest = start_storescp()
    node = start(start_node, tmp_path, destinations=[dest.destination()])
    assert node.storescu(*synth_study["images"], *synth_study["rois"]).returncode == 0
    [job] = wait_jobs_finished(node, 1)
    assert job.state == "failed" and "simulated out-of-memory" in job.reason
    wait_all_sent(node)
    received = dest.received()
    assert kinds_by_class(received) == {COMPREHENSIVE_SR: 1, MAMMOGRAPHY_CAD_SR: 1}
    for path in received:
        assert not dciodvfy_errors(path), path.name
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == synth_study["study_uid"]
        items = list(_items(ds))
        if ds.SOPClassUID == COMPREHENSIVE_SR:  # the TID 1500 report says why
            assert any("simulated out-of-memory" in str(i.get("TextValue", "")) for i in items)
        else:                                   # the CAD SR: "Failed Detections"
            assert any(i.get("CodeMeaning") == "Failed Detections" for i in items)


def test_a_model_that_cannot_be_loaded_leaves_workers_not_ready_and_jobs_say_why(
        node_env, start_node, start_storescp, tmp_path, synth_study):
    dest = start_storescp()
    node = start(start_node, tmp_path, destinations=[dest.destination()],
                 analysis={"engine": "", "model_bundle": str(tmp_path / "no-such-bundle")})
    wait_until(lambda: any(e["event"] == "model cannot be loaded; jobs will report why" for e in node.log_events()),
               60, "the worker's report that the model cannot be loaded")
    status, body = http_get(node.http_port, "/healthz")
    assert json.loads(body)["workers"] == {"configured": 1, "alive": 1, "ready": 0}
    assert node.storescu(*synth_study["images"], *synth_study["rois"]).returncode == 0
    [job] = wait_jobs_finished(node, 1)
    assert job.state == "failed" and "no-such-bundle" in job.reason and "cannot be loaded" in job.reason
    wait_all_sent(node)
    assert kinds_by_class(dest.received()) == {COMPREHENSIVE_SR: 1, MAMMOGRAPHY_CAD_SR: 1}
    assert node.stop() == 0


def test_kill_9_during_analysis_then_restart_sends_everything_once(node_env, start_node, start_storescp,
                                                                    tmp_path, synth_study):
    dest = start_storescp()
    destinations = [dest.destination()]
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_S", "60")
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_ONCE", str(tmp_path / "delayed-once"))
    node = start(start_node, tmp_path, destinations=destinations)
    assert node.storescu(*synth_study["images"], *synth_study["rois"]).returncode == 0
    wait_until((tmp_path / "delayed-once").exists, 60, "the analysis to start", on_fail=node.log_text)
    [running] = jobs(node, ["running"])
    worker_pid = running.worker_pid
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)
    # the worker dies with the node (PR_SET_PDEATHSIG): no orphan finishes the job behind our back
    wait_until(lambda: not Path(f"/proc/{worker_pid}").exists() or
               "zombie" in Path(f"/proc/{worker_pid}/status").read_text().lower(), 10, "the worker to die")
    assert dest.received() == []

    again = start(start_node, tmp_path, name="node", destinations=destinations)
    [job] = wait_jobs_finished(again, 1)
    assert job.id == running.id and job.state == "done" and job.attempts == 2
    wait_all_sent(again)
    received = dest.received_sop_uids()
    assert received and len(received) == len(set(received)) == len(sends(again))
    assert any(e["event"] == "re-queued jobs interrupted by the last stop" for e in again.log_events())


def test_destination_down_dead_letter_then_queue_retry(node_env, start_node, start_storescp, tmp_path,
                                                      synth_study):
    port = free_port()  # nothing listens there yet
    destination = {"name": "pacs", "ae_title": "DEST", "host": "127.0.0.1", "port": port}
    node = start(start_node, tmp_path, destinations=[destination])
    assert node.storescu(*synth_study["images"][:1]).returncode == 0
    wait_jobs_finished(node, 1)
    dead = wait_until(lambda: (lambda ss: ss if ss and all(s.state == "dead" for s in ss) else None)(sends(node)),
                      60, "every object dead-lettered", on_fail=node.log_text)
    assert all(s.attempts == 3 and "connection failed" in s.last_error for s in dead)

    listing = subprocess.run(CALCNODE + ["queue", "list", "--state-dir", str(node.state_dir), "--json"],
                             cwd=ROOT, capture_output=True, text=True, check=True)
    listed = json.loads(listing.stdout)["sends"]
    assert {s["id"] for s in listed} == {s.id for s in dead}
    assert all(s["state"] == "dead" and "connection failed" in s["last_error"] for s in listed)
    status, metrics = http_get(node.http_port, "/metrics")
    assert f'calcnode_outbound{{destination="pacs",state="dead"}} {len(dead)}' in metrics.splitlines()

    dest = start_storescp(port=port)  # the destination comes back
    retry = subprocess.run(CALCNODE + ["queue", "retry", "--all", "--state-dir", str(node.state_dir)],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    assert f"{len(dead)} dead-lettered" in retry.stdout
    wait_all_sent(node)
    received = dest.received_sop_uids()
    assert sorted(received) == sorted(s.sop_instance_uid for s in dead)
    # a second retry finds nothing to do: sent objects are never sent again
    again = subprocess.run(CALCNODE + ["queue", "retry", "--all", "--state-dir", str(node.state_dir)],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    assert again.stdout.startswith("0 ")
    time.sleep(1.5)
    assert len(dest.received()) == len(dead)


def test_worker_killed_too_often_gives_a_failure_report(node_env, start_node, start_storescp, tmp_path,
                                                       synth_study):
    """A worker dying mid-job (crash, OOM killer) is restarted and the job re-queued; past
    workers.max_attempts the study gets a report that says the analysis failed and why."""
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_S", "60")
    dest = start_storescp()
    node = start(start_node, tmp_path, destinations=[dest.destination()], workers={"max_attempts": 1})
    assert node.storescu(*synth_study["images"][:1]).returncode == 0
    [running] = wait_until(lambda: jobs(node, ["running"]), 60, "the analysis to start", on_fail=node.log_text)
    os.kill(running.worker_pid, signal.SIGKILL)
    [job] = wait_jobs_finished(node, 1)
    assert job.state == "failed" and job.attempts == 2 and "interrupted 1 times" in job.reason
    wait_all_sent(node)
    assert kinds_by_class(dest.received()) == {COMPREHENSIVE_SR: 1, MAMMOGRAPHY_CAD_SR: 1}
    [restart] = [e for e in node.log_events() if e["event"] == "worker process ended unexpectedly; restarting it"]
    assert restart["exit_code"] == -9 and restart["requeued_jobs"] == [job.id]
    assert node.alive() and json.loads(http_get(node.http_port, "/healthz")[1])["workers"]["alive"] == 1


def test_sigterm_requeues_a_running_analysis_without_counting_it(node_env, start_node, tmp_path, synth_study):
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_S", "60")
    node = start(start_node, tmp_path, workers={"stop_timeout_s": 1.0})
    assert node.storescu(*synth_study["images"][:1]).returncode == 0
    [running] = wait_until(lambda: jobs(node, ["running"]), 60, "the analysis to start", on_fail=node.log_text)
    started = time.monotonic()
    assert node.stop() == 0
    assert time.monotonic() - started < 15
    [job] = jobs(node)
    assert job.state == "queued" and job.attempts == 0 and "node stop" in job.reason
    assert any(e["event"] == "worker stopped before its job finished: job re-queued" for e in node.log_events())


def test_sigterm_lets_a_running_analysis_finish_and_its_results_go_at_the_next_start(
        node_env, start_node, start_storescp, tmp_path, synth_study):
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_S", "4")
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_ONCE", str(tmp_path / "delayed-once"))
    port = free_port()  # the destination is not up yet: results stay queued
    destinations = [{"name": "dest", "ae_title": "DEST", "host": "127.0.0.1", "port": port}]
    node = start(start_node, tmp_path, destinations=destinations, workers={"stop_timeout_s": 30.0},
                 outbound={"backoff_initial_s": 30.0, "backoff_max_s": 30.0})
    assert node.storescu(*synth_study["images"][:1]).returncode == 0
    wait_until((tmp_path / "delayed-once").exists, 60, "the analysis to start", on_fail=node.log_text)
    assert node.stop() == 0
    [job] = jobs(node)
    assert job.state == "done" and job.attempts == 1  # finished during the stop, not re-queued
    dest = start_storescp(port=port)
    again = start(start_node, tmp_path, destinations=destinations)
    wait_all_sent(again)
    assert len(dest.received()) == len(sends(again)) == job.outputs


def test_spool_files_unknown_to_the_database_are_recorded_at_start(tmp_path, synth_study):
    """A crash between the spool fsync and the database commit: the next start records the file."""
    from dicom_node.config import load_config
    from dicom_node.service import Node

    config = load_config(write_config(tmp_path / "c.toml", node={"state_dir": str(tmp_path / "state")}))
    image = synth_study["images"][0]
    target = tmp_path / "state" / "spool" / "incoming" / synth_study["study_uid"]
    target.mkdir(parents=True)
    sop = str(pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID)
    shutil.copy(image, target / f"{sop}.dcm")
    node = Node(config)
    try:
        node.scp.open_spool()
        assert node.reconcile_spool() == 1
        assert node.reconcile_spool() == 0
        [row] = node.db.study_instances(synth_study["study_uid"])
        assert (row["sop_instance_uid"], row["kind"]) == (sop, "MG")
    finally:
        node.db.close()


def test_disk_high_water_mark_refuses_with_out_of_resources(node_env, start_node, tmp_path, synth_study):
    node = start(start_node, tmp_path, storage={"min_free_mb": 10**9})  # a petabyte: always below
    result = node.storescu(synth_study["images"][0])
    assert "0xa700" in (result.stdout + result.stderr).lower() or result.returncode != 0
    assert node.stored_files() == []
    [refused] = [e for e in node.log_events() if e["event"] == "C-STORE refused: disk below the high-water mark"]
    assert refused["status"] == "0xA700"
    assert [e["status"] for e in audit_events(node, "instance_received")] == ["0xA700"]
    assert node.echo().returncode == 0


def test_retention_removes_finished_studies_only(tmp_path, synth_study):
    from dicom_node.config import load_config
    from dicom_node.service import Node
    from dicom_node.state import OutputObject

    config = load_config(write_config(tmp_path / "c.toml", node={"state_dir": str(tmp_path / "state")},
                                      storage={"retention_days": 1.0}, destinations=[
                                          {"name": "pacs", "ae_title": "P", "host": "127.0.0.1", "port": 104}]))
    node = Node(config)
    try:
        node.scp.open_spool()
        day = 86400
        t0 = time.time() - 3 * day
        studies = {}
        for k, keep_pending in enumerate((False, True)):
            study = f"1.2.3.{k}"
            spool = node.scp.spool.incoming / study
            spool.mkdir(parents=True)
            (spool / "1.1.dcm").write_bytes(b"x")
            results = config.results_dir.absolute() / study / "1"
            results.mkdir(parents=True)
            node.db.record_instance(sop_instance_uid=f"1.1.{k}", study_instance_uid=study, kind="MG",
                                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2", path=str(spool / "1.1.dcm"),
                                    received_at=t0)
            node.db.assemble(now=t0 + 60, stable_seconds=30, no_roi_policy="whole_breast")
            job = node.db.claim_job(worker_pid=1, now=t0 + 61)
            node.db.finish_job(job.id, 1, state="done", reason=None, result_dir=str(results), analysis_s=1,
                               outputs=[OutputObject(str(results / "a.dcm"), f"9.{k}", "1.2", "SR")],
                               destinations=["pacs"], now=t0 + 70)
            if not keep_pending:
                [send] = node.db.sends(job_id=job.id)
                node.db.mark_sent(send.id, now=t0 + 80)
            studies[study] = (spool, results.parent)
        assert node.apply_retention(now=t0 + 0.5 * day) == []  # too recent
        assert node.apply_retention() == ["1.2.3.0"]            # the other still has a pending send
        spool, results = studies["1.2.3.0"]
        assert not spool.exists() and not results.exists() and node.db.study_instances("1.2.3.0") == []
        spool, results = studies["1.2.3.1"]
        assert spool.exists() and results.exists()
    finally:
        node.db.close()


def test_demo_runs_the_whole_node_on_a_simulated_study(node_env, tmp_path):
    result = subprocess.run(CALCNODE + ["demo", "--out", str(tmp_path / "demo"), "--size", "512x384", "--json",
                                        "--engine", "node_helpers:stand_in_engine"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["job"]["state"] == "done"
    kinds = {name.split("-", 1)[0] for name in summary["objects"]}
    assert kinds == {"SEG", "SR", "PR"}  # the CAD SR is an SR too
    assert len(summary["rois"]) >= 4 and all("Analysis status" in r["evaluations"] for r in summary["rois"])
    assert "Traceback" not in result.stderr


def test_deploy_example_configuration_is_valid():
    from dicom_node.config import load_config

    config = load_config(ROOT / "deploy" / "calcnode.example.toml")
    assert config.node.host == "0.0.0.0" and [d.name for d in config.destinations] == ["pacs"]
