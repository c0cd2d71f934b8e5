"""Analysis worker processes.

Each worker is a separate process (``multiprocessing`` spawn) that claims the oldest queued
job from the state database, analyses the study, writes the result objects to
``state_dir/results/<StudyInstanceUID>/<job id>/`` and, in one transaction, marks the job
done (or failed) and queues every result object for every destination. The SCP never waits
for a worker.

The job is split in two: :func:`dicom_node.job.analyze_and_write` (analysis + result objects,
no database: it can run on a Dask worker too, see :mod:`dicom_node.dask_backend`) and
:func:`record_outcome` (the node's bookkeeping). :func:`run_job` is both, in this process.

* A failed analysis still produces an SR and a CAD SR that say it failed and why (when the
  source images can be read at all).
* A worker that dies during a job (crash, out of memory, kill -9 of the node) leaves the job
  'running'; the supervisor (or the next start) puts it back in the queue. A job that was
  interrupted ``workers.max_attempts`` times is not analysed again: its failure is reported.
* After loading the models a worker analyses one small simulated study shipped with the node (``workers.warm_up``,
  :mod:`dicom_node.warmup`): a process's first analysis costs ~0.8 s more CPU than the next.
* Each worker gets its share of the cores for torch / BLAS threads (:func:`limit_threads`).
* Workers run at nice +10, so on a machine whose cores the analysis fills the DICOM listener
  and the sender still get the CPU first.
* Workers die with the node: the kernel sends them SIGKILL when their parent goes
  (PR_SET_PDEATHSIG), so no orphan ever finishes a job behind a restarted node's back.
* SIGTERM stops a worker after its current job (the node sends it on stop; systemd sends it to
  the whole control group). No multiprocessing lock or event is shared with the node: a worker
  killed at any moment can never leave the node blocked.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from pathlib import Path

import pydicom

from .config import Config
from .engine import EngineError
from .job import AnalysisOutcome, EngineBox, one_line, analyze_and_write
from .logs import event, setup_logging
from .state import Job, OutputObject, StateDB
from .warmup import warm_up

log = logging.getLogger("calcnode.worker")

PR_SET_PDEATHSIG = 1
IDLE_POLL_S = 0.2
WORKER_NICENESS = 10


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _outputs(paths: list[Path]) -> list[OutputObject]:
    outputs = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SOPClassUID"])
        outputs.append(OutputObject(path=str(path), sop_instance_uid=str(ds.SOPInstanceUID),
                                    sop_class_uid=str(ds.SOPClassUID), kind=path.name.split("-", 1)[0]))
    return outputs


def give_up_reason(job: Job, config: Config) -> str | None:
    """Why a job is not analysed again (it was interrupted too often), or None."""
    if job.attempts > config.workers.max_attempts:
        return (f"the analysis was interrupted {job.attempts - 1} times (worker process ended: crash, "
                "out of memory or node killed) and is not tried again")
    return None


def record_outcome(db: StateDB, config: Config, job: Job, outcome: AnalysisOutcome, pid: int,
                   out_dir: Path) -> dict:
    """The node's bookkeeping of a finished analysis (wherever it ran): mark the job done or
    failed and queue its result objects for every destination, in one transaction."""
    fields = job_log_fields(job)
    failure = outcome.failure
    state = "failed" if failure is not None else "done"
    outputs = _outputs([Path(p) for p in outcome.paths])
    summary = db.finish_job(job.id, pid, state=state, reason=one_line(failure) if failure else None,
                            result_dir=str(out_dir) if outputs else None, analysis_s=outcome.seconds,
                            outputs=outputs, destinations=[d.name for d in config.destinations])
    level = logging.INFO if state == "done" else logging.WARNING
    event(log, level, f"analysis {state}", seconds=outcome.seconds, outputs=[o.kind for o in outputs],
          sends_queued=summary["queued"], already_sent=summary["already_sent"],
          superseded_by=summary["superseded_by"], recorded=summary["recorded"],
          reason=one_line(failure) if failure else None, **fields)
    return {"state": state, "reason": failure, "outputs": outputs, **summary}


def job_log_fields(job: Job) -> dict:
    """The fields every log line about a job carries (UIDs and numbers, no patient identity)."""
    return dict(job=job.id, study_instance_uid=job.study_instance_uid, attempt=job.attempts)


def job_inputs(job: Job) -> tuple[list[Path], list[Path]]:
    """The job's MG images and ROI objects (spool paths)."""
    return [Path(i.path) for i in job.images], [Path(i.path) for i in job.roi_objects]


