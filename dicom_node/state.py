"""The node's durable state: one SQLite database (WAL) under the state directory.

Tables
------
``instances``  every instance the SCP kept: SOP Instance UID, Study Instance UID, SOP class,
               kind (MG / GSPS / SEG), spool path, received time, calling AE title, the
               association that brought it.
``studies``    one row per study: first/last instance received, the association that brought
               the last one, the input set of the last analysis job (a hash of the sorted SOP
               Instance UIDs), status and a note.
``associations`` every association that brought an instance: its id (the node's, random),
               calling AE title, first instance, and when and how it ended ("released",
               "aborted", "closed": connection closed without either, "interrupted": the node
               stopped while it was open). A study is ready early when the association of its
               last instance was released (:mod:`dicom_node.assembly`); kept here so that a
               node restart does not lose it.
``jobs``       analysis jobs: queued -> running -> done | failed, attempts, reason, the input
               set (JSON), result folder, analysis seconds.
``sends``      outbound C-STOREs: one row per (result object, destination):
               pending -> sent | dead, attempts, next attempt time, last error.

Every main-process thread shares one connection behind a lock; worker processes and
``calcnode queue`` open their own. Writes are ``BEGIN IMMEDIATE`` transactions, so two
processes never interleave a read-modify-write (a job is claimed by exactly one worker).
``synchronous = FULL``: a committed row survives a power cut, so an object recorded as
sent is never sent again.

Times are Unix seconds (``time.time()``).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

# INPUT_KINDS, ROI_OBJECT_KINDS and input_hash are also imported from here by callers
from .assembly import INPUT_KINDS, ROI_OBJECT_KINDS, StudySummary, decide, input_hash, stable_cutoff  # noqa: F401

SCHEMA_VERSION = 2  # 2: associations table, instances.association_id, studies.last_association_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid   TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    sop_class_uid      TEXT NOT NULL,
    kind               TEXT NOT NULL,
    path               TEXT NOT NULL,
    received_at        REAL NOT NULL,
    calling_ae         TEXT,
    association_id     TEXT
);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid);
CREATE TABLE IF NOT EXISTS associations (
    id                 TEXT PRIMARY KEY,
    calling_ae         TEXT,
    started_at         REAL NOT NULL,
    ended_at           REAL,
    ended_how          TEXT CHECK (ended_how IN ('released', 'aborted', 'closed', 'interrupted'))
);
CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid TEXT PRIMARY KEY,
    first_received_at  REAL NOT NULL,
    last_received_at   REAL NOT NULL,
    assessed_at        REAL,
    input_hash         TEXT,
    status             TEXT NOT NULL DEFAULT 'receiving',
    note               TEXT,
    updated_at         REAL,
    last_association_id TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    study_instance_uid TEXT NOT NULL,
    input_hash         TEXT NOT NULL,
    inputs             TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    reason             TEXT,
    created_at         REAL NOT NULL,
    started_at         REAL,
    finished_at        REAL,
    worker_pid         INTEGER,
    result_dir         TEXT,
    analysis_s         REAL,
    outputs            INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_instance_uid);
CREATE TABLE IF NOT EXISTS sends (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id             INTEGER NOT NULL,
    study_instance_uid TEXT NOT NULL,
    destination        TEXT NOT NULL,
    sop_instance_uid   TEXT NOT NULL,
    sop_class_uid      TEXT NOT NULL,
    kind               TEXT,
    path               TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    REAL NOT NULL,
    last_error         TEXT,
    created_at         REAL NOT NULL,
    sent_at            REAL,
    UNIQUE (destination, sop_instance_uid, job_id)
);
CREATE INDEX IF NOT EXISTS sends_due ON sends (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS sends_sop ON sends (destination, sop_instance_uid, state);
"""

JOB_STATES = ("queued", "running", "done", "failed")
SEND_STATES = ("pending", "sent", "dead")
# columns added by a schema version, for databases an older calcnode created: (table, column, type)
_ADDED_COLUMNS = (("instances", "association_id", "TEXT"), ("studies", "last_association_id", "TEXT"))
# how an association ends (associations.ended_how); only "released" makes a study ready early
ASSOCIATION_ENDS = ("released", "aborted", "closed", "interrupted")
# the AssemblyEvent action of each assembly verdict ("analyze" is "queued" or "updated")
_EVENT_ACTIONS = {"wait": "waiting", "skip": "skipped", "unchanged": "unchanged", "analyze": "queued"}


