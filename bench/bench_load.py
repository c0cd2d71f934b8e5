"""Load: 50 four-view studies from 4 parallel senders through a real node with the shipped models.

What a PACS does on a busy morning: 4 senders (DCMTK ``storescu``, one association per study, each
sender sending its studies one after the other) push 50 ``calcnode synth`` studies (4 views of
3328 x 2560 at 0.07 mm, 17 MB each; the radiologist's GSPS ROIs on the two views of the affected
breast) into a ``calcnode serve`` with ``workers.count = 2`` and the shipped demonstration models;
the results go to a DCMTK ``storescp`` standing in for the PACS.

Reported:

* ingest: MB/s of the node while it also analyses (first association opened -> last instance
  stored), and the same files from the same 4 senders into DCMTK ``storescp`` measured in this run
  (one process, associations one after the other: its default) and ``storescp --fork`` (a process
  per association): the ratios node / storescp;
* per-study latency: last instance of the study received -> last result object stored by the
  destination (both from the node's state database: ``studies.last_received_at`` and
  ``sends.sent_at``, which is written after the destination's success status), p50 / p95 / max,
  split into the stability wait, the queue wait and the analysis (``jobs.analysis_s``);
* that every study got its results (a done job and every result object sent);
* throughput: studies analysed per minute, and the node's peak memory (its worker processes
  included);
* where the CPU went (``node.cpu``), from the first instance sent until every result was stored:
  the node's own process (listener, assembler, sender), its analysis workers (and per study) and
  the storescu senders, which share the same 2 cores;
* the timeline (seconds from the first instance): when the last study arrived, when the median
  study arrived and when the median study was done, how many studies were done while studies
  still arrived and the rate after that. A faster receiver ends the arrivals sooner; the latency
  then only falls if the studies are also done sooner.

The burst starts once ``/healthz`` reports every worker ready (models loaded), as on a node
that has been running; ``workers_ready_after_start_s`` says how long that took after the start.

Settings that matter (written into the results): the production assembly defaults
(``assembly.stable_seconds = 30``, ``assembly.association_grace_seconds = 2``: each ``storescu``
releases its association at the end of its study, which is then taken as complete 2 s later) and
``assembly.no_roi_policy = "skip"`` (the two views without a ROI are not analysed over the whole
breast: "per study with ROIs").

Two modes, each with its target (``targets`` / ``targets_met`` in the results):

* **burst** (default: the senders send back to back): sustained **>= 100 studies a minute** with ROIs
  on 2 cores (``node.studies_per_minute``: first job queued -> last result stored);
* **paced** (``--rate 25``: the 4 senders together start 25 studies a minute, each sender one every
  4 x 60 / 25 = 9.6 s; or ``--interval S`` per sender): latency **p50 <= 4 s** at 25 studies a minute
  (``node.latency_s.p50``: last instance received -> last result object stored by the destination).

    python -m bench.bench_load [--studies 50] [--senders 4] [--data DIR] [--keep-state DIR] [--log-level INFO]
                                      (burst: ~2 min on 2 cores once the studies exist)
    python -m bench.bench_load --rate 25 [--studies 50] [--data DIR]
                                      (paced: ~2.5 min once the studies exist)

``--data DIR`` keeps the generated studies there and reuses them in the next run. ``--keep-state DIR``
keeps the node's state database and log; with ``--log-level INFO`` the log has every instance and
every object sent (how the send stall of dicom_node.scu_reactor was found).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CALCNODE, STORESCU, RunningNode, free_port  # noqa: E402
from node_helpers import STORESCP, StoreSCP, http_get, node_sections, wait_until, write_config  # noqa: E402

SEED = 9100
# the targets of the two modes (module docstring)
BURST_STUDIES_PER_MINUTE_MIN = 100.0
PACED_RATE_PER_MINUTE = 25.0
PACED_LATENCY_P50_S_MAX = 4.0


def _studies(data: Path, n: int) -> list[list[Path]]:
    """n synthetic four-view studies (generated once into ``data``)."""
    dicom = data / "dicom"
    cases = sorted(dicom.glob("SYNTH*")) if dicom.is_dir() else []
    if len(cases) < n:
        subprocess.run(CALCNODE + ["synth", "--out", str(data), "--cases", str(n), "--seed", str(SEED),
                                   "--negative-fraction", "0", "--quiet"], check=True, cwd=ROOT)
        cases = sorted(dicom.glob("SYNTH*"))
    return [sorted(c.glob("*.dcm")) for c in cases[:n]]


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _summary(values: list[float]) -> dict:
    return {"p50": round(statistics.median(values), 2), "p95": round(_percentile(values, 0.95), 2),
            "max": round(max(values), 2), "n": len(values)}


def _send_all(studies: list[list[Path]], senders: int, aet: str, port: int,
              interval_s: float = 0.0) -> tuple[float, list[str]]:
    """Each sender sends its share of the studies, one association per study, starting one every
    ``interval_s`` seconds (0: back to back). -> (seconds, errors)."""
    shares = [studies[k::senders] for k in range(senders)]
    errors: list[str] = []

    def sender(share):
        start = time.monotonic()
        for k, files in enumerate(share):
            time.sleep(max(0.0, start + k * interval_s - time.monotonic()))
            run = subprocess.run([STORESCU, "-aet", "PACS", "-aec", aet, "127.0.0.1", str(port),
                                  *map(str, files)], capture_output=True, text=True)
            if run.returncode != 0:
                errors.append(run.stderr.strip()[-300:])

    threads = [threading.Thread(target=sender, args=(share,)) for share in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, errors


def _storescp_reference(studies, senders, tmp: Path, fork: bool) -> float:
    out = tmp / ("storescp-fork" if fork else "storescp")
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen([STORESCP, *(["--fork"] if fork else []), "-aet", "REF", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        seconds, errors = _send_all(studies, senders, "REF", port)
        assert not errors, errors[:3]
        assert sum(1 for _ in out.iterdir()) == sum(len(s) for s in studies)
        return seconds
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(out)


def _process_tree(pid: int):
    """``pid`` and its descendants that are alive now: (pid, its /proc folder)."""
    pids = [pid]
    while pids:
        p = pids.pop()
        proc = Path(f"/proc/{p}")
        try:
            pids += [int(c) for c in (proc / "task" / str(p) / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # gone meanwhile
        yield p, proc


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children now, in MB."""
    total = 0
    for _, proc in _process_tree(pid):
        try:
            total += int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
    return total / 1e6


