"""The outcome table and its matching to the ROIs of a data set.

``labels.csv`` (``calcnode synth`` writes it; a site writes the same for its exams), one row
per ROI. Required columns:

* ``patient_id`` - cross-validation groups by it (all ROIs of a patient in the same fold);
* ``image_sop_instance_uid`` - the image the ROI is drawn on (images are found by SOP Instance
  UID anywhere under the data folder, never by name);
* ``roi_id`` - which ROI of that image: the 1-based position of the graphic object in the GSPS
  annotation item that references the image, or the SEG segment number (what the simulator
  writes), or the ROI reader's own id (``ann<A>-obj<O>``, ``seg<N>``, as ``calcnode rois`` prints);
* ``outcome`` - ``benign`` or ``actionable`` (case-insensitive).

Optional: ``roi_file`` (path relative to the CSV's folder: restricts the match to the ROIs of
that GSPS/SEG, needed when several ROI objects reference one image), ``study_instance_uid``,
``image_file`` (informative), ``bayes_score`` (simulated data only: the Bayes-optimal score,
reported beside the model's). Other columns are ignored.

Several tables (``calcnode train --data A --data B``: by default each data folder's own
``labels.csv``): patient IDs are only unique within a table (every ``calcnode synth`` folder
starts at SYNTH0001), so the cross-validation group is then (table, patient_id), written
``<table folder>/<patient_id>`` (:attr:`OutcomeRow.patient_key`). With one table it is the
patient_id as written.

Matching a numeric ``roi_id`` n: the GSPS graphic object ``ann<A>-obj<n>`` or the SEG segment
number n, among the ROIs of the row's image (and of its ``roi_file``); when several annotation
items of one GSPS reference the image, n is ambiguous and the row is reported, not guessed.
"""
from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pydicom

from analysis.dicom_input import ImageGeometry, InputError, read_geometry
from analysis.dicom_input.rois import Roi
from training.datasets import DatasetImage, image_rois, scan_dataset

REQUIRED_COLUMNS = ("patient_id", "image_sop_instance_uid", "roi_id", "outcome")
OUTCOMES = {"benign": 0, "actionable": 1}
_GSPS_ID = re.compile(r"^ann(\d+)-obj(\d+)(?:-img\d+)?$")
_SEG_ID = re.compile(r"^seg(\d+)(?:-img\d+)?$")


class LabelsError(InputError):
    """An outcome table that cannot be used."""


@dataclass(frozen=True)
class OutcomeRow:
    line: int  # line number in the CSV (header = 1)
    patient_id: str
    image_uid: str
    roi_id: str
    outcome: int  # 1 = actionable
    roi_file: Path | None
    bayes_score: float | None
    table: str = ""  # which outcome table, when several are combined ("" for a single one)

    @property
    def patient_key(self) -> str:
        """The patient's cross-validation group: ``patient_id``, qualified by the table when
        several tables are combined (patient IDs are unique only within one table)."""
        return f"{self.table}/{self.patient_id}" if self.table else self.patient_id


def default_labels(data_dirs) -> list[Path]:
    """Each data folder's own ``labels.csv`` (those that exist); the first folder's when none
    does (so that the error names the file that was expected)."""
    found = [Path(d) / "labels.csv" for d in data_dirs if (Path(d) / "labels.csv").is_file()]
    return found or [Path(data_dirs[0]) / "labels.csv"]


def label_tables(labels) -> list[tuple[Path, str]]:
    """(path, table tag) of one or several outcome tables, duplicates dropped. The tag is ""
    for a single table, else the table's folder name (its full path when two folders share a
    name): what :attr:`OutcomeRow.patient_key` qualifies the patient ID with."""
    paths = [Path(labels)] if isinstance(labels, (str, Path)) else [Path(p) for p in labels]
    unique: list[Path] = []
    for path in paths:
        if path.resolve() not in {u.resolve() for u in unique}:
            unique.append(path)
    if len(unique) == 1:
        return [(unique[0], "")]
    names = [p.resolve().parent.name for p in unique]
    return [(p, n if names.count(n) == 1 else str(p.resolve().parent)) for p, n in zip(unique, names)]


def read_outcomes(path: str | Path, table: str = "") -> list[OutcomeRow]:
    path = Path(path)
    if not path.is_file():
        raise LabelsError("no such outcome table", reason="not_found", source=str(path))
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise LabelsError(f"lacks the column(s) {', '.join(missing)} (required: {', '.join(REQUIRED_COLUMNS)})",
                              reason="malformed", source=str(path))
        rows = []
        for line, rec in enumerate(reader, start=2):
            outcome = (rec.get("outcome") or "").strip().lower()
            if outcome not in OUTCOMES:
                raise LabelsError(f"line {line}: outcome {rec.get('outcome')!r} is neither 'benign' nor "
                                  "'actionable'", reason="malformed", source=str(path))
            for column in REQUIRED_COLUMNS:
                if not (rec.get(column) or "").strip():
                    raise LabelsError(f"line {line}: {column} is empty", reason="malformed", source=str(path))
            roi_file = (rec.get("roi_file") or "").strip()
            rows.append(OutcomeRow(line=line, patient_id=rec["patient_id"].strip(),
                                   image_uid=rec["image_sop_instance_uid"].strip(), roi_id=rec["roi_id"].strip(),
                                   outcome=OUTCOMES[outcome],
                                   roi_file=(path.parent / roi_file) if roi_file else None,
                                   bayes_score=_float_or_none(rec.get("bayes_score")), table=table))
    if not rows:
        raise LabelsError("has no rows", reason="malformed", source=str(path))
    return rows