def _in_clause(column: str, values, params: list) -> str:
    """`` AND column IN (?, ?, ...)`` for ``values``, appending them to ``params``."""
    values = list(values)
    params += values
    return f" AND {column} IN ({','.join('?' * len(values))})"

class StateError(RuntimeError):
    """The state database cannot be used (message says why)."""


@dataclass(frozen=True)
class InputInstance:
    sop_instance_uid: str
    sop_class_uid: str
    kind: str
    path: str


@dataclass(frozen=True)
class Job:
    id: int
    study_instance_uid: str
    input_hash: str
    inputs: tuple[InputInstance, ...]
    state: str
    attempts: int
    reason: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker_pid: int | None
    result_dir: str | None
    analysis_s: float | None
    outputs: int | None

    @property
    def images(self) -> list[InputInstance]:
        return [i for i in self.inputs if i.kind == "MG"]

    @property
    def roi_objects(self) -> list[InputInstance]:
        return [i for i in self.inputs if i.kind in ROI_OBJECT_KINDS]


@dataclass(frozen=True)
class Send:
    id: int
    job_id: int
    study_instance_uid: str
    destination: str
    sop_instance_uid: str
    sop_class_uid: str
    kind: str | None
    path: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    sent_at: float | None


class FailureDecision(Protocol):
    """What :meth:`StateDB.mark_failed` records for a failed send (``outbound.RetryDecision``)."""

    @property
    def dead(self) -> bool:
        """Dead-letter the send (True) or try it again (False)."""

    @property
    def next_attempt_at(self) -> float:
        """When the next attempt is due (Unix s); the time of the decision when dead."""

    def recorded_error(self, error: str) -> str:
        """The send's ``last_error`` for the failure ``error``."""


@dataclass(frozen=True)
class OutputObject:
    """A result file of a job, to be sent to every destination."""

    path: str
    sop_instance_uid: str
    sop_class_uid: str
    kind: str


@dataclass(frozen=True)
class AssemblyEvent:
    """What the assembler decided for one study (for the log)."""

    study_instance_uid: str
    action: str            # "queued", "updated", "unchanged", "waiting", "skipped"
    note: str
    job_id: int | None = None
    n_images: int = 0
    n_roi_objects: int = 0
    trigger: str | None = None  # "association_released" or "stable" (dicom_node.assembly.ready_by)


def _job(row: sqlite3.Row) -> Job:
    inputs = tuple(InputInstance(**item) for item in json.loads(row["inputs"]))
    return Job(id=row["id"], study_instance_uid=row["study_instance_uid"], input_hash=row["input_hash"],
               inputs=inputs, state=row["state"], attempts=row["attempts"], reason=row["reason"],
               created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
               worker_pid=row["worker_pid"], result_dir=row["result_dir"], analysis_s=row["analysis_s"],
               outputs=row["outputs"])


def _send(row: sqlite3.Row) -> Send:
    return Send(**{k: row[k] for k in row.keys()})


