"""The node's Dask backend (``workers.backend = "dask"``): analysis jobs run on a Dask cluster.

The durable queue in state.db stays the source of truth; Dask only executes. A dispatcher
thread in the node does what a local worker process does, with the analysis in between handed
to the scheduler at ``workers.dask_scheduler``:

1. **claim** the oldest queued job (:meth:`StateDB.claim_job`: running, attempts + 1), exactly as
   a local worker. The job's ``worker_pid`` is a *slot token*, a negative number (-1, -2, ...)
   that no real process has, so :meth:`StateDB.requeue_jobs_of` re-queues exactly that job;
2. **submit** :func:`dicom_node.job.analyze_anywhere` -- the analysis and the result writers,
   no database -- with the spool paths of the inputs and a result folder
   ``results/<study>/<job id>-<attempt>`` (fresh per attempt: a task orphaned by a node restart
   can never write into the folder of the attempt that replaced it);
3. **record** the outcome on the node (:func:`dicom_node.worker.record_outcome`: job done or
   failed and its objects queued for every destination, in one transaction).

At most as many jobs are in flight as the Dask workers have threads (none while no worker is
connected: the jobs wait in state.db). Paths travel, not pixels: the Dask workers must see
``state_dir/spool`` and ``state_dir/results`` at the node's paths (docs/scale-out.md).

When things go wrong:

* a Dask worker dies during a job: the scheduler runs the task again on another worker; when
  it gives up (``KilledWorker``, after ``distributed.scheduler.allowed-failures`` deaths) or the
  task errs, the job goes back to the queue with the attempt counted; past
  ``workers.max_attempts`` the node writes the failure report itself, without Dask;
* the scheduler is lost or unreachable: in-flight jobs are re-queued (attempt not counted),
  queued jobs wait, the dispatcher reconnects every few seconds;
* node stop: running tasks get ``workers.stop_timeout_s`` to finish and be recorded; the others
  are cancelled and re-queued without counting the attempt;
* node killed: the next start re-queues every 'running' job, as with local workers.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .cluster import connect, describe_failure, worker_threads
from .config import Config
from .job import EngineBox, analyze_and_write, analyze_anywhere
from .logs import event
from .metrics import Counters
from .state import Job, StateDB
from .worker import give_up_reason, job_inputs, job_log_fields, record_outcome

log = logging.getLogger("calcnode.dask")

POLL_S = 0.5
RECONNECT_EVERY_S = 5.0


@dataclass
class _InFlight:
    job: Job
    future: object  # distributed.Future
    out_dir: Path
    submitted: float


class DaskDispatcher:
    """Claims jobs from state.db, runs them on Dask, records their outcome (see the module docstring)."""

    def __init__(self, config: Config, db: StateDB, counters: Counters, stop: threading.Event):
        self.config = config
        self.db = db
        self.counters = counters
        self.address = config.workers.dask_scheduler
        self._stop = stop
        self._client = None
        self._next_connect = 0.0
        self._threads = 0
        self._inflight: dict[int, _InFlight] = {}
        self._thread: threading.Thread | None = None
        self._down_logged = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="calcnode-dask-dispatcher", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict:
        """For /healthz: connected, worker threads, jobs in flight."""
        return {"backend": "dask", "scheduler": self.address, "connected": self._connected(),
                "threads": self._threads, "in_flight": len(self._inflight)}

    def healthy(self) -> bool:
        return self.alive() and self._connected() and self._threads > 0

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - keep dispatching
                event(log, logging.ERROR, "Dask dispatcher error", reason=f"{type(exc).__name__}: {exc}")
            self._stop.wait(POLL_S)
        try:
            self._drain()
        finally:
            self._close()

    def _step(self) -> None:
        if not self._connected():
            if self._client is not None:  # it was connected: what ran there is lost
                self._lose_all("connection to the Dask scheduler lost", count_attempt=False)
                self._close()
            if not self._connect():
                return
        self._collect()
        self._threads = self._worker_threads()
        while len(self._inflight) < self._threads and not self._stop.is_set():
            token = next(-n for n in itertools.count(1) if -n not in self._inflight)
            job = self.db.claim_job(token)
            if job is None:
                break
            self._dispatch(job, token)

    def _connected(self) -> bool:
        return self._client is not None and self._client.status == "running"

    def _connect(self) -> bool:
        if time.monotonic() < self._next_connect:
            return False
        self._next_connect = time.monotonic() + RECONNECT_EVERY_S
        try:
            self._client, _ = connect(self.address, timeout_s=10)
        except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError: try again later
            self._client = None
            if not self._down_logged:
                event(log, logging.ERROR, "cannot reach the Dask scheduler; jobs wait in the queue",
                      scheduler=self.address, reason=f"{type(exc).__name__}: {exc}",
                      retry_every_s=RECONNECT_EVERY_S)
                self._down_logged = True
            return False
        self._down_logged = False
        event(log, logging.INFO, "connected to the Dask scheduler", scheduler=self.address,
              worker_threads=self._worker_threads())
        return True

    def _worker_threads(self) -> int:
        try:
            return worker_threads(self._client)
        except Exception:  # noqa: BLE001 - the connection is going: nothing new is submitted
            return 0

    def _close(self) -> None:
        client, self._client, self._threads = self._client, None, 0
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    # ------------------------------------------------------------------ jobs
    def _dispatch(self, job: Job, token: int) -> None:
        images, rois = job_inputs(job)
        fields = job_log_fields(job)
        out_dir = self.config.results_dir.absolute() / job.study_instance_uid / f"{job.id}-{job.attempts}"
        give_up = give_up_reason(job, self.config)
        if give_up is not None:
            # not sent to Dask again (the job may be what kills its workers): the report is written here
            outcome = analyze_and_write(job.study_instance_uid, images, rois, out_dir, EngineBox(self.config),
                                        write_gsps=False, input_hash=job.input_hash, give_up=give_up,
                                        log_fields=fields)
            record_outcome(self.db, self.config, job, outcome, token, out_dir)
            return
        try:
            future = self._client.submit(
                analyze_anywhere, self.config, job.study_instance_uid, [str(p) for p in images],
                [str(p) for p in rois], str(out_dir), input_hash=job.input_hash, log_fields=fields,
                key=f"calcnode-job-{job.id}-{job.attempts}-{uuid.uuid4().hex[:8]}", pure=False)
        except Exception as exc:  # noqa: BLE001 - the connection went: the job waits in the queue
            self.db.requeue_jobs_of(token, f"could not be handed to Dask ({type(exc).__name__}); re-queued",
                                    count_attempt=False)
            raise
        self._inflight[token] = _InFlight(job, future, out_dir, time.monotonic())
        event(log, logging.INFO, "analysis handed to Dask", images=len(images), roi_objects=len(rois),
              scheduler=self.address, **fields)

    def _collect(self) -> None:
        for token, entry in list(self._inflight.items()):
            if not entry.future.done():
                continue
            del self._inflight[token]
            try:
                outcome = entry.future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, an error in the task, a cancellation
                # a cancellation is the connection's or the node's doing, not the study's: not counted
                self._lose(token, entry, exc, count_attempt=entry.future.status != "cancelled")
                continue
            finally:
                entry.future.release()
            try:
                record_outcome(self.db, self.config, entry.job, outcome, token, entry.out_dir)
            except Exception:
                # not recorded: run it again rather than leave it 'running' under a token reused later
                self.db.requeue_jobs_of(token, "its outcome could not be recorded; re-queued", count_attempt=False)
                raise

    def _lose(self, token: int, entry: _InFlight, exc: BaseException, *, count_attempt: bool) -> None:
        reason = describe_failure(exc)
        jobs = self.db.requeue_jobs_of(token, f"Dask: {reason[:500]}; re-queued", count_attempt=count_attempt)
        event(log, logging.WARNING, "Dask task did not return; job re-queued", job=entry.job.id,
              study_instance_uid=entry.job.study_instance_uid, attempt=entry.job.attempts,
              attempt_counted=count_attempt, reason=reason[:1000], requeued_jobs=jobs)

    def _lose_all(self, reason: str, *, count_attempt: bool) -> None:
        for token, entry in list(self._inflight.items()):
            jobs = self.db.requeue_jobs_of(token, f"{reason}; re-queued", count_attempt=count_attempt)
            event(log, logging.WARNING, "Dask analysis interrupted: job re-queued", job=entry.job.id,
                  study_instance_uid=entry.job.study_instance_uid, reason=reason, requeued_jobs=jobs)
            try:
                entry.future.cancel()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
        self._inflight.clear()

    def _drain(self) -> None:
        """At stop: let running tasks finish within workers.stop_timeout_s, re-queue the rest."""
        deadline = time.monotonic() + self.config.workers.stop_timeout_s
        while self._inflight and self._connected() and time.monotonic() < deadline:
            try:
                self._collect()
            except Exception as exc:  # noqa: BLE001
                event(log, logging.ERROR, "Dask dispatcher error", reason=f"{type(exc).__name__}: {exc}")
            time.sleep(0.1)
        if self._inflight:
            self._lose_all("interrupted by a node stop", count_attempt=False)
