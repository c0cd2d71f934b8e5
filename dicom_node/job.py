"""One study's analysis and its result objects, with no database: the part of a job that can run anywhere.

:func:`analyze_and_write` runs in a node worker process (:mod:`dicom_node.worker`), at a
worker's warm-up (:mod:`dicom_node.warmup`) and on Dask workers (:mod:`dicom_node.dask_backend`,
:mod:`dicom_node.batch`): the input files and the output folder must be visible where it runs.
The node's bookkeeping of the outcome (job done or failed, sends queued) is
:func:`dicom_node.worker.record_outcome`.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from analysis.results import StudyResult
from analysis.dicom_input.image import read_dataset
from sr_templates import write_study_results
from sr_templates.headers import minimal_source

from .config import Config
from .engine import EngineError, build_engine, unavailable_identity
from .logs import event

log = logging.getLogger("calcnode.worker")


class EngineBox:
    """The worker's engine, built when the worker starts or at the first job (and rebuilt after a
    failed build)."""

    def __init__(self, config: Config):
        self.config = config
        self.engine = None
        self.error: str | None = None

    def get(self):
        if self.engine is None:
            try:
                self.engine = build_engine(self.config)
            except EngineError as exc:
                self.error = str(exc)
                raise
            self.error = None
            identity = self.engine.model_identity()
            event(log, logging.WARNING if identity.not_for_clinical_use else logging.INFO,
                  "model loaded" + (" (NOT FOR CLINICAL USE)" if identity.not_for_clinical_use else ""),
                  model=identity.name, version=identity.version, sha256=identity.sha256,
                  training_data=identity.training_data)
        return self.engine

    def identity(self):
        if self.engine is not None:
            try:
                return self.engine.model_identity()
            except Exception:  # noqa: BLE001 - a report must still be written
                pass
        return unavailable_identity(self.error or "no model loaded")


def one_line(text: str, limit: int = 1000) -> str:
    text = " ".join(str(text).replace("\\", "/").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def failure_result(study_uid: str, reason: str, identity, started: datetime, input_hash: str):
    finished = datetime.now()
    return StudyResult(study_instance_uid=study_uid, images=(), model=identity, started=started,
                       finished=max(finished, started), failure=one_line(reason),
                       # keeps failure reports of different input sets apart (UIDs derive from it)
                       parameters={"input_set": input_hash[:16]})


def _where(exc: BaseException) -> str:
    """Where an exception was raised, as ``package/module.py:function`` (no values: a message
    may quote a header value, i.e. patient data)."""
    tb = exc.__traceback__
    frame = None
    while tb is not None:
        frame, tb = tb.tb_frame, tb.tb_next
    if frame is None:
        return "?"
    parts = Path(frame.f_code.co_filename).parts
    return f"{'/'.join(parts[-2:])}:{frame.f_code.co_name}"


def write_failure(exc: BaseException, fields: dict) -> str:
    """Log that the result objects could not be written and return the reason the failure
    report gives: the exception's type and where, not its message (it may quote a header value)."""
    where = _where(exc)
    event(log, logging.ERROR, "results could not be written", exception=type(exc).__name__, where=where, **fields)
    return (f"the results could not be written ({type(exc).__name__} in {where}): a value in the source "
            "images' headers is probably not valid DICOM")


def log_image_warnings(result, fields: dict) -> None:
    """One log line per image warning (an assumed pixel spacing, ...): the SR lists them too."""
    for image in result.images:
        for warning in image.warnings:
            event(log, logging.WARNING, "image warning", sop_instance_uid=image.sop_instance_uid,
                  warning=one_line(warning, 300), **fields)


