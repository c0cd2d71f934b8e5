"""The state database on its own: study assembly rules, the job queue, the outbound queue.

Real SQLite files in tmp_path; no network. The node-level behaviour (SCP, workers, sender)
is in test_node_*.py.
"""
from __future__ import annotations

import multiprocessing
import os
import sqlite3

import pytest

from dicom_node.outbound import retry_decision
from dicom_node.state import OutputObject, StateDB, input_hash

MG = "1.2.840.10008.5.1.4.1.1.1.2"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
STUDY = "1.2.3.4"


@pytest.fixture
def db(tmp_path):
    database = StateDB(tmp_path / "state.db")
    yield database
    database.close()


def receive(db, sop, kind="MG", at=100.0, study=STUDY):
    return db.record_instance(sop_instance_uid=sop, study_instance_uid=study,
                              sop_class_uid=MG if kind == "MG" else GSPS, kind=kind,
                              path=f"/spool/{study}/{sop}.dcm", received_at=at)


def assemble(db, now, policy="whole_breast"):
    return db.assemble(now=now, stable_seconds=10, no_roi_policy=policy)


def retry_rule(permanent=False):
    """The node's retry rule with test settings: 3 attempts, 10 s doubling, at most 15 s."""
    return lambda attempts, now: retry_decision(attempts, max_attempts=3, backoff_initial_s=10,
                                                backoff_max_s=15, now=now, permanent=permanent)


def finish(db, job, outputs=(), destinations=("pacs",), state="done", pid=1):
    return db.finish_job(job.id, pid, state=state, reason=None, result_dir="/r", analysis_s=1.0,
                         outputs=outputs, destinations=destinations)


def test_wal_mode_and_schema(db, tmp_path):
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"instances", "studies", "jobs", "sends"} <= tables


def test_study_is_ready_only_when_stable_and_with_an_image(db):
    assert receive(db, "1.1", "GSPS", at=100)
    assert assemble(db, now=105) == []                      # not stable yet
    [waiting] = assemble(db, now=111)
    assert waiting.action == "waiting" and "no MG image" in waiting.note
    assert db.jobs() == []
    receive(db, "1.2", "MG", at=120)
    assert assemble(db, now=125) == []
    [queued] = assemble(db, now=131)
    assert (queued.action, queued.n_images, queued.n_roi_objects) == ("queued", 1, 1)
    [job] = db.jobs()
    assert job.state == "queued" and job.input_hash == input_hash(["1.1", "1.2"])
    assert [i.kind for i in job.inputs] == ["GSPS", "MG"]
    assert assemble(db, now=200) == []                      # nothing new: not assessed again


def test_no_roi_policy(db):
    receive(db, "1.2", "MG", at=100)
    [skipped] = assemble(db, now=111, policy="skip")
    assert skipped.action == "skipped" and db.jobs() == []
    receive(db, "1.3", "GSPS", at=120)                      # the ROI arrives later
    [queued] = assemble(db, now=131, policy="skip")
    assert queued.action == "queued"


def test_changed_input_set_reanalyses_identical_one_does_not(db):
    receive(db, "1.2", "MG", at=100)
    assemble(db, now=111)
    job1 = db.claim_job(worker_pid=1, now=112)
    finish(db, job1)
    assert not receive(db, "1.2", "MG", at=150)             # the same image re-sent: nothing new
    assert assemble(db, now=170) == []
    receive(db, "1.3", "GSPS", at=200)                      # a ROI arrives after the images
    [again] = assemble(db, now=211)
    assert again.action == "queued" and "analysed again" in again.note
    receive(db, "1.4", "GSPS", at=300)                      # a second ROI object, while job 2 waits
    [updated] = assemble(db, now=311)
    assert updated.action == "updated" and updated.job_id == again.job_id
    jobs = db.jobs()
    assert len(jobs) == 2 and jobs[1].input_hash == input_hash(["1.2", "1.3", "1.4"])


