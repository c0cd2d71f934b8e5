"""The running node: receive -> assemble -> analyse -> write -> send, with its state in SQLite.

One process with threads for the DICOM listener (pynetdicom), the supervisor (study
assembly, worker supervision, retention), the sender and the monitoring HTTP server, plus
``workers.count`` analysis processes (:mod:`dicom_node.worker`) -- or, with
``workers.backend = "dask"``, a dispatcher thread that hands the jobs to a Dask cluster
(:mod:`dicom_node.dask_backend`).

Start: the spool's crash leftovers are removed, spool files the database does not know (a
crash between the fsync and the database commit) are recorded, jobs left running are
re-queued, then the listener starts. Stop (SIGTERM): the listener closes, workers finish the
job they run within ``workers.stop_timeout_s`` or are killed and their job re-queued, the
sender finishes the object it sends; nothing is lost and nothing is sent twice.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path

import pydicom

from .audit import AuditLog
from .config import Config
from .logs import event
from .metrics import Counters, Exposition
from .outbound import Sender
from .scp import KEPT_SOP_CLASSES, StorageSCP, instance_kind
from .spool import check_uid
from .state import JOB_STATES, SEND_STATES, StateDB

log = logging.getLogger("calcnode.node")

SUPERVISE_EVERY_S = 0.25
RETENTION_EVERY_S = 3600.0
WORKER_RESTART_DELAY_S = 2.0


class _WorkerSlot:
    def __init__(self, index: int):
        self.index = index
        self.process = None
        self.pid: int | None = None
        self.started_at = 0.0
        self.quick_failures = 0  # consecutive deaths within a minute of starting

    def restart_delay(self) -> float:
        return min(WORKER_RESTART_DELAY_S * 2 ** self.quick_failures, 60.0)


class Node:
    def __init__(self, config: Config):
        self.config = config
        self.state_dir = Path(config.node.state_dir).absolute()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db = StateDB(config.state_db.absolute())
        self.audit = AuditLog(config.audit_path.absolute() if config.audit_path else None)
        self.counters = Counters()
        self.scp = StorageSCP(config, db=self.db, audit=self.audit, counters=self.counters)
        self._stop = threading.Event()
        self.sender = Sender(config, self.db, audit=self.audit, counters=self.counters, stop=self._stop)
        # Workers are told to stop with SIGTERM, not a multiprocessing.Event: a worker killed
        # (OOM, kill -9) while waiting on an Event's condition deadlocks the next set().
        self._mp = multiprocessing.get_context("spawn")
        self.slots = [_WorkerSlot(i) for i in range(config.workers.count)]
        # when each worker had its models loaded (0: not yet). A lock-free shared array: a worker
        # killed while writing it cannot block the node (see above)
        self._ready_since = self._mp.RawArray("d", max(1, len(self.slots)))
        self.dispatcher = None
        if config.workers.backend == "dask":  # the analyses run on a Dask cluster, not in local processes
            from .dask_backend import DaskDispatcher

            self.slots = []
            self.dispatcher = DaskDispatcher(config, self.db, self.counters, self._stop)
        self._supervisor: threading.Thread | None = None
        self.http = None
        self.listening = False
        self.started_at = time.time()
        self._last_retention = 0.0

    # --------------------------------------------------------------- start/stop
    def start(self) -> None:
        self.scp.open_spool()
        recorded = self.reconcile_spool()
        if recorded:
            event(log, logging.WARNING, "recorded spool files the state database did not know "
                  "(the node stopped between writing and recording them)", count=recorded)
        interrupted = self.db.interrupt_open_associations()
        if interrupted:  # their studies are analysed after stable_seconds instead
            event(log, logging.WARNING, "associations open at the last stop recorded as interrupted",
                  count=interrupted)
        requeued = self.db.recover_running_jobs()
        if requeued:
            event(log, logging.WARNING, "re-queued jobs interrupted by the last stop", jobs=requeued)
        if not self.config.destinations:
            event(log, logging.WARNING, "no [[destinations]] configured: results are written under "
                  "state_dir/results/ and not sent")
        for slot in self.slots:
            self._start_worker(slot)
        if self.dispatcher is not None:
            self.dispatcher.start()
        self.scp.start(open_spool=False)
        self.listening = True
        self.sender.start()
        self._supervisor = threading.Thread(target=self._supervise, name="calcnode-supervisor", daemon=True)
        self._supervisor.start()
        if self.config.http.enabled:
            from .monitoring import MonitoringServer

            try:
                self.http = MonitoringServer(self, self.config.http.host, self.config.http.port)
                self.http.start()
            except OSError as exc:  # monitoring must not keep the DICOM service down
                self.http = None
                event(log, logging.ERROR, "monitoring HTTP server cannot listen: /healthz and /metrics "
                      "unavailable", host=self.config.http.host, port=self.config.http.port, reason=str(exc))

    def stop(self) -> None:
        self.scp.stop_listening()
        self.listening = False
        # associations in progress finish (their instances are recorded) before the database closes;
        # a bare TCP connection that never asked for an association (a port probe) is not waited for
        deadline = time.monotonic() + min(self.config.node.network_timeout_s, 30)
        while any(a.is_established for a in self.scp.ae.active_associations) and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stop.set()
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()  # SIGTERM: finish the current job, then exit
        deadline = time.monotonic() + self.config.workers.stop_timeout_s
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            proc = slot.process
            if proc is not None and proc.is_alive():
                proc.kill()
                proc.join(10)
                jobs = self.db.requeue_jobs_of(slot.pid, "interrupted by a node stop; re-queued",
                                               count_attempt=False)
                event(log, logging.WARNING, "worker stopped before its job finished: job re-queued",
                      worker=slot.index, pid=slot.pid, jobs=jobs)
        if self.dispatcher is not None:  # it lets running analyses finish, then re-queues the rest
            self.dispatcher.join(self.config.workers.stop_timeout_s + 30)
        self.sender.join(self.config.outbound.timeout_s + 5)
        if self._supervisor is not None:
            self._supervisor.join(5)
        if self.http is not None:
            self.http.stop()
        self.scp.stop()
        self.db.close()

    # -------------------------------------------------------------------- spool
    def reconcile_spool(self) -> int:
        """Record every spool file the database does not know. Returns how many."""
        known = self.db.recorded_paths()
        count = 0
        for path in self.scp.spool.instances():
            if str(path) in known:
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"])
                sop_class = str(ds.SOPClassUID)
                study = check_uid(str(ds.StudyInstanceUID), "Study Instance UID")
                sop = check_uid(str(ds.SOPInstanceUID), "SOP Instance UID")
            except Exception as exc:  # noqa: BLE001
                event(log, logging.ERROR, "spool file cannot be read; left in place", path=str(path),
                      reason=f"{type(exc).__name__}: {exc}")
                continue
            if sop_class not in KEPT_SOP_CLASSES:
                continue
            if self.db.record_instance(sop_instance_uid=sop, study_instance_uid=study, sop_class_uid=sop_class,
                                       kind=instance_kind(sop_class), path=str(path)):
                count += 1
        return count

    # ------------------------------------------------------------------ workers
    def _start_worker(self, slot: _WorkerSlot) -> None:
        from .worker import worker_main

        self._ready_since[slot.index] = 0.0
        proc = self._mp.Process(target=worker_main, args=(self.config, slot.index, self._ready_since),
                                name=f"calcnode-worker-{slot.index}", daemon=False)
        proc.start()
        slot.process, slot.pid, slot.started_at = proc, proc.pid, time.monotonic()

    def _check_workers(self) -> None:
        for slot in self.slots:
            proc = slot.process
            if proc is None or proc.is_alive() or self._stop.is_set():
                continue
            code = proc.exitcode
            lived = time.monotonic() - slot.started_at
            slot.quick_failures = slot.quick_failures + 1 if lived < 60 else 0
            slot.started_at = time.monotonic()  # the restart delay counts from the death
            jobs = self.db.requeue_jobs_of(slot.pid, f"worker process ended unexpectedly (exit code {code})",
                                           count_attempt=True)
            event(log, logging.ERROR, "worker process ended unexpectedly; restarting it", worker=slot.index,
                  pid=slot.pid, exit_code=code, requeued_jobs=jobs, restart_in_s=slot.restart_delay())
            self.counters.inc("calcnode_worker_restarts_total")
            slot.process = None
        for slot in self.slots:
            if slot.process is None and not self._stop.is_set() and \
                    time.monotonic() - slot.started_at >= slot.restart_delay():
                self._start_worker(slot)

    def workers_alive(self) -> int:
        return sum(1 for s in self.slots if s.process is not None and s.process.is_alive())

    def workers_ready(self) -> int:
        """Workers alive with their models loaded (the first study does not wait for a load)."""
        return sum(1 for s in self.slots if s.process is not None and s.process.is_alive()
                   and self._ready_since[s.index] > 0)

    # --------------------------------------------------------------- supervisor
    def _supervise(self) -> None:
        assembly = self.config.assembly
        while not self._stop.wait(SUPERVISE_EVERY_S):
            try:
                for ev in self.db.assemble(now=time.time(), stable_seconds=assembly.stable_seconds,
                                           no_roi_policy=assembly.no_roi_policy,
                                           association_grace_seconds=assembly.association_grace_seconds):
                    level = logging.INFO if ev.action in ("queued", "updated", "unchanged") else logging.WARNING
                    event(log, level, f"study {ev.action}", study_instance_uid=ev.study_instance_uid,
                          note=ev.note, job=ev.job_id, images=ev.n_images, roi_objects=ev.n_roi_objects,
                          ready=ev.trigger)
                self._check_workers()
                if self.config.storage.retention_days > 0 and \
                        time.monotonic() - self._last_retention >= RETENTION_EVERY_S:
                    self._last_retention = time.monotonic()
                    self.apply_retention()
            except Exception as exc:  # noqa: BLE001 - keep supervising
                event(log, logging.ERROR, "supervisor error", reason=f"{type(exc).__name__}: {exc}")

    def apply_retention(self, now: float | None = None) -> list[str]:
        """Remove studies done with for ``storage.retention_days``: spool files, results, rows."""
        now = time.time() if now is None else now
        before = now - self.config.storage.retention_days * 86400
        removed = []
        for study in self.db.expired_studies(before):
            check_uid(study, "Study Instance UID")
            shutil.rmtree(self.scp.spool.incoming / study, ignore_errors=True)
            shutil.rmtree(self.config.results_dir.absolute() / study, ignore_errors=True)
            self.db.forget_study(study)
            removed.append(study)
        self.db.purge_associations(before)
        if removed:
            event(log, logging.INFO, "retention: studies removed", count=len(removed),
                  retention_days=self.config.storage.retention_days)
        return removed

    # --------------------------------------------------------------- monitoring
    def health(self) -> tuple[bool, dict]:
        problems = []
        try:
            self.db.ping()
            counts = self.db.counts()
            database = "ok"
        except Exception as exc:  # noqa: BLE001
            counts, database = None, f"error: {exc}"
            problems.append("database")
        if not self.listening:
            problems.append("dicom listener")
        alive = self.workers_alive()
        if alive < len(self.slots) or (self.dispatcher is not None and not self.dispatcher.healthy()):
            problems.append("workers")
        if not self.sender.alive():
            problems.append("sender")
        body = {"status": "ok" if not problems else "degraded", "problems": problems,
                "ae_title": self.config.node.ae_title, "port": self.config.node.port,
                "listening": self.listening, "database": database,
                "workers": self.dispatcher.status() if self.dispatcher is not None else
                {"configured": len(self.slots), "alive": alive, "ready": self.workers_ready()},
                "sender": self.sender.alive(), "uptime_s": round(time.time() - self.started_at, 1)}
        if counts:
            body["jobs"] = counts["jobs"]
            body["outbound"] = {state: sum(n for (d, s), n in counts["sends"].items() if s == state)
                                for state in SEND_STATES}
        return not problems, body

    def metrics_text(self) -> str:
        counts = self.db.counts()
        out = Exposition()
        out.declare("calcnode_up", "gauge", "1 while the node runs")
        out.sample("calcnode_up", 1)
        families = {
            "calcnode_instances_received_total":
                "C-STORE requests since start, by result (stored, duplicate, refused, failed, own_results)",
            "calcnode_associations_total": "associations since start, by result",
            "calcnode_objects_sent_total": "result objects sent since start, by destination",
            "calcnode_send_failures_total": "failed send attempts since start, by destination",
            "calcnode_sends_dead_lettered_total": "objects dead-lettered since start, by destination",
            "calcnode_worker_restarts_total": "worker processes restarted after ending unexpectedly",
        }
        samples: dict[str, list] = {name: [] for name in families}
        for name, labels, value in self.counters.items():
            samples.setdefault(name, []).append((labels, value))
        seen = {labels.get("result") for labels, _ in samples["calcnode_instances_received_total"]}
        for result in ("stored", "duplicate", "refused", "failed", "own_results"):
            if result not in seen:
                samples["calcnode_instances_received_total"].append(({"result": result}, 0))
        if not samples["calcnode_worker_restarts_total"]:
            samples["calcnode_worker_restarts_total"].append(({}, 0))
        for name, rows in samples.items():
            out.declare(name, "counter", families.get(name, name))
            for labels, value in rows:
                out.sample(name, value, **labels)
        out.declare("calcnode_instances", "gauge", "instances held in the spool, by kind")
        for kind in ("MG", "GSPS", "SEG"):
            out.sample("calcnode_instances", counts["instances"].get(kind, 0), kind=kind)
        out.declare("calcnode_studies", "gauge", "studies known, by status")
        for status, n in sorted(counts["studies"].items()):
            out.sample("calcnode_studies", n, status=status)
        out.declare("calcnode_jobs", "gauge", "analysis jobs by state (queue depth: queued + running)")
        for state in JOB_STATES:
            out.sample("calcnode_jobs", counts["jobs"].get(state, 0), state=state)
        out.declare("calcnode_analyses_total", "counter", "analyses finished, by outcome (kept in the database)")
        out.sample("calcnode_analyses_total", counts["jobs"].get("done", 0), outcome="done")
        out.sample("calcnode_analyses_total", counts["jobs"].get("failed", 0), outcome="failed")
        out.histogram("calcnode_analysis_seconds", "wall time of an analysis job (analyse + write results)",
                      [seconds for _, seconds in counts["durations"]])
        out.declare("calcnode_outbound", "gauge", "outbound objects by destination and state "
                    "(queue depth: pending; dead-lettered: dead)")
        for destination in [d.name for d in self.config.destinations]:
            for state in SEND_STATES:
                out.sample("calcnode_outbound", counts["sends"].get((destination, state), 0),
                           destination=destination, state=state)
        out.declare("calcnode_workers", "gauge", "analysis worker processes")
        out.sample("calcnode_workers", len(self.slots), state="configured")
        out.sample("calcnode_workers", self.workers_alive(), state="alive")
        out.sample("calcnode_workers", self.workers_ready(), state="ready")
        if self.dispatcher is not None:
            status = self.dispatcher.status()
            out.declare("calcnode_dask_worker_threads", "gauge", "threads of the connected Dask workers (0: none)")
            out.sample("calcnode_dask_worker_threads", status["threads"])
            out.declare("calcnode_dask_jobs_in_flight", "gauge", "analysis jobs handed to Dask and not back yet")
            out.sample("calcnode_dask_jobs_in_flight", status["in_flight"])
        try:
            st = os.statvfs(self.scp.spool.root)
            out.declare("calcnode_spool_free_bytes", "gauge", "free space on the spool's file system")
            out.sample("calcnode_spool_free_bytes", st.f_bavail * st.f_frsize)
        except OSError:
            pass
        return out.text()
