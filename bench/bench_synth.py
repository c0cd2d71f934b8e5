"""Benchmark of the simulator: seconds per full-size image and peak memory.

    .venv/bin/python bench/bench_synth.py [--images 10] [--workers 2] [--size 3328x2560]
    python -m bench.bench_synth ...     python -m bench   (all benchmarks, defaults)

Generates ``--images`` full-size images (cases of 4 views each, rounded up) with
``--workers`` processes into a temporary folder, and measures in the same run a
reference: writing one uncompressed full-size 12-bit MG image with pydicom. Prints
seconds per image (wall clock, and per worker), the extrapolated time for 200 images,
peak resident memory of the main process and of the worker processes
(``resource.getrusage``), and the ratio to the reference; writes the same as JSON
to bench/results/bench_synth.json (bench.harness.write_results).
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import write_results  # noqa: E402
from training.synth.config import SynthConfig  # noqa: E402
from training.synth.dataset import generate_dataset  # noqa: E402
from training.synth.dicom_writer import ImageInfo, UidFactory, mg_dataset, save  # noqa: E402


def reference_write_seconds(rows: int, cols: int, folder: Path, repeats: int = 3) -> float:
    """Median time to build and write one uncompressed rows x cols 12-bit MG with pydicom."""
    uid = UidFactory("bench", 0)
    pixels = np.random.default_rng(0).integers(0, 4096, (rows, cols), dtype=np.uint16)
    times = []
    for k in range(repeats):
        info = ImageInfo("SYNTH0001", "SYNTH^CASE0001", uid("st"), uid("se"), uid("im", k), "S1",
                         "20200101", "090000", 1, 1, "L", "CC", 0.07, "BENCH")
        t0 = time.perf_counter()
        save(mg_dataset(pixels, info), folder / f"ref{k}.dcm")
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", default="3328x2560")
    parser.add_argument("--name", default="bench_synth", help="results file bench/results/NAME.json")
    args = parser.parse_args([] if argv is None else argv)  # `python -m bench` calls main()
    rows, cols = (int(v) for v in args.size.lower().split("x"))
    cases = max(1, math.ceil(args.images / 4))
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        ref = reference_write_seconds(rows, cols, tmp)
        config = SynthConfig(cases=cases, seed=1, rows=rows, columns=cols)
        summary = generate_dataset(config, tmp / "out", workers=args.workers, progress=True)
        size_mb = sum(p.stat().st_size for p in (tmp / "out").rglob("*") if p.is_file()) / 2 ** 20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = summary["images"]
    per_image = summary["seconds"] / n
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "images": n, "cases": cases, "size": [rows, cols], "workers": args.workers,
        "wall_seconds": round(summary["seconds"], 2),
        "seconds_per_image": round(per_image, 3),
        "worker_seconds_per_image": round(summary["worker_seconds_per_image"], 3),
        "extrapolated_seconds_for_200_images": round(per_image * 200, 1),
        "reference_seconds_write_one_uncompressed_image": round(ref, 4),
        "ratio_seconds_per_image_to_reference": round(per_image / ref, 1),
        "peak_rss_main_mb": round(self_mb, 1),
        "peak_rss_largest_worker_mb": round(child_mb, 1),
        "output_mb": round(size_mb, 1),
        "cpu_count": os.cpu_count(),
    }
    print(f"{n} images {rows}x{cols} with {args.workers} workers: {per_image:.2f} s/image wall "
          f"({summary['worker_seconds_per_image']:.2f} s per image per worker); 200 images ~ "
          f"{per_image * 200 / 60:.1f} min; reference write {ref * 1000:.0f} ms -> ratio {per_image / ref:.1f}; "
          f"peak RSS main {self_mb:.0f} MB, worker {child_mb:.0f} MB; output {size_mb:.0f} MB")
    print(f"wrote {write_results(args.name, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
