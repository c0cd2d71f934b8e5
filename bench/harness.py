"""Small helpers shared by the benchmarks."""
from __future__ import annotations

import json
import platform
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
import resource
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed(figures: dict, key: str):
    """Store the wall-clock seconds of the block in figures[key]."""
    start = time.perf_counter()
    yield
    figures[key] = time.perf_counter() - start


def write_results(name: str, figures: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    figures = {"benchmark": name, "machine": platform.platform(), "python": platform.python_version(),
               **figures}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return path


def run_stage(stage, name: str, *args) -> dict:
    """``stage(name, *args)`` in a fresh (spawned) process, so its peak RSS is its own; prints the
    result without its private ``_``-keys and returns all of it."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(stage, name, *args).result()
    shown = {k: v for k, v in result.items() if not k.startswith("_")}
    print(f"{name}: {shown}", flush=True)
    return result
