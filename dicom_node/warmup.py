"""A worker's warm-up: one small simulated study analysed before the first real one.

A worker process's first analysis costs about 0.8 s more CPU than the next ones (measured on a
load-test study: 1.59 s, then 0.79 s): the libraries fill their caches on first use (the DICOM
dictionaries and IOD tables of the result writers, the network's first forward pass, the pixel
decoders, lazily imported modules). A node that starts into a queue, or a burst that arrives
after a restart, would make the first study of each worker pay it, and every study queued behind
it wait for it. :func:`warm_up` pays it at start instead: it analyses the small study shipped in
``dicom_node/warmup_study/`` (one simulated 768 x 640 CC view, JPEG-LS lossless, with a GSPS
holding one calcification ROI) and writes its result objects like a job, in a private folder
under the state directory, then removes everything. Nothing is recorded, sent or logged with
patient data (the case is simulated).

The study ships as files so that the running node needs no simulator (the ``training``
package); ``dicom_node/warmup_study/README.md`` says how it was made.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pydicom

from .job import EngineBox, analyze_and_write

#: The shipped warm-up study: MG_*.dcm images and PR_*.dcm ROI objects.
WARM_UP_STUDY = Path(__file__).resolve().parent / "warmup_study"


def warm_up(engines: EngineBox, folder: Path, *, write_gsps: bool) -> float:
    """Analyse the shipped warm-up study with ``engines`` (a worker's :class:`EngineBox`),
    writing its results in ``folder`` (created, then removed), and return the seconds it took.

    Raises when the analysis fails, so the caller can say why; ``folder`` is removed either way.
    """
    started = time.monotonic()
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)  # what a killed warm-up left
    try:
        images = sorted(WARM_UP_STUDY.glob("MG_*.dcm"))
        rois = sorted(WARM_UP_STUDY.glob("PR_*.dcm"))
        if not images or not rois:
            raise RuntimeError(f"the warm-up study is incomplete in {WARM_UP_STUDY}")
        study_uid = str(pydicom.dcmread(images[0], stop_before_pixels=True,
                                        specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
        outcome = analyze_and_write(study_uid, images, rois, folder / "results", engines,
                                    write_gsps=write_gsps, input_hash="warm-up")
        if outcome.failure is not None:
            raise RuntimeError(outcome.failure)
        if not outcome.paths:
            raise RuntimeError("no result object was written")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return time.monotonic() - started
