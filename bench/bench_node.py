"""The node as a service: receive throughput, responsiveness while analysing, end-to-end latency.

Runs a real `calcnode serve` (subprocess) with DCMTK peers:
1. receive: storescu sends N uncompressed MG instances (1024 x 768, 1.5 MB) in one association to a node
   with workers.count = 0 -> instances/s and MB/s, every instance fsync'ed into the spool and recorded in
   state.db before its success status;
2. responsiveness: C-ECHO round trips (echoscu, process start included) with idle workers and while
   2 workers run CPU-bound analyses (the node tests' stand-in engine burning a core each) -> p50 / p95 /
   max ms;
3. end to end: a 4-image `calcnode synth` study (768 x 640) -> results at a storescp destination, with
   the stand-in analysis: seconds after the last instance, minus assembly.stable_seconds.

    python -m bench.bench_node        (about a minute on 2 cores)
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CALCNODE, ECHOSCU, RunningNode  # noqa: E402
from dicom_factory import mg_dataset, write  # noqa: E402
from node_helpers import ENGINE, StoreSCP, node_sections, wait_until, write_config  # noqa: E402

N_RECEIVE = 100


def _node(tmp: Path, name: str, destinations=(), **sections) -> RunningNode:
    config = write_config(tmp / f"{name}.toml", destinations=destinations, **node_sections(**sections))
    return RunningNode(tmp / name, config=config)


def _jobs(node: RunningNode):
    from dicom_node.state import StateDB

    db = StateDB(node.state_dir / "state.db")
    try:
        return db.jobs(), db.sends()
    finally:
        db.close()


def main() -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    figures: dict = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # 1. receive throughput
        import pydicom

        study = pydicom.uid.generate_uid()
        files = [write(mg_dataset(1024, 768, study_uid=study, seed=i), tmp / "in" / f"{i}.dcm")
                 for i in range(N_RECEIVE)]
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        node = _node(tmp, "receive", workers={"count": 0})
        try:
            started = time.perf_counter()
            assert node.storescu(*files).returncode == 0
            seconds = time.perf_counter() - started
            assert len(node.stored_files()) == N_RECEIVE
        finally:
            node.stop()
        figures["receive"] = {"instances": N_RECEIVE, "megabytes": round(megabytes, 1),
                              "seconds": round(seconds, 2), "instances_per_s": round(N_RECEIVE / seconds, 1),
                              "mb_per_s": round(megabytes / seconds, 1)}

        # 2. C-ECHO while two workers burn both cores
        def echo_times(node, n=20):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                subprocess.run([ECHOSCU, "-aec", node.ae_title, "127.0.0.1", str(node.port)], check=True,
                               capture_output=True)
                times.append((time.perf_counter() - t0) * 1000)
            times.sort()
            return {"p50": round(statistics.median(times), 1), "p95": round(times[int(0.95 * len(times)) - 1], 1),
                    "max": round(times[-1], 1), "n": len(times)}

        os.environ["CALCNODE_TEST_ENGINE_BURN_S"] = "20"
        node = _node(tmp, "busy", workers={"count": 2})
        try:
            time.sleep(3)  # workers started and idle
            figures["echo_ms_idle"] = echo_times(node)
            for k in range(2):
                assert node.storescu(write(mg_dataset(64, 64, seed=k), tmp / f"busy{k}.dcm")).returncode == 0
            wait_until(lambda: sum(j.state == "running" for j in _jobs(node)[0]) == 2, 60, "two running analyses")
            figures["echo_ms_while_2_workers_busy"] = echo_times(node)
        finally:
            node.stop()
            del os.environ["CALCNODE_TEST_ENGINE_BURN_S"]

        # 3. end to end with a storescp destination
        synth = tmp / "synth"
        subprocess.run(CALCNODE + ["synth", "--out", str(synth), "--cases", "1", "--size", "768x640", "--quiet",
                                   "--workers", "1"], check=True, capture_output=True, cwd=ROOT)
        sources = sorted((synth / "dicom" / "SYNTH0001").glob("*.dcm"))
        dest = StoreSCP(tmp / "dest")
        stable = 2.0
        node = _node(tmp, "e2e", destinations=[dest.destination()], assembly={"stable_seconds": stable},
                     analysis={"engine": ENGINE})
        try:
            assert node.storescu(*sources).returncode == 0
            sent_at = time.perf_counter()
            wait_until(lambda: (lambda js, ss: js and ss and all(s.state == "sent" for s in ss))(*_jobs(node)),
                       120, "results sent")
            seconds = time.perf_counter() - sent_at
            jobs, sends = _jobs(node)
        finally:
            node.stop()
            dest.stop()
        figures["end_to_end_stand_in_analysis"] = {
            "instances_in": len(sources), "objects_out": len(sends), "stable_seconds": stable,
            "seconds_after_last_instance": round(seconds, 2),
            "seconds_minus_stable_wait": round(seconds - stable, 2),
            "analysis_and_write_seconds": jobs[0].analysis_s}
    write_results("bench_node", figures)


if __name__ == "__main__":
    main()