def test_claim_is_exclusive_and_attempts_count(db):
    receive(db, "1.2", at=100)
    assemble(db, now=111)
    job = db.claim_job(worker_pid=7)
    assert job.state == "running" and job.attempts == 1
    assert db.claim_job(worker_pid=8) is None
    assert db.requeue_jobs_of(7, "worker died", count_attempt=True) == [job.id]
    again = db.claim_job(worker_pid=8)
    assert again.attempts == 2
    assert db.requeue_jobs_of(8, "node stopping", count_attempt=False) == [job.id]
    assert db.job(job.id).attempts == 1                     # a graceful stop costs no attempt
    db.claim_job(worker_pid=9)
    assert db.recover_running_jobs() == [job.id]            # what a crashed node left running
    assert db.job(job.id).state == "queued"


def _claim_in_process(path, queue):
    db = StateDB(path)
    claimed = []
    while (job := db.claim_job(worker_pid=multiprocessing.current_process().pid)) is not None:
        claimed.append(job.id)
    queue.put(claimed)


def test_two_processes_never_claim_the_same_job(tmp_path):
    db = StateDB(tmp_path / "state.db")
    for k in range(40):
        receive(db, f"1.{k}", at=100, study=f"2.{k}")
    assert len(assemble(db, now=200)) == 40
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(tmp_path / "state.db", queue)) for _ in range(2)]
    for p in procs:
        p.start()
    claimed = queue.get(timeout=60) + queue.get(timeout=60)
    for p in procs:
        p.join(30)
    assert sorted(claimed) == sorted(j.id for j in db.jobs())


def test_finish_queues_sends_once_and_never_resends_a_sent_object(db):
    receive(db, "1.2", at=100)
    assemble(db, now=111)
    job = db.claim_job(worker_pid=1)
    outputs = [OutputObject(path=f"/r/{k}.dcm", sop_instance_uid=f"9.{k}", sop_class_uid=GSPS, kind="GSPS")
               for k in range(2)]
    summary = finish(db, job, outputs, destinations=("pacs", "archive"))
    assert summary["queued"] == 4 and summary["recorded"]
    assert not finish(db, job, outputs)["recorded"]          # a second finish of the same job is ignored
    for send in db.sends(destination="pacs"):
        assert db.mark_sent(send.id)
        assert not db.mark_sent(send.id)
    # the same study analysed again with identical result UIDs: what pacs has is not re-sent
    receive(db, "1.3", "GSPS", at=200)
    assemble(db, now=211)
    job2 = db.claim_job(worker_pid=1)
    summary = finish(db, job2, outputs, destinations=("pacs", "archive"))
    assert summary["already_sent"] == 2
    assert [(s.destination, s.job_id) for s in db.sends(["pending"])] == [
        ("archive", job.id), ("archive", job.id), ("archive", job2.id), ("archive", job2.id)]


def test_superseded_job_sends_nothing(db):
    receive(db, "1.2", at=100)
    assemble(db, now=111)
    job1 = db.claim_job(worker_pid=1)
    receive(db, "1.3", "GSPS", at=120)                       # the study changes while job 1 runs
    assemble(db, now=131)
    out = [OutputObject(path="/r/a.dcm", sop_instance_uid="9.1", sop_class_uid=GSPS, kind="GSPS")]
    summary = finish(db, job1, out)
    assert summary["superseded_by"] == job1.id + 1 and summary["queued"] == 0
    assert "superseded" in db.job(job1.id).reason


def test_backoff_then_dead_letter_then_retry(db):
    receive(db, "1.2", at=100)
    assemble(db, now=111)
    job = db.claim_job(worker_pid=1)
    finish(db, job, [OutputObject(path="/r/a.dcm", sop_instance_uid="9.1", sop_class_uid=GSPS, kind="GSPS")])
    [send] = db.sends()
    kwargs = dict(decide=retry_rule())
    first = db.mark_failed(send.id, "refused", now=1000, **kwargs)
    assert (first.state, first.attempts, first.next_attempt_at) == ("pending", 1, 1010)
    assert db.due_sends(now=1005) == [] and len(db.due_sends(now=1010)) == 1
    second = db.mark_failed(send.id, "refused", now=1010, **kwargs)
    assert second.next_attempt_at == 1010 + 15                 # 20 s capped at backoff_max_s
    dead = db.mark_failed(send.id, "connection refused", now=1025, **kwargs)
    assert dead.state == "dead" and "3 attempts failed" in dead.last_error
    assert "connection refused" in dead.last_error
    assert db.due_sends(now=10**10) == []
    assert db.retry_sends() == 1
    [again] = db.sends(["pending"])
    assert again.attempts == 0
    assert db.mark_sent(again.id)
    assert db.retry_sends() == 0                               # sent stays sent
    assert db.purge_sends(states=("dead",)) == 0
    permanent = db.mark_failed(again.id, "x", decide=retry_rule(permanent=True))
    assert permanent is None                                   # a sent row is not touched