class StateDB:
    """The state database. Thread-safe within a process; safe across processes (SQLite locks)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None,
                                         check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StateError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            with self._tx() as c:
                row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() \
                    if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() else None
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise StateError(f"{self.path}: written by a newer calcnode (schema {row[0]}, "
                                     f"this version reads {SCHEMA_VERSION})")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                self._add_columns(c)
                c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _add_columns(c: sqlite3.Connection) -> None:
        """Bring a database of an older schema up to date (columns only ever get added)."""
        for table, column, kind in _ADDED_COLUMNS:
            if column not in {r[1] for r in c.execute(f"PRAGMA table_info({table})")}:
                c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        c.execute("CREATE INDEX IF NOT EXISTS instances_association ON instances (association_id)")

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), committed on success, rolled back on error."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def ping(self) -> None:
        self._read("SELECT 1")

    # ---------------------------------------------------------------- instances
    def record_instance(self, *, sop_instance_uid: str, study_instance_uid: str, sop_class_uid: str,
                        kind: str, path: str | Path, received_at: float | None = None,
                        calling_ae: str | None = None, association_id: str | None = None) -> bool:
        """Record a spooled instance. True if it is new (False: already recorded).

        ``association_id``: the association that brought it (the SCP's id for it); it becomes the
        study's last association. An instance recorded again (a re-send) changes nothing, so an
        identical study sent again is neither re-assessed nor re-analysed.
        """
        now = time.time() if received_at is None else received_at
        with self._tx() as c:
            cur = c.execute("""INSERT OR IGNORE INTO instances (sop_instance_uid, study_instance_uid, sop_class_uid,
                                   kind, path, received_at, calling_ae, association_id)
                               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                            (sop_instance_uid, study_instance_uid, sop_class_uid, kind, str(path), now,
                             calling_ae, association_id))
            if cur.rowcount == 0:
                return False
            if association_id is not None:
                c.execute("INSERT OR IGNORE INTO associations (id, calling_ae, started_at) VALUES (?, ?, ?)",
                          (association_id, calling_ae, now))
            # the right-hand sides read the row before the update: the association of the latest instance wins
            c.execute("""INSERT INTO studies (study_instance_uid, first_received_at, last_received_at,
                                              status, updated_at, last_association_id)
                         VALUES (?, ?, ?, 'receiving', ?, ?)
                         ON CONFLICT (study_instance_uid) DO UPDATE SET
                             last_association_id = CASE WHEN excluded.last_received_at >= last_received_at
                                                        THEN excluded.last_association_id
                                                        ELSE last_association_id END,
                             last_received_at = max(last_received_at, excluded.last_received_at),
                             status = 'receiving', updated_at = excluded.updated_at""",
                      (study_instance_uid, now, now, now, association_id))
            return True

    def end_association(self, association_id: str, how: str, at: float | None = None) -> bool:
        """Record that an association ended (``how`` in :data:`ASSOCIATION_ENDS`). True if recorded.

        The first end recorded stays, except that a release replaces "closed": the connection
        can be seen closing (another thread) just before the association reports its release.
        """
        if how not in ASSOCIATION_ENDS:
            raise ValueError(f"an association ends {', '.join(ASSOCIATION_ENDS)}, not {how!r}")
        at = time.time() if at is None else at
        with self._tx() as c:
            return c.execute("""UPDATE associations SET ended_at = ?, ended_how = ?
                                WHERE id = ? AND (ended_at IS NULL OR (ended_how = 'closed' AND ? = 'released'))""",
                             (at, how, association_id, how)).rowcount == 1

    def interrupt_open_associations(self, at: float | None = None) -> int:
        """At start: associations left open by a previous process can no longer be released (their
        studies fall back to ``stable_seconds``). Returns how many."""
        at = time.time() if at is None else at
        with self._tx() as c:
            return c.execute("UPDATE associations SET ended_at = ?, ended_how = 'interrupted' WHERE ended_at IS NULL",
                             (at,)).rowcount

    def association(self, association_id: str) -> sqlite3.Row | None:
        rows = self._read("SELECT * FROM associations WHERE id = ?", (association_id,))
        return rows[0] if rows else None

    def recorded_paths(self) -> set[str]:
        return {row[0] for row in self._read("SELECT path FROM instances")}

    def study_instances(self, study_uid: str) -> list[sqlite3.Row]:
        return self._read("SELECT * FROM instances WHERE study_instance_uid = ? ORDER BY sop_instance_uid",
                          (study_uid,))

    # ----------------------------------------------------------------- assembly
    def assemble(self, *, now: float, stable_seconds: float, no_roi_policy: str,
                 association_grace_seconds: float | None = None) -> list[AssemblyEvent]:
        """Queue an analysis for every study that is ready and whose input set changed.

        The rules are :func:`dicom_node.assembly.decide`'s; this method reads each candidate
        study, asks it and records the answer, in one transaction per study. A queued (not yet
        running) job of the study is updated in place instead of queueing a second one.
        ``association_grace_seconds`` None: only ``stable_seconds`` makes a study ready.
        """
        events = []
        # candidates: studies with an arrival not assessed yet that are stable or whose last
        # association was released long enough ago (the rules check everything again below)
        grace_cutoff = now - association_grace_seconds if association_grace_seconds is not None else -1.0
        candidates = self._read(
            """SELECT s.study_instance_uid FROM studies s
               LEFT JOIN associations a ON a.id = s.last_association_id
               WHERE (s.assessed_at IS NULL OR s.assessed_at < s.last_received_at)
                 AND (s.last_received_at <= ? OR (a.ended_how = 'released' AND a.ended_at <= ?))""",
            (stable_cutoff(now, stable_seconds), grace_cutoff))
        for (study_uid,) in candidates:
            with self._tx() as c:
                study = c.execute("SELECT * FROM studies WHERE study_instance_uid = ?", (study_uid,)).fetchone()
                if study is None:
                    continue  # forgotten meanwhile
                rows = c.execute("""SELECT sop_instance_uid, sop_class_uid, kind, path FROM instances
                                    WHERE study_instance_uid = ? ORDER BY sop_instance_uid""",
                                 (study_uid,)).fetchall()
                inputs = [InputInstance(**dict(r)) for r in rows if r["kind"] in INPUT_KINDS]
                released_at, other_open = self._association_state(c, study)
                summary = StudySummary(
                    last_received_at=study["last_received_at"],
                    n_images=sum(i.kind == "MG" for i in inputs),
                    n_roi_objects=sum(i.kind in ROI_OBJECT_KINDS for i in inputs),
                    input_hash=input_hash(i.sop_instance_uid for i in inputs),
                    analysed_hash=study["input_hash"], status=study["status"],
                    association_released_at=released_at, other_open_associations=other_open)
                decision = decide(summary, now=now, stable_seconds=stable_seconds, no_roi_policy=no_roi_policy,
                                  association_grace_seconds=association_grace_seconds)
                if decision.verdict == "not_stable":
                    continue  # an instance arrived meanwhile
                c.execute("UPDATE studies SET assessed_at = ?, updated_at = ? WHERE study_instance_uid = ?",
                          (study["last_received_at"], now, study_uid))
                job_id, action = None, _EVENT_ACTIONS[decision.verdict]
                note = decision.reason
                if decision.verdict == "analyze":
                    job_id, action = self._queue_job(c, study_uid, summary.input_hash, inputs, now)
                    c.execute("UPDATE studies SET input_hash = ? WHERE study_instance_uid = ?",
                              (summary.input_hash, study_uid))
                    note = decision.job_note(job_id, action)
                c.execute("UPDATE studies SET status = ?, note = ? WHERE study_instance_uid = ?",
                          (decision.status, note, study_uid))
                events.append(AssemblyEvent(study_uid, action, note, job_id, summary.n_images,
                                            summary.n_roi_objects, decision.trigger))
        return events

    @staticmethod
    def _association_state(c: sqlite3.Connection, study: sqlite3.Row) -> tuple[float | None, int]:
        """(when the association of the study's last instance was released, or None; how many
        other associations that brought instances of the study are still open)."""
        last = study["last_association_id"]
        released_at = None
        if last is not None:
            row = c.execute("SELECT ended_at, ended_how FROM associations WHERE id = ?", (last,)).fetchone()
            if row is not None and row["ended_how"] == "released":
                released_at = row["ended_at"]
        other_open = c.execute("""SELECT count(DISTINCT a.id) FROM instances i JOIN associations a
                                  ON a.id = i.association_id
                                  WHERE i.study_instance_uid = ? AND a.ended_at IS NULL AND a.id IS NOT ?""",
                               (study["study_instance_uid"], last)).fetchone()[0]
        return released_at, other_open

    @staticmethod
    def _queue_job(c: sqlite3.Connection, study_uid: str, digest: str, inputs: Sequence[InputInstance],
                   now: float) -> tuple[int, str]:
        """Update the study's queued job with ``inputs``, or queue a new one: (job id, action)."""
        payload = json.dumps([i.__dict__ for i in inputs])
        queued = c.execute("""SELECT id FROM jobs WHERE study_instance_uid = ? AND state = 'queued'
                              ORDER BY id DESC LIMIT 1""", (study_uid,)).fetchone()
        if queued is not None:
            c.execute("UPDATE jobs SET input_hash = ?, inputs = ? WHERE id = ?", (digest, payload, queued["id"]))
            return queued["id"], "updated"
        job_id = c.execute("""INSERT INTO jobs (study_instance_uid, input_hash, inputs, state, created_at)
                              VALUES (?, ?, ?, 'queued', ?)""", (study_uid, digest, payload, now)).lastrowid
        return job_id, "queued"

    # --------------------------------------------------------------------- jobs
    def recover_running_jobs(self) -> list[int]:
        """At start: jobs left 'running' by a previous process go back to the queue."""
        with self._tx() as c:
            ids = [r[0] for r in c.execute("SELECT id FROM jobs WHERE state = 'running'")]
            c.execute("""UPDATE jobs SET state = 'queued', worker_pid = NULL,
                             reason = 'interrupted (node stopped during the analysis); re-queued'
                         WHERE state = 'running'""")
        return ids

    def claim_job(self, worker_pid: int, now: float | None = None) -> Job | None:
        """Take the oldest queued job: state running, attempts + 1. None when the queue is empty."""
        now = time.time() if now is None else now
        with self._tx() as c:
            row = c.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute("""UPDATE jobs SET state = 'running', attempts = attempts + 1, worker_pid = ?,
                                         started_at = ?, finished_at = NULL
                         WHERE id = ?""", (worker_pid, now, row["id"]))
            return _job(c.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def requeue_jobs_of(self, worker_pid: int, reason: str, *, count_attempt: bool) -> list[int]:
        """Jobs a worker was running go back to the queue (the worker died or was stopped)."""
        with self._tx() as c:
            ids = [r[0] for r in c.execute("SELECT id FROM jobs WHERE state = 'running' AND worker_pid = ?",
                                           (worker_pid,))]
            c.execute(f"""UPDATE jobs SET state = 'queued', worker_pid = NULL, reason = ?
                              {'' if count_attempt else ', attempts = max(attempts - 1, 0)'}
                          WHERE state = 'running' AND worker_pid = ?""", (reason, worker_pid))
        return ids

    def finish_job(self, job_id: int, worker_pid: int, *, state: str, reason: str | None,
                   result_dir: str | None, analysis_s: float | None, outputs: Sequence[OutputObject],
                   destinations: Sequence[str], now: float | None = None) -> dict:
        """Record a job's end and queue its outputs for every destination, in one transaction.

        Returns {"recorded": bool, "queued": n, "already_sent": n, "superseded_by": job id | None}.
        Not recorded when the job is no longer this worker's (it was re-queued meanwhile).
        Outputs are not queued when a newer job of the same study is waiting or running (its
        results replace these), and an object already sent to a destination is not queued again.
        """
        if state not in ("done", "failed"):
            raise ValueError(f"a job ends 'done' or 'failed', not {state!r}")
        now = time.time() if now is None else now
        summary = {"recorded": False, "queued": 0, "already_sent": 0, "superseded_by": None}
        with self._tx() as c:
            job = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if job is None or job["state"] != "running" or job["worker_pid"] != worker_pid:
                return summary
            newer = c.execute("""SELECT id FROM jobs WHERE study_instance_uid = ? AND id > ?
                                 AND state IN ('queued', 'running') ORDER BY id LIMIT 1""",
                              (job["study_instance_uid"], job_id)).fetchone()
            if newer is not None:
                summary["superseded_by"] = newer["id"]
                note = f"superseded by job {newer['id']} (the study changed): results not sent"
                reason = f"{reason}; {note}" if reason else note
            c.execute("""UPDATE jobs SET state = ?, reason = ?, finished_at = ?, result_dir = ?,
                                         analysis_s = ?, outputs = ?
                         WHERE id = ?""", (state, reason, now, result_dir, analysis_s, len(outputs), job_id))
            c.execute("UPDATE studies SET status = ?, note = ?, updated_at = ? WHERE study_instance_uid = ?",
                      ("analysed" if state == "done" else "failed", f"job {job_id}: {reason or state}", now,
                       job["study_instance_uid"]))
            summary["recorded"] = True
            if newer is not None:
                return summary
            for destination in destinations:
                for out in outputs:
                    sent = c.execute("""SELECT 1 FROM sends WHERE destination = ? AND sop_instance_uid = ?
                                        AND state = 'sent' LIMIT 1""",
                                     (destination, out.sop_instance_uid)).fetchone()
                    if sent is not None:
                        summary["already_sent"] += 1
                        continue
                    cur = c.execute("""INSERT OR IGNORE INTO sends (job_id, study_instance_uid, destination,
                                           sop_instance_uid, sop_class_uid, kind, path, state, attempts,
                                           next_attempt_at, created_at)
                                       VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)""",
                                    (job_id, job["study_instance_uid"], destination, out.sop_instance_uid,
                                     out.sop_class_uid, out.kind, out.path, now, now))
                    summary["queued"] += cur.rowcount
        return summary

    def job(self, job_id: int) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, states: Iterable[str] | None = None, study_uid: str | None = None,
             limit: int = 1000) -> list[Job]:
        sql, params = "SELECT * FROM jobs WHERE 1=1", []
        if states:
            sql += _in_clause("state", states, params)
        if study_uid:
            sql += " AND study_instance_uid = ?"
            params.append(study_uid)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [_job(r) for r in self._read(sql, params)]

    # -------------------------------------------------------------------- sends
    def due_sends(self, now: float | None = None, limit: int = 200) -> list[Send]:
        now = time.time() if now is None else now
        rows = self._read("""SELECT * FROM sends WHERE state = 'pending' AND next_attempt_at <= ?
                             ORDER BY destination, id LIMIT ?""", (now, limit))
        return [_send(r) for r in rows]

    def next_send_due_at(self) -> float | None:
        row = self._read("SELECT min(next_attempt_at) FROM sends WHERE state = 'pending'")[0]
        return row[0]

    def mark_sent(self, send_id: int, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._tx() as c:
            cur = c.execute("""UPDATE sends SET state = 'sent', sent_at = ?, attempts = attempts + 1,
                                   last_error = NULL WHERE id = ? AND state = 'pending'""", (now, send_id))
            return cur.rowcount == 1

    def mark_failed(self, send_id: int, error: str, *, decide: Callable[[int, float], FailureDecision],
                    now: float | None = None) -> Send | None:
        """Count a failed attempt and record what ``decide`` says: retry later or dead-letter.

        ``decide(attempts, now)`` gets the failed attempts so far, this one included, and
        ``now``; the node passes :func:`dicom_node.outbound.retry_decision` (the retry backoff)
        with its settings bound. Read, decision and write are one transaction, so two
        processes failing the same row both count. None when the row is no longer pending.
        """
        now = time.time() if now is None else now
        with self._tx() as c:
            row = c.execute("SELECT * FROM sends WHERE id = ? AND state = 'pending'", (send_id,)).fetchone()
            if row is None:
                return None
            attempts = row["attempts"] + 1
            decision = decide(attempts, now)
            c.execute("""UPDATE sends SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?
                         WHERE id = ?""", ("dead" if decision.dead else "pending", attempts,
                                           decision.recorded_error(error), decision.next_attempt_at, send_id))
            return _send(c.execute("SELECT * FROM sends WHERE id = ?", (send_id,)).fetchone())

    def sends(self, states: Iterable[str] | None = None, *, ids: Iterable[int] | None = None,
              destination: str | None = None, job_id: int | None = None, limit: int = 10000) -> list[Send]:
        sql, params = "SELECT * FROM sends WHERE 1=1", []
        if states:
            sql += _in_clause("state", states, params)
        if ids is not None:
            sql += _in_clause("id", ids, params)
        if destination:
            sql += " AND destination = ?"
            params.append(destination)
        if job_id is not None:
            sql += " AND job_id = ?"
            params.append(job_id)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [_send(r) for r in self._read(sql, params)]

    def retry_sends(self, ids: Iterable[int] | None = None, destination: str | None = None,
                    now: float | None = None) -> int:
        """Dead-lettered sends (all, by id, or of one destination) go back to pending, attempts 0.
        A sent object is never re-sent."""
        now = time.time() if now is None else now
        sql = ("UPDATE sends SET state = 'pending', attempts = 0, next_attempt_at = ?, "
               "last_error = 'retry requested; was: ' || coalesce(last_error, '') WHERE state = 'dead'")
        params: list = [now]
        if ids is not None:
            sql += _in_clause("id", ids, params)
        if destination:
            sql += " AND destination = ?"
            params.append(destination)
        with self._tx() as c:
            return c.execute(sql, params).rowcount

    def purge_sends(self, *, states: Sequence[str] = ("dead",), ids: Iterable[int] | None = None,
                    older_than: float | None = None) -> int:
        """Delete send rows (dead ones by default). Pending rows are removed only when asked by id."""
        sql, params = "DELETE FROM sends WHERE 1=1", []
        if ids is not None:
            sql += _in_clause("id", ids, params)
        else:
            states = [s for s in states if s in ("dead", "sent")]
            if not states:
                return 0
            sql += _in_clause("state", states, params)
        if older_than is not None:
            sql += " AND coalesce(sent_at, next_attempt_at, created_at) < ?"
            params.append(older_than)
        with self._tx() as c:
            return c.execute(sql, params).rowcount

    # ------------------------------------------------------------------ metrics
    def counts(self) -> dict:
        """Numbers for /metrics and /healthz: rows by state, analysis durations."""
        jobs = {state: 0 for state in JOB_STATES}
        for state, n in self._read("SELECT state, count(*) FROM jobs GROUP BY state"):
            jobs[state] = n
        sends: dict[tuple[str, str], int] = {}
        for destination, state, n in self._read(
                "SELECT destination, state, count(*) FROM sends GROUP BY destination, state"):
            sends[(destination, state)] = n
        durations = [(r[0], r[1]) for r in self._read(
            "SELECT state, analysis_s FROM jobs WHERE analysis_s IS NOT NULL")]
        instances = {kind: n for kind, n in self._read("SELECT kind, count(*) FROM instances GROUP BY kind")}
        studies = {status: n for status, n in self._read("SELECT status, count(*) FROM studies GROUP BY status")}
        return {"jobs": jobs, "sends": sends, "durations": durations, "instances": instances,
                "studies": studies}

    # ---------------------------------------------------------------- retention
    def expired_studies(self, before: float) -> list[str]:
        """Studies with no activity since ``before``, no job queued or running and nothing
        left to send (every send sent or purged)."""
        rows = self._read(
            """SELECT s.study_instance_uid FROM studies s
               WHERE s.last_received_at < ? AND coalesce(s.updated_at, 0) < ?
                 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.study_instance_uid = s.study_instance_uid
                                 AND (j.state IN ('queued', 'running') OR coalesce(j.finished_at, 0) >= ?))
                 AND NOT EXISTS (SELECT 1 FROM sends d WHERE d.study_instance_uid = s.study_instance_uid
                                 AND d.state != 'sent')
                 AND NOT EXISTS (SELECT 1 FROM sends d WHERE d.study_instance_uid = s.study_instance_uid
                                 AND coalesce(d.sent_at, 0) >= ?)""", (before, before, before, before))
        return [r[0] for r in rows]

    def purge_associations(self, before: float) -> int:
        """Delete associations that ended before ``before`` and are no study's last association
        (only open ones, and a study's last one, take part in the assembly rules)."""
        with self._tx() as c:
            return c.execute("""DELETE FROM associations WHERE ended_at < ? AND id NOT IN
                                (SELECT last_association_id FROM studies WHERE last_association_id IS NOT NULL)""",
                             (before,)).rowcount

    def forget_study(self, study_uid: str) -> None:
        with self._tx() as c:
            for table in ("instances", "sends", "jobs", "studies"):
                c.execute(f"DELETE FROM {table} WHERE study_instance_uid = ?", (study_uid,))