def write_failure_report(study_uid: str, failure: str, engines: "EngineBox", started: datetime, input_hash: str,
                         images: list[Path], out_dir: Path, fields: dict) -> tuple[list[Path], str]:
    """The failure SR and CAD SR: on the source headers, else (the last line of defence) on
    their identity only (:func:`sr_templates.headers.minimal_source`). Returns the paths written
    and the failure, extended when even that was impossible."""
    report = failure_result(study_uid, failure, engines.identity(), started, input_hash)
    try:
        return write_study_results(report, images, out_dir, gsps=False), failure
    except Exception as exc:  # noqa: BLE001 - e.g. a header value no writer takes
        shutil.rmtree(out_dir, ignore_errors=True)
        where = _where(exc)
        event(log, logging.ERROR, "failure report could not be written on the source headers; writing a "
              "minimal one", exception=type(exc).__name__, where=where, **fields)
    minimal = []
    for path in images:
        try:
            minimal.append(minimal_source(read_dataset(path, stop_before_pixels=True)))
        except Exception:  # noqa: BLE001 - an unreadable file: left out
            continue
    report = failure_result(study_uid, f"{failure}; the report leaves out the source images' headers except "
                            "the patient, study and image identity", engines.identity(), started, input_hash)
    try:
        return write_study_results(report, minimal, out_dir, gsps=False), report.failure
    except Exception as exc:  # noqa: BLE001 - e.g. no readable source image at all
        shutil.rmtree(out_dir, ignore_errors=True)
        event(log, logging.ERROR, "no failure report could be written", exception=type(exc).__name__,
              where=_where(exc), **fields)
        return [], f"{failure}; no failure report could be written ({type(exc).__name__})"


@dataclass(frozen=True)
class AnalysisOutcome:
    """What :func:`analyze_and_write` did for one study. Plain data: it may come back from a Dask
    worker (:mod:`dicom_node.dask_backend`, :mod:`dicom_node.batch`).

    ``failure``: None when analysed, else why not (the written SR says so too); ``paths``: the
    result objects written, in writing order; ``rows``: one dict per ROI (:func:`roi_rows`);
    ``seconds``: wall-clock seconds of the whole call; ``stage_seconds``: ``analyze`` and ``write``
    seconds plus the engine's own split when it reports one (``engine.stage_seconds()``).
    """

    failure: str | None
    paths: tuple[str, ...]
    rows: tuple[dict, ...] = ()
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    model: str = ""


def roi_rows(result) -> list[dict]:
    """One plain dict per ROI of a ``StudyResult`` (the batch results table, the job summary).

    ``roi_kind`` ``detected_cluster``: a cluster the node detected on a view without ROI, with its
    ``detection_confidence`` in [0, 1] (None for drawn ROIs); ``cluster_detection``: the view's
    :attr:`analysis.results.ImageResult.cluster_detection` (None for a view with drawn ROIs)."""
    return [{"study_instance_uid": result.study_instance_uid, "image_sop_instance_uid": image.sop_instance_uid,
             "roi_id": roi.roi_id, "roi_label": roi.label, "roi_kind": roi.kind, "status": roi.status,
             "n_calcifications": roi.n_calcifications, "score": roi.score, "threshold": roi.threshold,
             "decision": roi.decision, "reason": roi.reason, "detection_confidence": roi.detection_confidence,
             "cluster_detection": image.cluster_detection}
            for image, roi in result.rois]