def test_retention_selects_only_finished_and_sent_studies(db):
    receive(db, "1.2", at=100, study="5.1")
    receive(db, "1.3", at=100, study="5.2")
    assemble(db, now=200)
    job = db.claim_job(worker_pid=1, now=200)
    db.finish_job(job.id, 1, state="done", reason=None, result_dir="/r", analysis_s=1, now=210,
                  outputs=[OutputObject("/r/a.dcm", "9.1", GSPS, "GSPS")], destinations=["pacs"])
    assert db.expired_studies(before=10**10) == []             # 5.1 has a pending send, 5.2 a queued job
    [send] = db.sends()
    db.mark_sent(send.id, now=220)
    assert db.expired_studies(before=215) == []
    assert db.expired_studies(before=10**10) == ["5.1"]
    db.forget_study("5.1")
    assert db.study_instances("5.1") == [] and db.sends() == []


def test_worker_threads_share_the_cores(monkeypatch):
    """2 workers on 2 cores get 1 compute thread each; an operator's OMP_NUM_THREADS wins."""
    from dicom_node.worker import limit_threads

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert limit_threads(2) == 4
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert limit_threads(8) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert limit_threads(16) == 1


# --------------------------------------------------------------------------- associations

def receive_over(db, sop, association, kind="MG", at=100.0, study=STUDY):
    return db.record_instance(sop_instance_uid=sop, study_instance_uid=study,
                              sop_class_uid=MG if kind == "MG" else GSPS, kind=kind,
                              path=f"/spool/{study}/{sop}.dcm", received_at=at, calling_ae="PACS",
                              association_id=association)


def assemble_early(db, now, policy="detect", stable=30.0, grace=2.0):
    return db.assemble(now=now, stable_seconds=stable, no_roi_policy=policy, association_grace_seconds=grace)


def test_released_association_makes_its_study_ready_after_the_grace(db):
    receive_over(db, "1.1", "a1", at=100.0)
    receive_over(db, "1.2", "a1", "GSPS", at=100.5)
    assert assemble_early(db, now=101.0) == []                      # still open
    assert db.end_association("a1", "released", at=101.0)
    assert db.association("a1")["ended_how"] == "released"
    assert assemble_early(db, now=102.9) == []                      # within the grace
    [queued] = assemble_early(db, now=103.0)
    assert (queued.action, queued.trigger, queued.n_images, queued.n_roi_objects) == \
        ("queued", "association_released", 1, 1)
    assert assemble_early(db, now=200.0) == []                      # assessed: not again


@pytest.mark.parametrize("how", ["aborted", "closed", "interrupted"])
def test_an_association_that_did_not_end_with_a_release_leaves_the_study_to_stable_seconds(db, how):
    receive_over(db, "1.1", "a1", at=100.0)
    if how == "interrupted":
        assert db.interrupt_open_associations(at=101.0) == 1
    else:
        db.end_association("a1", how, at=101.0)
    assert assemble_early(db, now=110.0) == []
    [queued] = assemble_early(db, now=130.0)
    assert queued.trigger == "stable"


def test_another_open_association_of_the_study_keeps_it_waiting(db):
    receive_over(db, "1.1", "a1", at=100.0)                          # a1 still sends
    receive_over(db, "1.2", "a2", at=100.2)
    db.end_association("a2", "released", at=100.3)
    assert assemble_early(db, now=110.0) == []
    db.end_association("a1", "released", at=111.0)                  # a1 brought no later instance
    [queued] = assemble_early(db, now=111.0)
    assert queued.trigger == "association_released"


