"""Run a batch: one Dask task per study that is not done yet, then the run's tables.

The task (:func:`study_task`) is the node's own analysis-and-write step
(:func:`dicom_node.job.analyze_anywhere`: the configured engine, then
``sr_templates.write_study_results``) followed by publishing the study's folder and its done
marker (:mod:`dicom_node.batch.store`). File paths travel to the workers, never pixels: the
input files and ``--out`` must be on storage every worker sees at the same paths. Each worker
process runs one study at a time (one thread), which bounds its memory to one study.

A worker that dies while running a study: the scheduler runs the task again on another worker;
after ``distributed.scheduler.allowed-failures`` deaths the study is recorded as failed (stage
``task``, no marker) and the next run tries it again. A study whose analysis failed (unreadable
image, engine error) gets its failure report, a marker with ``outcome: failed`` and a row in
failures.csv; ``--retry-failed`` analyses such studies again.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from common.durable import write_text

from ..job import analyze_anywhere
from .inputs import Inventory, folder_files, inventory, manifest_files
from .store import (
    FAILURE_COLUMNS, MARKER_FORMAT, RESULT_COLUMNS, partial_dir, publish, read_marker, remove_partials,
    settings_fingerprint, study_dir, study_key, write_csv,
)


@dataclass(frozen=True)
class BatchOptions:
    out: Path
    data: Path | None = None          # a folder of DICOM files, searched recursively
    manifest: Path | None = None      # or a CSV listing them (see dicom_node.batch.inputs)
    scheduler: str | None = None      # None: a local cluster sized to the machine
    workers: int | None = None        # local cluster only: worker processes (default one per core)
    retry_failed: bool = False        # analyse again the studies whose marker says "failed"
    progress: bool = True


def study_task(config, study_uid: str, images: list[str], rois: list[str], out: str, key: str,
               input_hash: str) -> dict:
    """Analyse one study on a worker, publish its objects and done marker; returns the marker."""
    partial = partial_dir(Path(out), study_uid, uuid.uuid4().hex[:12])
    outcome = analyze_anywhere(config, study_uid, images, rois, str(partial), input_hash=input_hash,
                               log_fields={"study_instance_uid": study_uid})
    marker = {"format": MARKER_FORMAT, "key": key, "study_instance_uid": study_uid,
              "outcome": "failed" if outcome.failure is not None else "done", "failure": outcome.failure,
              "files": [Path(p).name for p in outcome.paths], "rows": list(outcome.rows), "model": outcome.model,
              "n_images": len(images), "n_roi_objects": len(rois), "seconds": outcome.seconds,
              "stage_seconds": outcome.stage_seconds, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    publish(partial, study_dir(Path(out), study_uid), marker)
    return marker


def _failure(study, stage: str, reason: str) -> dict:
    return {"study_instance_uid": study.study_instance_uid, "stage": stage, "reason": reason,
            "n_images": len(study.images), "n_roi_objects": len(study.rois),
            "path": (study.images or study.rois)[0].path if study.files else ""}


def _say(text: str, enabled: bool) -> None:
    if enabled:
        print(f"calcnode batch: {text}", file=sys.stderr, flush=True)


def collect_inputs(opts: BatchOptions, out: Path) -> Inventory:
    if opts.data is not None:
        return inventory([(p, None) for p in folder_files(opts.data, exclude=[out])], listed=False)
    return inventory(manifest_files(opts.manifest), listed=True)


def run_batch(config, opts: BatchOptions, *, client=None) -> dict:
    """Analyse every study of the inputs that is not done; write the tables. Returns the summary.

    ``client``: an existing Dask client (tests, benchmarks); else one is made from ``opts``.
    """
    from ..cluster import dask_client, describe_failure

    t0 = time.monotonic()
    out = Path(opts.out).absolute()
    inv = collect_inputs(opts, out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = settings_fingerprint(config)
    failures = list(inv.problems)
    markers: dict[str, dict] = {}
    todo = []
    skipped_done, skipped_no_roi = 0, []
    for uid, study in sorted(inv.studies.items()):
        if not study.images:
            failures.append(_failure(study, "inputs", "the study holds no MG image (only ROI objects)"))
            continue
        if not study.rois and config.assembly.no_roi_policy == "skip":
            skipped_no_roi.append(uid)
            continue
        key = study_key(study.input_hash(), fingerprint)
        marker = read_marker(out, uid)
        if marker is not None and marker.get("key") == key and \
                not (opts.retry_failed and marker.get("outcome") != "done"):
            markers[uid] = marker
            skipped_done += 1
            continue
        todo.append((study, key))
    _say(f"{len(inv.studies)} studies: {len(todo)} to analyse, {skipped_done} done before"
         + (f", {len(skipped_no_roi)} without ROI skipped" if skipped_no_roi else "")
         + (f", {len(inv.problems)} unusable input files" if inv.problems else ""), opts.progress)

    computed = 0
    cluster_s = 0.0
    if todo:
        t_cluster = time.monotonic()
        own = dask_client(opts.scheduler, n_workers=opts.workers) if client is None else \
            contextlib.nullcontext(client)
        with own as dask:
            cluster_s = time.monotonic() - t_cluster
            computed = _run_tasks(dask, config, out, todo, markers, failures, opts.progress, describe_failure,
                                  done_before=skipped_done)
        remove_partials(out)  # every task has ended: what is left is from attempts on lost workers

    for uid, marker in sorted(markers.items()):
        if marker.get("outcome") != "done":
            failures.append(_failure(inv.studies[uid], "analysis", marker.get("failure") or "analysis failed"))
    rows = [dict(row, model=marker.get("model", "")) for _, marker in sorted(markers.items())
            for row in marker.get("rows", [])]
    write_csv(out / "results.csv", RESULT_COLUMNS, rows)
    write_csv(out / "failures.csv", FAILURE_COLUMNS, failures)
    stage_seconds: dict[str, float] = {}
    for marker in markers.values():
        for stage, seconds in (marker.get("stage_seconds") or {}).items():
            stage_seconds[stage] = round(stage_seconds.get(stage, 0.0) + seconds, 3)
    summary = {"studies": len(inv.studies), "computed": computed, "skipped_done": skipped_done,
               "skipped_no_roi": len(skipped_no_roi), "failures": len(failures),
               "failed_studies": len({f["study_instance_uid"] for f in failures if f["study_instance_uid"]}),
               "rois": len(rows), "files_ignored": dict(inv.ignored), "out": str(out),
               "results": str(out / "results.csv"), "failures_table": str(out / "failures.csv"),
               "seconds": round(time.monotonic() - t0, 3), "cluster_start_seconds": round(cluster_s, 3),
               "stage_seconds_all_studies": stage_seconds}
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _run_tasks(client, config, out: Path, todo, markers: dict, failures: list, progress: bool,
               describe_failure, done_before: int = 0) -> int:
    """Submit one task per study, collect markers and failures as they finish. Returns how many ran."""
    from distributed import as_completed

    from training.classifier.features import Progress

    futures = {}
    for study, key in todo:
        future = client.submit(study_task, config, study.study_instance_uid, [f.path for f in study.images],
                               [f.path for f in study.rois], str(out), key, study.input_hash(),
                               key=f"calcnode-study-{key[:24]}", retries=1)
        futures[future] = study
    bar = Progress("batch", len(futures) + done_before, enabled=progress, unit="studies")
    bar.update(done=done_before, cached=done_before, force=True)
    computed = 0
    try:
        for future in as_completed(list(futures)):
            study = futures.pop(future)
            try:
                marker = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost task is a failure of this study, not of the run
                reason = describe_failure(exc)
                failures.append(_failure(study, "task", reason))
                _say(f"study {study.study_instance_uid} failed: {reason}", progress)
            else:
                markers[study.study_instance_uid] = marker
                computed += 1
                if marker["outcome"] != "done":
                    _say(f"study {study.study_instance_uid} failed: {marker['failure']}", progress)
            future.release()
            bar.update(done=1)
    finally:
        bar.close()
    return computed