def _tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of a process and of each of its descendants, by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu: dict[int, float] = {}
    for p, proc in _process_tree(pid):
        try:
            stat = (proc / "stat").read_text()
            fields = stat[stat.rfind(")") + 2:].split()
            cpu[p] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass
    return cpu


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) children: the storescu senders."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_split(node_pid: int, before: dict[int, float], after: dict[int, float], senders_s: float,
               n_studies: int) -> dict:
    """Where the 2 cores went from the first instance sent to the last result stored: the node's
    own process (DICOM listener, assembler, sender), its analysis workers and the storescu senders.
    The workers' CPU per study is what sets the rate after a burst has arrived."""
    node = after.get(node_pid, 0.0) - before.get(node_pid, 0.0)
    workers = sum(cpu - before.get(p, 0.0) for p, cpu in after.items() if p != node_pid)
    return {"node_process_s": round(node, 1), "workers_s": round(workers, 1),
            "storescu_senders_s": round(senders_s, 1),
            "workers_s_per_study": round(workers / n_studies, 3) if n_studies else None}


def _timeline(first_instance: float | None, arrivals: list[float], done: list[float]) -> dict | None:
    """When the studies arrived and were done, in seconds from the first instance received.

    A study arrives with its last instance (where its latency starts). Shows why a faster
    receiver need not lower the latency of a burst: the arrivals end sooner, while the
    studies are done at the rate the analysis allows.
    """
    if first_instance is None or not arrivals or not done:
        return None
    arrivals_end = arrivals[-1] - first_instance
    after = [t for t in done if t > arrivals[-1]]
    span = (after[-1] - arrivals[-1]) if after else 0.0
    return {"arrivals_end_s": round(arrivals_end, 2),
            "median_study_arrived_s": round(statistics.median(arrivals) - first_instance, 2),
            "median_study_done_s": round(statistics.median(done) - first_instance, 2),
            "done_while_arriving": len(done) - len(after),
            "studies_per_minute_after_arrivals": round(60 * len(after) / span, 1) if span > 0 else None}


