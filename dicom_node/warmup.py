"""A worker's warm-up: one small simulated study analysed before the first real one.

A worker process's first analysis costs about 0.8 s more CPU than the next ones (measured on a
load-test study: 1.59 s, then 0.79 s): the libraries fill their caches on first use (the DICOM
dictionaries and IOD tables of the result writers, the network's first forward pass, lazily
imported modules). A node that starts into a queue, or a burst that arrives after a restart,
would make the first study of each worker pay it, and every study queued behind it wait for
it. :func:`warm_up` pays it at start instead: it simulates one 768 x 640 case with calcification
ROIs (``training.synth``, the same simulator as ``calcnode synth``), analyses it and writes
its result objects like a job, in a private folder under the state directory, then removes
everything. Nothing is recorded, sent or logged with patient data (the case is simulated).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

WARM_UP_ROWS, WARM_UP_COLUMNS = 768, 640
WARM_UP_SEED = 20261203


def warm_up(engines, folder: Path, *, write_gsps: bool) -> float:
    """Analyse one small simulated study with ``engines`` (a worker's ``EngineBox``) in
    ``folder`` (created, then removed) and return the seconds it took. Raises when the
    analysis fails, so the caller can say why; ``folder`` is removed either way."""
    from training.synth.config import SynthConfig
    from training.synth.dataset import generate_case

    from .worker import analyse_and_write

    started = time.monotonic()
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)  # what a killed warm-up left
    try:
        case = generate_case(SynthConfig(cases=1, seed=WARM_UP_SEED, rows=WARM_UP_ROWS,
                                         columns=WARM_UP_COLUMNS), 0, folder / "study")
        files = sorted((folder / "study" / "dicom").rglob("*.dcm"))
        images = [p for p in files if p.name.startswith("MG_")]
        rois = [p for p in files if not p.name.startswith("MG_")]
        if not images or not rois or not case.label_rows:
            raise RuntimeError("the simulator made no study with ROIs")
        study_uid = case.label_rows[0]["study_instance_uid"]  # the simulator's own record
        outcome = analyse_and_write(study_uid, images, rois, folder / "results", engines,
                                    write_gsps=write_gsps, input_hash="warm-up")
        if outcome.failure is not None:
            raise RuntimeError(outcome.failure)
        if not outcome.paths:
            raise RuntimeError("no result object was written")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return time.monotonic() - started
