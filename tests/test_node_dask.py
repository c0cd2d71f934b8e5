"""The node with `workers.backend = "dask"`: a real scheduler and two workers as separate processes
(`dask scheduler`, `dask worker`), storescu in, storescp out.

The analysis is the node tests' stand-in engine (node_helpers), which the Dask workers import
(PYTHONPATH holds tests/ and the repository). The spool and results are on the local disk the
workers share with the node, as docs/scale-out.md asks.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port
from node_helpers import node_env, node_sections, start_storescp, state_db, wait_until, write_config
from test_node_pipeline import COMPREHENSIVE_SR, GSPS, MAMMOGRAPHY_CAD_SR, SEG, kinds_by_class, synth_study

__all__ = ["node_env", "start_storescp", "synth_study"]  # fixtures used below

DASK = str(Path(sys.executable).with_name("dask"))


class DaskProcesses:
    """`dask scheduler` + `dask worker` x n on loopback, each in its own process group."""

    def __init__(self, workdir: Path, n_workers: int = 2, port: int | None = None):
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.log = open(workdir / "dask.log", "ab")
        self._spawn([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"])
        wait_until(self._listening, 60, "the Dask scheduler", on_fail=self.log_text)
        for k in range(n_workers):
            self._spawn([DASK, "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                         "--host", "127.0.0.1", "--local-directory", str(workdir / f"dask-worker-{k}")])
        wait_until(lambda: len(self.nthreads()) == n_workers, 120, f"{n_workers} Dask workers",
                   on_fail=self.log_text)

    def _spawn(self, cmd) -> None:
        self.procs.append(subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True))

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)

    def nthreads(self) -> dict:
        with self.client() as c:
            return c.nthreads()

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers (and their nannies' children) first, then the scheduler
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
            except ProcessLookupError:
                pass
            proc.wait(10)
        self.log.close()


@pytest.fixture
def dask_processes(node_env, tmp_path):
    cluster = None
    try:
        cluster = DaskProcesses(tmp_path)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()


def _node(start_node, tmp_path, cluster, dest, **overrides):
    http_port = free_port()
    sections = node_sections(http_port=http_port, workers={"backend": "dask", "dask_scheduler": cluster.address,
                                                           "stop_timeout_s": 5.0}, **overrides)
    config = write_config(tmp_path / "node.toml", destinations=[dest.destination("pacs")], **sections)
    node = start_node(state_dir=tmp_path / "node", config=config)
    node.http_port = http_port
    return node


def _jobs(node):
    db = state_db(node)
    try:
        return db.jobs(), db.sends()
    finally:
        db.close()


def _finished(node):
    jobs, sends = _jobs(node)
    if jobs and all(j.state in ("done", "failed") for j in jobs) and sends and all(s.state == "sent" for s in sends):
        return jobs, sends
    return None


def test_a_study_analysed_on_dask_workers_comes_back_to_the_destination(dask_processes, start_node,
                                                                        start_storescp, tmp_path, synth_study):
    import json

    from node_helpers import http_get

    dest = start_storescp()
    node = _node(start_node, tmp_path, dask_processes, dest)
    assert node.storescu(*synth_study["images"], *synth_study["rois"]).returncode == 0
    jobs, sends = wait_until(lambda: _finished(node), 180, "the study analysed on Dask and its results sent",
                             on_fail=lambda: node.log_text() + dask_processes.log_text())
    [job] = jobs
    assert job.state == "done" and job.attempts == 1 and job.worker_pid < 0  # a dispatcher slot, not a pid
    assert Path(job.result_dir).name == f"{job.id}-1"
    assert kinds_by_class(dest.received()) == {SEG: 4, COMPREHENSIVE_SR: 1, MAMMOGRAPHY_CAD_SR: 1, GSPS: 4}
    assert len(sends) == job.outputs == 10
    events = [e["event"] for e in node.log_events()]
    assert "connected to the Dask scheduler" in events and "analysis handed to Dask" in events
    status, body = http_get(node.http_port, "/healthz")
    workers = json.loads(body)["workers"]
    assert status == 200 and workers["backend"] == "dask" and workers["threads"] == 2
    metrics = http_get(node.http_port, "/metrics")[1].splitlines()
    assert "calcnode_dask_worker_threads 2" in metrics and "calcnode_dask_jobs_in_flight 0" in metrics
    assert node.stop() == 0


@pytest.fixture
def slow_first_analysis(node_env, tmp_path) -> Path:
    """The first analysis waits 8 s. Requested before dask_processes: the workers read this environment."""
    once = tmp_path / "delayed-once"
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_S", "8")
    node_env.setenv("CALCNODE_TEST_ENGINE_DELAY_ONCE", str(once))
    return once


def test_a_dask_worker_killed_mid_analysis_loses_nothing(slow_first_analysis, dask_processes, start_node,
                                                         start_storescp, tmp_path, synth_study):
    dest = start_storescp()
    node = _node(start_node, tmp_path, dask_processes, dest)
    assert node.storescu(*synth_study["images"], *synth_study["rois"]).returncode == 0
    wait_until(slow_first_analysis.exists, 120, "the analysis to start on a Dask worker",
               on_fail=lambda: node.log_text() + dask_processes.log_text())
    with dask_processes.client() as client:
        [busy] = [w for w, keys in client.processing().items() if any(str(k).startswith("calcnode-job-") for k in keys)]
        [pid] = client.run(os.getpid, workers=[busy]).values()
    os.kill(pid, signal.SIGKILL)  # the Dask worker process dies during the analysis
    jobs, sends = wait_until(lambda: _finished(node), 180, "the study analysed again and its results sent",
                             on_fail=lambda: node.log_text() + dask_processes.log_text())
    [job] = jobs
    assert job.state == "done" and job.attempts == 1  # Dask ran the task again: not a node attempt
    received = dest.received_sop_uids()
    assert len(received) == len(set(received)) == len(sends) == job.outputs  # every object, once


def test_jobs_wait_in_the_queue_while_the_scheduler_is_down(node_env, start_node, start_storescp, tmp_path,
                                                            synth_study):
    from node_helpers import http_get

    port = free_port()  # nothing listens there yet
    dest = start_storescp()
    node = _node(start_node, tmp_path, type("Down", (), {"address": f"tcp://127.0.0.1:{port}"}), dest)
    assert node.storescu(*synth_study["images"][:1]).returncode == 0
    wait_until(lambda: _jobs(node)[0], 60, "the job queued", on_fail=node.log_text)
    wait_until(lambda: any(e["event"] == "cannot reach the Dask scheduler; jobs wait in the queue"
                           for e in node.log_events()), 60, "the scheduler reported unreachable", on_fail=node.log_text)
    [job] = _jobs(node)[0]
    assert job.state == "queued" and job.attempts == 0  # nothing claimed without a scheduler
    assert http_get(node.http_port, "/healthz")[0] == 503
    cluster = DaskProcesses(tmp_path, n_workers=1, port=port)  # the scheduler comes up
    try:
        jobs, _ = wait_until(lambda: _finished(node), 180, "the queued job analysed once the scheduler is up",
                             on_fail=lambda: node.log_text() + cluster.log_text())
        assert [j.state for j in jobs] == ["done"] and jobs[0].attempts == 1
        assert http_get(node.http_port, "/healthz")[0] == 200
        assert node.stop() == 0
    finally:
        cluster.stop()


def test_the_dask_backend_settings_are_checked(tmp_path):
    from dicom_node.config import ConfigError, load_config

    ok = load_config(write_config(tmp_path / "ok.toml", workers={"backend": "dask",
                                                                 "dask_scheduler": " tcp://10.1.2.3:8786 "}))
    assert (ok.workers.backend, ok.workers.dask_scheduler) == ("dask", "tcp://10.1.2.3:8786")
    assert load_config().workers.backend == "local"
    with pytest.raises(ConfigError, match="needs workers.dask_scheduler"):
        load_config(write_config(tmp_path / "a.toml", workers={"backend": "dask"}))
    with pytest.raises(ConfigError, match="workers.backend must be one of local, dask"):
        load_config(write_config(tmp_path / "b.toml", workers={"backend": "ray"}))
    with pytest.raises(ConfigError, match="unknown key workers.dask_schedular"):
        load_config(write_config(tmp_path / "c.toml", workers={"dask_schedular": "tcp://x:1"}))
