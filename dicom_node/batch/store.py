"""A batch's output folder: per-study results with a done marker, and the run's tables.

Layout of ``--out DIR``::

    results.csv                      one row per ROI of every study of the run (RESULT_COLUMNS)
    failures.csv                     one row per study (or input file) that failed, and why
    summary.json                     the run's counts and seconds (also printed on stdout)
    studies/<StudyInstanceUID>/      SEG, SR, CAD SR, GSPS (sr_templates.write_study_results names)
    studies/<StudyInstanceUID>/done.json   the done marker

A study is *done* when its marker exists and holds the study's key: the SHA-256 of the input
set (the node's hash of the sorted SOP Instance UIDs) and of every setting that changes a result
(model files, no-ROI policy, GSPS on/off, ...). The objects are written to a hidden partial
folder, which replaces the study's folder only when complete; the marker is written last,
atomically (temporary file, fsync, rename). A run killed at any point therefore leaves either a
done study or one the next run computes again -- never a marker beside missing objects.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

from common.durable import replace_dir, write_bytes

MARKER = "done.json"
MARKER_FORMAT = 1
STUDIES = "studies"
PARTIAL = ".partial-"
RESULT_COLUMNS = ("study_instance_uid", "image_sop_instance_uid", "roi_id", "roi_label", "roi_kind", "status",
                  "n_calcifications", "score", "threshold", "decision", "reason", "detection_confidence",
                  "cluster_detection", "model")
FAILURE_COLUMNS = ("study_instance_uid", "stage", "reason", "n_images", "n_roi_objects", "path")


def settings_fingerprint(config) -> dict:
    """The settings that change a study's results, with the model files' content hashes (a model
    retrained in place changes the key; a model moved to another path does not)."""
    from analysis.classify import DEFAULT_BUNDLE, MANIFEST
    from analysis.clusters import DEFAULT_CLUSTER_MODEL

    analysis = config.analysis
    bundle = Path(analysis.model_bundle) if analysis.model_bundle else DEFAULT_BUNDLE
    manifest = bundle / MANIFEST if bundle.is_dir() else bundle
    return {"engine": analysis.engine,
            "model_bundle": _file_sha256(manifest),
            "segmentation_model": _file_sha256(Path(analysis.segmentation_model)) if analysis.segmentation_model
            else "",
            "no_roi": config.assembly.no_roi_policy,
            # the shipped cluster model (no_roi = "detect"): retrained in place, the clusters change
            "cluster_model": _file_sha256(DEFAULT_CLUSTER_MODEL) if config.assembly.no_roi_policy == "detect"
            and DEFAULT_CLUSTER_MODEL.is_file() else "",
            "write_gsps": analysis.write_gsps,
            "point_roi_radius_mm": analysis.point_roi_radius_mm,
            "default_pixel_spacing_mm": analysis.default_pixel_spacing_mm}


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{path}"  # the analysis reports the problem; the key just stays stable


def study_key(input_hash: str, fingerprint: dict) -> str:
    """The key a done marker must hold for the study to be skipped."""
    return hashlib.sha256(json.dumps([MARKER_FORMAT, input_hash, fingerprint], sort_keys=True).encode()).hexdigest()


def study_dir(out: Path, study_uid: str) -> Path:
    return Path(out) / STUDIES / study_uid


def partial_dir(out: Path, study_uid: str, token: str) -> Path:
    """A hidden folder beside the study's, unique to one attempt (two attempts never share one)."""
    return Path(out) / STUDIES / f".{study_uid}{PARTIAL}{token}"


def read_marker(out: Path, study_uid: str) -> dict | None:
    """The study's done marker, or None (absent, damaged or of another format)."""
    try:
        marker = json.loads((study_dir(out, study_uid) / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None


def publish(partial: Path, final: Path, marker: dict) -> None:
    """Replace ``final`` by the complete ``partial`` folder, then write the marker into it.

    The old folder (and its marker) goes in the same step as the new one arrives
    (``common.durable.replace_dir``), so an old marker never stands beside new objects; the
    marker comes last, once the objects are on disk."""
    partial.mkdir(parents=True, exist_ok=True)  # a study whose report could not be written has none
    replace_dir(partial, final)
    write_bytes(final / MARKER, json.dumps(marker, indent=1, default=str).encode())


def remove_partials(out: Path) -> int:
    """Remove what attempts on lost workers left (call when no task of the run is left). Returns how many."""
    root = Path(out) / STUDIES
    count = 0
    if root.is_dir():
        for path in root.glob(f".*{PARTIAL}*"):
            shutil.rmtree(path, ignore_errors=True)
            count += 1
    return count


def write_csv(path: Path, columns, rows) -> None:
    """A CSV table with a header row (``None`` cells empty, floats at full precision), atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else repr(row[k]) if isinstance(row.get(k), float)
                             else row[k]) for k in columns})
    write_bytes(Path(path), text.getvalue().encode("utf-8"))
