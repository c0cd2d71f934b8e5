"""`calcnode batch` on Dask: throughput of N full-size simulator studies, 1 vs 2 local worker processes.

For each worker count a fresh ``LocalCluster`` (single-threaded worker processes, the batch's
embedded default) analyses the same ``calcnode synth`` studies (3328 x 2560, 4 views, the
two views of the affected breast carry the radiologist's GSPS ROIs; ``--no-roi skip``, the
default here, leaves the two views without ROI out, ``--no-roi whole-breast`` analyses them over
the whole breast as the node's default policy does) into a fresh
output folder with :func:`dicom_node.batch.run_batch`. Figures: studies per minute (cluster
start excluded, model loading included), the speed-up of 2 workers over 1 (target >= 1.7 on 2
cores), seconds per stage summed over the studies -- load (images + ROI objects), segment
(breast mask + HDoG + CNN), features + classify, write (SEG, SR, CAD SR, GSPS), other -- taken
inside each task by a timing wrapper around the real engine (:func:`timed_engine`), and the peak
memory of each worker process. Both runs must give identical results tables.

    .venv/bin/python -m bench.bench_dask                  # 40 studies, ROIs only: ~10 minutes on 2 cores
    .venv/bin/python -m bench.bench_dask --studies 4 --no-roi whole-breast   # ~30 minutes
    .venv/bin/python bench/bench_dask.py --studies 40 --data DIR   # reuse studies made by an earlier run

Writes bench/results/bench_dask.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `bench` and the workers' engine must be importable
    sys.path.insert(0, str(ROOT))

from bench.harness import write_results  # noqa: E402

ENGINE = "bench.bench_dask:timed_engine"
TARGET_SPEEDUP = 1.7


# --------------------------------------------------------------------------- the timing engine

class _StageClock:
    """Wall-clock seconds per stage; only the outermost timed call counts (no double counting)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.active = False

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            if self.active:
                return fn(*args, **kwargs)
            self.active = True
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0
                self.active = False
        return timed


# The functions analysis.study calls for each stage: (module, attribute, stage). study_analysis
# imports segment and breast_mask inside the function, so patching their modules reaches it.
_STAGES = (("analysis.study", "load_image", "load"), ("analysis.study", "parse_rois", "load"),
           ("analysis.segmentation.breast_mask", "breast_mask", "segment"),
           ("analysis.segmentation.pipeline", "segment", "segment"),
           ("analysis.study", "analyze_roi", "features_classify"))


class TimedEngine:
    """calcnode's engine, with the seconds of each stage of its last analysis (``stage_seconds``)."""

    def __init__(self, config):
        from dicom_node.engine import CalcnodeEngine

        self.inner = CalcnodeEngine(config)
        self._last: dict[str, float] = {}

    def model_identity(self):
        return self.inner.model_identity()

    def analyze(self, images, roi_files):
        import importlib

        clock = _StageClock()
        saved = []
        for module_name, attr, stage in _STAGES:
            module = importlib.import_module(module_name)
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, clock.wrap(stage, getattr(module, attr)))
        t0 = time.perf_counter()
        try:
            return self.inner.analyze(images, roi_files)
        finally:
            for module, attr, original in saved:
                setattr(module, attr, original)
            total = time.perf_counter() - t0
            self._last = dict(clock.seconds, other=max(0.0, total - sum(clock.seconds.values())))

    def stage_seconds(self) -> dict:
        return dict(self._last)


def timed_engine(config):
    return TimedEngine(config)


# --------------------------------------------------------------------------- the benchmark

def _worker_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synth(out: Path, studies: int, size: str) -> None:
    subprocess.run([sys.executable, "-m", "dicom_node.cli", "synth", "--out", str(out), "--cases", str(studies),
                    "--size", size, "--seed", "41", "--quiet", "--workers", "2"], cwd=ROOT, check=True)


def _run(data: Path, out: Path, n_workers: int, no_roi: str) -> dict:
    from dicom_node.batch import BatchOptions, run_batch
    from dicom_node.cluster import dask_client
    from dicom_node.config import load_config

    config = load_config(overrides={"analysis": {"engine": ENGINE}, "assembly": {"no_roi_policy": no_roi}})
    t0 = time.perf_counter()
    with dask_client(None, n_workers=n_workers) as client:
        start_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        summary = run_batch(config, BatchOptions(out=out, data=data, progress=True), client=client)
        seconds = time.perf_counter() - t1
        peaks = sorted(client.run(_worker_peak_rss_mb).values())
    if summary["failures"] or summary["computed"] != summary["studies"]:
        raise SystemExit(f"bench_dask: the run with {n_workers} worker(s) did not analyse every study: {summary}")
    stages = summary["stage_seconds_all_studies"]
    split = {k: round(stages.get(k, 0.0), 1) for k in ("load", "segment", "features_classify", "other", "write")}
    return {"workers": n_workers, "studies": summary["studies"], "rois": summary["rois"],
            "cluster_start_seconds": round(start_s, 2), "seconds": round(seconds, 1),
            "studies_per_min": round(summary["studies"] / seconds * 60, 3),
            "stage_seconds_summed_over_studies": split,
            "analysis_seconds_per_study": round(stages.get("analyze", 0.0) / summary["studies"], 1),
            "peak_rss_mb_per_worker": [round(p) for p in peaks]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_dask", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=40, help="simulated studies (default 40)")
    parser.add_argument("--size", default="3328x2560", help="image size ROWSxCOLS (default 3328x2560)")
    parser.add_argument("--data", metavar="DIR", help="existing `calcnode synth` folder to use (else made here)")
    parser.add_argument("--no-roi", choices=("skip", "whole-breast"), default="skip",
                        help="images without ROI: skip (default: the studies as a radiologist's ROIs give "
                             "them, as bench_load) or whole-breast (the node's default policy: ~260 s per "
                             "study on 2 cores today)")
    args = parser.parse_args(argv or [])
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp_name:
        tmp = Path(tmp_name)
        data = Path(args.data) if args.data else tmp / "synth"
        if not args.data:
            t0 = time.perf_counter()
            _synth(data, args.studies, args.size)
            print(f"bench_dask: {args.studies} studies synthesised in {time.perf_counter() - t0:.0f} s", flush=True)
        runs = {}
        for n in (1, 2):
            runs[n] = _run(data, tmp / f"out{n}", n, args.no_roi.replace("-", "_"))
            print(f"bench_dask: {n} worker(s): {runs[n]}", flush=True)
        same = (tmp / "out1" / "results.csv").read_bytes() == (tmp / "out2" / "results.csv").read_bytes()
        speedup = runs[1]["seconds"] / runs[2]["seconds"]  # the same studies: the throughput ratio
        figures = {"cores": os.cpu_count(), "studies": runs[1]["studies"], "image_size": args.size,
                   "no_roi_policy": args.no_roi,
                   "synth_data": str(args.data) if args.data else "made by this run (seed 41)",
                   "runs": [runs[1], runs[2]], "speedup_2_vs_1": round(speedup, 2),
                   "target_speedup": TARGET_SPEEDUP, "meets_target": speedup >= TARGET_SPEEDUP,
                   "identical_results_tables": same}
        shutil.rmtree(tmp / "out1", ignore_errors=True)
        shutil.rmtree(tmp / "out2", ignore_errors=True)
    write_results("bench_dask", figures)
    if not same:
        raise SystemExit("bench_dask: 1 and 2 workers gave different results tables")


if __name__ == "__main__":
    main(sys.argv[1:])