def _node_figures(db_path: Path, n_studies: int) -> dict:
    db = sqlite3.connect(db_path)
    try:
        studies = dict(db.execute("SELECT study_instance_uid, last_received_at FROM studies"))
        first_instance = db.execute("SELECT min(received_at) FROM instances").fetchone()[0]
        jobs = db.execute("""SELECT study_instance_uid, id, state, created_at, started_at, finished_at, analysis_s
                             FROM jobs ORDER BY id""").fetchall()
        sends = db.execute("SELECT job_id, state, sent_at FROM sends").fetchall()
    finally:
        db.close()
    last_job = {}
    for study, job_id, state, created, started, finished, analysis_s in jobs:
        last_job[study] = (job_id, state, created, started, finished, analysis_s)
    by_job: dict[int, list] = {}
    for job_id, state, sent_at in sends:
        by_job.setdefault(job_id, []).append((state, sent_at))
    latency, queue_wait, analysis, sending, complete = [], [], [], [], 0
    done_times = []
    for study, received in studies.items():
        job = last_job.get(study)
        if job is None:
            continue
        job_id, state, created, started, finished, analysis_s = job
        job_sends = by_job.get(job_id, [])
        if state == "done" and job_sends and all(s == "sent" for s, _ in job_sends):
            complete += 1
            done_at = max(t for _, t in job_sends)
            latency.append(done_at - received)
            queue_wait.append(started - created)
            analysis.append(analysis_s)
            sending.append(done_at - finished)
            done_times.append(done_at)
    return {"studies_received": len(studies), "studies_with_all_results_sent": complete,
            "every_study_got_its_results": complete == n_studies == len(studies),
            "latency_s": _summary(latency) if latency else None,
            "queue_wait_s": _summary(queue_wait) if queue_wait else None,
            "analysis_and_write_s": _summary(analysis) if analysis else None,
            "sending_s": _summary(sending) if sending else None,
            "timeline": _timeline(first_instance, sorted(studies.values()), sorted(done_times)),
            "_first_job_created": min(j[2] for j in last_job.values()) if last_job else None,
            "_last_sent": max((t for s in by_job.values() for _, t in s if t), default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="node analysis processes (workers.count)")
    parser.add_argument("--data", type=Path, help="keep / reuse the generated studies here")
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between the starts of a sender's studies (default 0: back to back, "
                             "the burst; > 0 measures latency at a paced load)")
    parser.add_argument("--rate", type=float, default=0.0, metavar="STUDIES_PER_MIN",
                        help=f"paced mode at this many studies a minute over all senders (sets --interval; "
                             f"the paced target is stated for {PACED_RATE_PER_MINUTE:g})")
    parser.add_argument("--model-bundle", type=Path,
                        help="classifier bundle folder for the node (default: the shipped one), e.g. to "
                             "compare two bundles on the same machine")
    parser.add_argument("--keep-state", type=Path,
                        help="copy the node's state database and its log here afterwards (per-study timelines)")
    parser.add_argument("--log-level", default="WARNING",
                        help="the node's log level (default WARNING; INFO logs every instance and costs CPU)")
    args = parser.parse_args()
    if args.rate > 0:
        args.interval = args.senders * 60.0 / args.rate
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    figures: dict = {"cpu_count": os.cpu_count(), "studies": args.studies, "senders": args.senders,
                     "node_workers": args.workers, "sender_interval_s": round(args.interval, 3),
                     "paced_studies_per_minute": round(args.senders * 60.0 / args.interval, 1) if args.interval else None,
                     "assembly": "production defaults (stable_seconds 30, association_grace_seconds 2)",
                     "no_roi_policy": "skip",
                     "model": str(args.model_bundle) if args.model_bundle else
                     "shipped demonstration models (NOT FOR CLINICAL USE)"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or tmp / "synth"
        t0 = time.perf_counter()
        studies = _studies(data, args.studies)
        figures["generate_s"] = round(time.perf_counter() - t0, 1)
        n_files = sum(len(s) for s in studies)
        megabytes = sum(p.stat().st_size for s in studies for p in s) / 1e6
        figures["instances"] = n_files
        figures["megabytes"] = round(megabytes, 1)
        for s in studies:  # the files are read from the page cache by every run alike
            for p in s:
                p.read_bytes()

        ref = {}
        for fork in (False, True):
            seconds = _storescp_reference(studies, args.senders, tmp, fork)
            ref["storescp --fork" if fork else "storescp"] = {"seconds": round(seconds, 2),
                                                              "mb_per_s": round(megabytes / seconds, 1)}
        figures["reference_ingest"] = ref

        dest = StoreSCP(tmp / "dest")
        http_port = free_port()
        config = write_config(tmp / "node.toml", destinations=[dest.destination("pacs")], **node_sections(
            http_port=http_port,
            # the production assembly defaults (node_sections' test value of stable_seconds taken out)
            assembly={"stable_seconds": 30.0, "association_grace_seconds": 2.0, "no_roi_policy": "skip"},
            workers={"count": args.workers, "stop_timeout_s": 30.0, "warm_up": True},  # the production default
            analysis={"engine": "", "model_bundle": str(args.model_bundle.resolve()) if args.model_bundle else ""},
            logging={"level": args.log_level}))
        node = RunningNode(tmp / "node", config=config)
        t0 = time.perf_counter()
        def workers_ready():
            try:
                return json.loads(http_get(http_port, "/healthz")[1])["workers"]["ready"] == args.workers
            except OSError:  # the monitoring server is not listening yet
                return False

        wait_until(workers_ready, 120, "the workers' models loaded")
        figures["workers_ready_after_start_s"] = round(time.perf_counter() - t0, 1)
        peak = {"mb": 0.0}
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak["mb"] = max(peak["mb"], _tree_rss_mb(node.proc.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            cpu_before, senders_before = _tree_cpu_s(node.proc.pid), _children_cpu_s()
            seconds, errors = _send_all(studies, args.senders, node.ae_title, node.port, args.interval)
            senders_cpu = _children_cpu_s() - senders_before
            assert not errors, errors[:3]
            ingest_done = time.time()
            figures["node_ingest"] = {"seconds": round(seconds, 2), "mb_per_s": round(megabytes / seconds, 1)}
            for name, r in ref.items() if not args.interval else ():
                figures["node_ingest"][f"seconds_ratio_vs_{name.replace(' --', '_')}"] = round(
                    seconds / r["seconds"], 2)

            def all_sent():
                got = _node_figures(node.state_dir / "state.db", args.studies)
                return got if got["studies_with_all_results_sent"] == args.studies else None

            wait_until(all_sent, 60 * args.studies, "every study's results at the destination", interval=2.0,
                       on_fail=lambda: str(_node_figures(node.state_dir / "state.db", args.studies)))
            cpu = _cpu_split(node.proc.pid, cpu_before, _tree_cpu_s(node.proc.pid), senders_cpu, args.studies)
        finally:
            sampling.set()
            sampler.join()
            node.stop()
            dest.stop()
        result = _node_figures(node.state_dir / "state.db", args.studies)
        if args.keep_state:
            args.keep_state.mkdir(parents=True, exist_ok=True)
            shutil.copy2(node.state_dir / "state.db", args.keep_state / "state.db")
            shutil.copy2(node.log_path, args.keep_state / "node.log")
        last_sent = result.pop("_last_sent")
        span = last_sent - result.pop("_first_job_created")
        result["studies_per_minute"] = round(60 * args.studies / span, 1)
        result["seconds_after_ingest_until_last_result"] = round(last_sent - ingest_done, 1)
        result["node_peak_rss_mb_incl_workers"] = round(peak["mb"])
        result["destination_objects"] = len(dest.received())
        result["cpu"] = cpu
        figures["node"] = result
        figures["targets"], figures["targets_met"] = _targets(args, result)
    write_results("bench_load" if not args.interval else f"bench_load_paced_{args.interval:g}s", figures)


def _targets(args, result: dict) -> tuple[dict, bool | None]:
    """The mode's target and whether this run met it (None: a paced run at another rate)."""
    if not args.interval:
        return ({"mode": "burst", "studies_per_minute_min": BURST_STUDIES_PER_MINUTE_MIN,
                 "workers": 2, "cores": 2},
                result["studies_per_minute"] >= BURST_STUDIES_PER_MINUTE_MIN)
    rate = args.senders * 60.0 / args.interval
    target = {"mode": "paced", "at_studies_per_minute": PACED_RATE_PER_MINUTE,
              "latency_p50_s_max": PACED_LATENCY_P50_S_MAX}
    if abs(rate - PACED_RATE_PER_MINUTE) > 0.5:
        return target, None
    latency = result.get("latency_s")
    return target, bool(latency and latency["p50"] <= PACED_LATENCY_P50_S_MAX)


if __name__ == "__main__":
    main()
