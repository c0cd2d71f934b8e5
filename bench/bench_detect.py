"""Views without an ROI (``no_roi = "detect"``): a 4-view full-size simulated study analysed end to end.

One simulated study (``calcnode synth``, seed 41, 3328 x 2560 at 0.07 mm, both breasts, CC and MLO,
its ROI objects left out) is analysed by ``analysis.study.study_analysis`` with the shipped models:

  detect          the default policy: per view the whole breast segmented once, calcification
                  clusters detected (analysis.clusters), each detected cluster scored as an ROI
  whole_breast    the reference measured in the same run: the earlier default, one region per view
                  holding every calcification of the breast (research only now)

Each policy runs in a fresh (spawned) process, so its peak memory is its own; model loading is
included. Reported: seconds for the study, seconds per view (the study's seconds / 4), peak RSS,
clusters and objects found, and the ratio detect / whole_breast.

Targets (issue 21): <= 10 s per view without an ROI and <= 30 s for a 4-view study, on 2 cores.
Run it on a quiet machine: a benchmark sharing the cores with other work is not a result.

    .venv/bin/python -m bench.bench_detect
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import peak_rss_mb, run_stage, write_results

ROOT = Path(__file__).resolve().parents[1]
SEED, SIZE = "41", "3328x2560"


def _stage(policy: str, folder: str) -> dict:
    import torch

    from analysis.study import study_analysis

    torch.set_num_threads(2)
    images = sorted(Path(folder).rglob("MG_*.dcm"))
    baseline = peak_rss_mb()
    start = time.perf_counter()
    analysis = study_analysis(images, [], no_roi=policy)
    seconds = time.perf_counter() - start
    result = analysis.result
    rois = [roi for image in result.images for roi in image.rois]
    return {"views": len(images), "seconds": round(seconds, 2), "seconds_per_view": round(seconds / len(images), 2),
            "regions": len(rois), "actionable": sum(r.decision == "actionable" for r in rois),
            "views_without_cluster": sum(i.cluster_detection == "no_cluster_detected" for i in result.images),
            "peak_rss_mb": round(peak_rss_mb(), 1), "baseline_rss_mb": round(baseline, 1)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "dicom_node.cli", "synth", "--out", tmp, "--cases", "1",
                        "--seed", SEED, "--size", SIZE, "--quiet"], cwd=ROOT, check=True)
        figures: dict = {"study": f"calcnode synth --cases 1 --seed {SEED} --size {SIZE} (4 views, ROIs left out)"}
        for policy in ("detect", "whole_breast"):
            figures[policy] = run_stage(_stage, policy, tmp)
    detect, reference = figures["detect"], figures["whole_breast"]
    figures["detect_over_whole_breast"] = round(detect["seconds"] / max(reference["seconds"], 1e-9), 2)
    figures["targets"] = {"seconds_per_view<=10": detect["seconds_per_view"] <= 10,
                          "study_seconds<=30": detect["seconds"] <= 30}
    write_results("bench_detect", figures)


if __name__ == "__main__":
    main()