def analyze_and_write(study_uid: str, images: list[Path], rois: list[Path], out_dir: Path, engines: EngineBox, *,
                      write_gsps: bool, input_hash: str, give_up: str | None = None,
                      log_fields: dict | None = None) -> AnalysisOutcome:
    """Analyse one study and write its result objects to ``out_dir`` (emptied first); no database.

    The part of a job that can run anywhere the input files and ``out_dir`` are visible: in a
    node worker process or on a Dask worker. A failed analysis still writes an SR and a CAD SR
    that say why (when a source image can be read at all). ``give_up``: do not analyse, write a
    failure report with this reason.
    """
    fields = log_fields or {}
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)  # what an interrupted earlier attempt left
    images, rois = [Path(p) for p in images], [Path(p) for p in rois]
    started, t0 = datetime.now(), time.monotonic()
    stages: dict[str, float] = {}
    failure: str | None = None
    paths: list[Path] = []
    rows: list[dict] = []
    missing = [str(p) for p in images + rois if not p.exists()]
    if give_up is not None:
        failure = give_up
    elif missing:
        failure = (f"{len(missing)} input file(s) cannot be found (removed by retention or by hand, or not "
                   "on storage this worker shares)")
    elif not images:
        failure = "the study holds no MG image"
    else:
        result = None
        try:
            engine = engines.get()
            t = time.monotonic()
            result = engine.analyze(images, rois)
            stages["analyze"] = time.monotonic() - t
            split = getattr(engine, "stage_seconds", None)  # optional: the engine's own split (benchmarks)
            if callable(split):
                stages.update(split() or {})
            if result.study_instance_uid != study_uid:
                raise ValueError(f"the analysis returned study {result.study_instance_uid}, expected {study_uid}")
        except Exception as exc:  # noqa: BLE001 - reported in the SR, the node carries on
            result = None
            failure = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            event(log, logging.ERROR, "analysis failed", reason=one_line(failure),
                  exception=type(exc).__name__, **fields)
        if result is not None:
            log_image_warnings(result, fields)
            try:
                t = time.monotonic()
                paths = write_study_results(result, images, out_dir, gsps=write_gsps)
                stages["write"] = time.monotonic() - t
                rows = roi_rows(result)
                if result.failure:
                    failure = result.failure
            except Exception as exc:  # noqa: BLE001 - the failure report below says so
                failure = write_failure(exc, fields)
                shutil.rmtree(out_dir, ignore_errors=True)
                paths, rows = [], []
    if failure is not None and not paths:
        paths, failure = write_failure_report(study_uid, failure, engines, started, input_hash, images, out_dir,
                                              fields)
    identity = engines.identity()
    return AnalysisOutcome(failure=failure, paths=tuple(str(p) for p in paths), rows=tuple(rows),
                           seconds=round(time.monotonic() - t0, 3),
                           stage_seconds={k: round(v, 3) for k, v in stages.items()},
                           model=f"{identity.name} {identity.version} (sha256 {identity.sha256[:12]})")


# One engine per configuration per process: a Dask worker runs many studies (and, in a batch,
# possibly for several configurations); the model is loaded once.
_ENGINE_BOXES: dict[str, EngineBox] = {}


def _file_stamp(path: str) -> tuple | None:
    try:
        st = os.stat(Path(path) / "manifest.json" if Path(path).is_dir() else path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return None


def engine_box(config: Config) -> EngineBox:
    """This process's :class:`EngineBox` for ``config``'s analysis settings. A Dask worker outlives
    node restarts and batch runs: a model file replaced at the same path gets a new engine."""
    analysis = config.analysis
    key = repr((analysis, config.assembly.no_roi_policy,
                [_file_stamp(p) for p in (analysis.model_bundle, analysis.segmentation_model) if p]))
    if key not in _ENGINE_BOXES:
        _ENGINE_BOXES[key] = EngineBox(config)
    return _ENGINE_BOXES[key]


def analyze_anywhere(config: Config, study_uid: str, images: list[str], rois: list[str], out_dir: str, *,
                     input_hash: str, give_up: str | None = None, log_fields: dict | None = None) -> AnalysisOutcome:
    """:func:`analyze_and_write` with this process's engine for ``config``: the function a Dask
    task runs (paths, not pixels, travel; the files must be on storage the worker shares)."""
    return analyze_and_write(study_uid, [Path(p) for p in images], [Path(p) for p in rois], Path(out_dir),
                             engine_box(config), write_gsps=config.analysis.write_gsps, input_hash=input_hash,
                             give_up=give_up, log_fields=log_fields)