def _float_or_none(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def roi_number(roi: Roi) -> int | None:
    """The 1-based number labels.csv uses for an ROI: GSPS object position or SEG segment number."""
    if roi.kind == "seg":
        return roi.segment_number
    m = _GSPS_ID.match(roi.roi_id)
    return int(m.group(2)) if m else None


@dataclass(frozen=True, eq=False)
class LabelledRoi:
    """One row of the outcome table with the ROI it names."""

    row: OutcomeRow
    image: DatasetImage
    geometry: ImageGeometry
    roi: Roi
    image_rois: tuple[Roi, ...]  # every ROI drawn on the image (the segmentation region)

    @property
    def key(self) -> str:
        return f"{self.image.sop_instance_uid}/{self.roi.source_sop_instance_uid}/{self.roi.roi_id}"


def _sop_uid(path: Path, cache: dict) -> str | None:
    if path not in cache:
        try:
            cache[path] = str(pydicom.dcmread(path, stop_before_pixels=True,
                                              specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
        except Exception:
            cache[path] = None
    return cache[path]


def match_outcomes(data_dirs, labels_path, *, point_radius_mm: float = 2.5,
                   default_pixel_spacing_mm: float | None = None) -> tuple[list[LabelledRoi], list[str]]:
    """The outcome rows matched to ROIs (in CSV order, table after table), and one sentence per
    row that could not be. ``labels_path``: one table or a list of them (:func:`label_tables`);
    a table's rows may name images of any of the data folders."""
    tables = label_tables(labels_path)
    rows = [row for path, tag in tables for row in read_outcomes(path, tag)]
    table_name = {tag: (f"{tag}/{path.name}" if tag else path.name) for path, tag in tables}
    if isinstance(data_dirs, (str, Path)):
        data_dirs = [data_dirs]
    items: dict[str, DatasetImage] = {}
    for folder in data_dirs:
        if not Path(folder).is_dir():
            raise LabelsError("no such data folder", reason="not_found", source=str(folder))
        for item in scan_dataset(folder):
            items.setdefault(item.sop_instance_uid, item)
    problems: list[str] = []
    per_image: dict[str, tuple[ImageGeometry, list[Roi]] | None] = {}
    uid_cache: dict = {}
    matched: list[LabelledRoi] = []
    taken: set[str] = set()
    for row in rows:
        where = f"{table_name[row.table]} line {row.line}"
        item = items.get(row.image_uid)
        if item is None:
            problems.append(f"{where}: image {row.image_uid} is not in the data folder")
            continue
        if row.image_uid not in per_image:
            try:
                geometry = read_geometry(item.image_path, default_pixel_spacing_mm=default_pixel_spacing_mm)
                rois, errors = image_rois(item, geometry, point_radius_mm)
                per_image[row.image_uid] = (geometry, rois)
                problems += [f"{item.image_path.name}: {e}" for e in errors]
            except InputError as exc:
                per_image[row.image_uid] = None
                problems.append(f"{where}: {exc}")
        entry = per_image[row.image_uid]
        if entry is None:
            continue
        geometry, rois = entry
        candidates = list(rois)
        if row.roi_file is not None:
            source_uid = _sop_uid(row.roi_file, uid_cache)
            if source_uid is not None:
                candidates = [r for r in candidates if r.source_sop_instance_uid == source_uid]
        found = [r for r in candidates if r.roi_id == row.roi_id]
        if not found and row.roi_id.isdigit():
            found = [r for r in candidates if roi_number(r) == int(row.roi_id)]
        if not found:
            problems.append(f"{where}: no ROI {row.roi_id!r} on image {row.image_uid}")
            continue
        if len(found) > 1:
            problems.append(f"{where}: ROI {row.roi_id!r} of image {row.image_uid} is ambiguous "
                            f"({', '.join(r.roi_id for r in found)}); give roi_file or the reader's ROI id")
            continue
        lab = LabelledRoi(row=row, image=item, geometry=geometry, roi=found[0], image_rois=tuple(rois))
        if lab.key in taken:
            problems.append(f"{where}: ROI {row.roi_id!r} of image {row.image_uid} is labelled twice; "
                            "the first row is used")
            continue
        taken.add(lab.key)
        matched.append(lab)
    return matched, problems


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