def test_the_association_of_the_latest_instance_counts(db):
    receive_over(db, "1.1", "a1", at=100.0)
    db.end_association("a1", "released", at=100.1)
    receive_over(db, "1.2", "a2", "GSPS", at=100.5)                 # next association, back to back
    assert assemble_early(db, now=105.0) == []
    db.end_association("a2", "released", at=105.0)
    [queued] = assemble_early(db, now=107.0)
    assert queued.n_roi_objects == 1 and db.jobs()[0].input_hash == input_hash(["1.1", "1.2"])


def test_a_release_survives_a_restart_and_open_associations_become_interrupted(tmp_path):
    first = StateDB(tmp_path / "state.db")
    receive_over(first, "1.1", "a1", at=100.0)
    first.end_association("a1", "released", at=100.5)
    receive_over(first, "2.1", "b1", at=100.0, study="9.9")          # open when the node stops
    first.close()
    again = StateDB(tmp_path / "state.db")
    try:
        assert again.interrupt_open_associations(at=101.0) == 1
        [queued] = assemble_early(again, now=103.0)
        assert queued.study_instance_uid == STUDY and queued.trigger == "association_released"
        [stable] = assemble_early(again, now=130.0)
        assert stable.study_instance_uid == "9.9" and stable.trigger == "stable"
    finally:
        again.close()


def test_identical_resend_over_a_new_association_is_not_analysed_again_a_late_roi_is(db):
    receive_over(db, "1.1", "a1", at=100.0)
    db.end_association("a1", "released", at=100.1)
    [first] = assemble_early(db, now=103.0)
    job = db.claim_job(1)
    finish(db, job)
    assert not receive_over(db, "1.1", "a2", at=150.0)              # the same instance again
    db.end_association("a2", "released", at=150.1)
    assert assemble_early(db, now=153.0) == [] and assemble_early(db, now=300.0) == []
    assert len(db.jobs()) == 1
    receive_over(db, "1.2", "a3", "GSPS", at=160.0)                 # a ROI drawn later
    db.end_association("a3", "released", at=160.1)
    [again] = assemble_early(db, now=162.1)
    assert again.action == "queued" and again.trigger == "association_released" and len(db.jobs()) == 2


def test_a_release_replaces_an_earlier_connection_close_but_nothing_else(db):
    receive_over(db, "1.1", "a1", at=100.0)
    assert db.end_association("a1", "closed", at=100.1)
    assert db.end_association("a1", "released", at=100.2)
    assert not db.end_association("a1", "aborted", at=100.3)
    assert db.association("a1")["ended_how"] == "released"
    with pytest.raises(ValueError):
        db.end_association("a1", "finished")


def test_purge_keeps_the_last_association_of_a_study(db):
    receive_over(db, "1.1", "a1", at=100.0)
    receive_over(db, "1.2", "a2", at=101.0)
    db.end_association("a1", "released", at=100.5)
    db.end_association("a2", "released", at=101.5)
    assert db.purge_associations(before=1000.0) == 1
    assert db.association("a1") is None and db.association("a2") is not None


def test_a_schema_1_database_is_brought_up_to_date(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE instances (sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT NOT NULL,
            sop_class_uid TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, received_at REAL NOT NULL,
            calling_ae TEXT);
        CREATE TABLE studies (study_instance_uid TEXT PRIMARY KEY, first_received_at REAL NOT NULL,
            last_received_at REAL NOT NULL, assessed_at REAL, input_hash TEXT,
            status TEXT NOT NULL DEFAULT 'receiving', note TEXT, updated_at REAL);
        INSERT INTO instances VALUES ('1.1', '1.2.3.4', '1.2.840.10008.5.1.4.1.1.1.2', 'MG', '/s/1.1.dcm', 100, 'X');
        INSERT INTO studies VALUES ('1.2.3.4', 100, 100, NULL, NULL, 'receiving', NULL, 100);
    """)
    conn.close()
    db = StateDB(path)
    try:
        [queued] = assemble_early(db, now=130.0)                    # the old study: stable_seconds
        assert queued.trigger == "stable"
        receive_over(db, "1.2", "a1", at=200.0)
        db.end_association("a1", "released", at=200.5)
        [again] = assemble_early(db, now=202.5)
        assert again.trigger == "association_released"
        assert db._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "2"
    finally:
        db.close()