def run_job(db: StateDB, config: Config, job: Job, engines: EngineBox, pid: int | None = None) -> dict:
    """Analyse one claimed job in this process, write its results, record the outcome. Returns a summary."""
    pid = os.getpid() if pid is None else pid
    out_dir = config.results_dir.absolute() / job.study_instance_uid / str(job.id)
    images, rois = job_inputs(job)
    fields = job_log_fields(job)
    event(log, logging.INFO, "analysis started", images=len(images), roi_objects=len(rois), **fields)
    outcome = analyze_and_write(job.study_instance_uid, images, rois, out_dir, engines,
                                write_gsps=config.analysis.write_gsps, input_hash=job.input_hash,
                                give_up=give_up_reason(job, config), log_fields=fields)
    return record_outcome(db, config, job, outcome, pid, out_dir)


def limit_threads(workers: int) -> int:
    """Give this worker process its share of the cores for torch / OpenMP / BLAS threads.

    Each library would otherwise start one thread per core in every worker: 2 workers on
    2 cores ran 4 compute threads that took turns. Called before torch is imported (the
    engine is built after it); an ``OMP_NUM_THREADS`` set by the operator wins.
    Returns the thread count now in force.
    """
    share = str(max(1, (os.cpu_count() or 1) // max(1, int(workers))))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, share)
    return int(os.environ["OMP_NUM_THREADS"])


def _sleep(seconds: float, stopping: dict) -> None:
    deadline = time.monotonic() + seconds
    while not stopping["flag"] and time.monotonic() < deadline:
        time.sleep(0.1)


def _load_models(engines: EngineBox, index: int) -> bool:
    """Build the engine now, before the first job: the models and the libraries they need
    (torch, about 2 s of imports) load while the worker is idle rather than delaying the
    first study, which in a burst delays every study queued behind it. True if loaded."""
    try:
        engines.get()
    except EngineError as exc:  # each job retries the build and reports the reason in its SR
        event(log, logging.ERROR, "model cannot be loaded; jobs will report why", reason=str(exc), worker=index)
        return False
    return True


def _warm_up(config: Config, engines: EngineBox, index: int) -> None:
    """One small simulated study analysed before the first real one (see dicom_node.warmup)."""
    if not config.workers.warm_up:
        return
    try:
        seconds = warm_up(engines, config.node.state_dir / "warmup" / f"worker-{index}",
                          write_gsps=config.analysis.write_gsps)
    except Exception as exc:  # noqa: BLE001 - only the first study is slower for it
        event(log, logging.WARNING, "warm-up failed; the first study will take longer",
              reason=one_line(f"{type(exc).__name__}: {exc}"), worker=index)
    else:
        event(log, logging.INFO, "worker warmed up", seconds=round(seconds, 2), worker=index)


def worker_main(config: Config, index: int, ready_since=None) -> None:
    """Entry point of a worker process. ``ready_since``: the node's shared array in which the
    worker writes when its models were loaded (``/healthz`` reports it)."""
    die_with_parent()
    parent = os.getppid()
    stopping = {"flag": False}

    def _term(signum, _frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the node, which stops us
    try:
        os.nice(WORKER_NICENESS)  # the DICOM listener and the sender come first on a busy machine
    except OSError:
        pass
    limit_threads(config.workers.count)
    setup_logging(config.logging.format, config.logging.level)
    pid = os.getpid()
    db = StateDB(config.state_db)
    engines = EngineBox(config)
    event(log, logging.INFO, "worker started", worker=index, pid=pid)

    def mark_ready() -> None:
        if ready_since is not None and engines.engine is not None and not ready_since[index]:
            ready_since[index] = time.time()

    if _load_models(engines, index):
        _warm_up(config, engines, index)
        mark_ready()
    while not stopping["flag"]:
        if os.getppid() != parent:
            break  # the node is gone (PDEATHSIG covers this on Linux)
        try:
            job = db.claim_job(pid)
        except Exception as exc:  # noqa: BLE001 - database busy or broken: wait, retry
            event(log, logging.ERROR, "cannot read the job queue", reason=str(exc), worker=index)
            _sleep(5, stopping)
            continue
        if job is None:
            _sleep(IDLE_POLL_S, stopping)
            continue
        run_job(db, config, job, engines, pid)
        mark_ready()  # a model that could not be loaded at start may load at a job
    event(log, logging.INFO, "worker stopped", worker=index, pid=pid)
    db.close()
