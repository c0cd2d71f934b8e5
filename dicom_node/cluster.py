"""Dask clients for calcnode: a local cluster sized to the machine, or any Dask scheduler.

Shared by ``calcnode batch``, ``calcnode train/evaluate --scheduler`` and the node's Dask backend
(:mod:`dicom_node.dask_backend`).

* No scheduler address: a ``LocalCluster`` of worker *processes* with one thread each (the
  analysis holds the GIL in places and one study per worker bounds its memory), as many as the
  machine has cores unless told otherwise.
* An address (``tcp://host:8786``): any Dask scheduler -- ``dask scheduler`` + ``dask worker``
  by hand, dask-kubernetes, dask-jobqueue. The workers need calcnode installed and the input
  files on storage they share (docs/scale-out.md).

Every worker, including one that joins or restarts later, is initialised once by a worker
plugin (:class:`WorkerInit`): one thread for BLAS / torch / SimpleITK (the cluster is the
parallelism; several threads per process would oversubscribe the cores) and pyradiomics
loaded and quiet -- the same initialisation as the training feature pool.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from typing import Iterator

from distributed import Client, LocalCluster, WorkerPlugin

# The same initialisation as training's ProcessPoolExecutor (one place for it).
DEFAULT_INIT = "training.classifier.features:_worker_init"
CONNECT_TIMEOUT_S = 30


class SchedulerUnreachable(RuntimeError):
    """No Dask scheduler answers at the given address; the message says which and why."""


class WorkerInit(WorkerPlugin):
    """Runs ``init`` ("module:function", no arguments) once in every worker process."""

    name = "calcnode-worker-init"

    def __init__(self, init: str = DEFAULT_INIT):
        self.init = init

    def setup(self, worker) -> None:
        module, _, attr = self.init.partition(":")
        getattr(importlib.import_module(module), attr)()


def local_worker_count() -> int:
    """Worker processes of a local cluster: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def local_cluster(n_workers: int | None = None) -> LocalCluster:
    """The embedded default: ``n_workers`` (default: one per core) single-threaded processes."""
    return LocalCluster(n_workers=n_workers or local_worker_count(), threads_per_worker=1, processes=True,
                        dashboard_address=None)


def connect(scheduler: str | None = None, *, n_workers: int | None = None, init: str | None = DEFAULT_INIT,
            timeout_s: float = CONNECT_TIMEOUT_S) -> tuple[Client, LocalCluster | None]:
    """A client of ``scheduler`` (or of a new local cluster) with :class:`WorkerInit` registered.
    Returns (client, the local cluster or None); close both (:func:`dask_client` does)."""
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:  # refused, timed out, a malformed address
            raise SchedulerUnreachable(f"cannot reach the Dask scheduler {scheduler} within {timeout_s:g} s "
                                       f"({type(exc).__name__}: {exc})") from exc
    else:
        cluster = local_cluster(n_workers)
        client = Client(cluster)
    try:
        if init:
            client.register_plugin(WorkerInit(init))
    except BaseException:
        client.close()
        if cluster is not None:
            cluster.close()
        raise
    return client, cluster


@contextmanager
def dask_client(scheduler: str | None = None, *, n_workers: int | None = None,
                init: str | None = DEFAULT_INIT) -> Iterator[Client]:
    """:func:`connect` as a context manager: the client (and a local cluster) closed on exit."""
    client, cluster = connect(scheduler, n_workers=n_workers, init=init)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_threads(client: Client) -> int:
    """Threads of the workers connected to the scheduler now (0 when none is)."""
    return sum(int(n) for n in client.nthreads().values())


def describe_failure(exc: BaseException) -> str:
    """One sentence for a task that did not return (a lost worker, a cancelled task, an error)."""
    name = type(exc).__name__
    if name == "KilledWorker":
        return ("the task's worker process died too often while running it (crash or out of memory; "
                f"distributed.scheduler.allowed-failures reached): {exc}")
    if name in ("CancelledError", "FutureCancelledError"):
        return f"the task was cancelled (scheduler restarted or connection lost): {exc}"
    return f"{name}: {exc}"
