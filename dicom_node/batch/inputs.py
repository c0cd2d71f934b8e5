"""What a batch analyses: DICOM files found in a folder or listed in a manifest, grouped by study.

Every file's header is read (no pixels): Study Instance UID, SOP Instance UID and SOP Class UID.
MG images (Digital Mammography For Presentation / For Processing) and ROI objects (GSPS, SEG) are
kept, grouped by Study Instance UID -- the node's SOP-class rules (:mod:`dicom_node.scp`). Other
SOP classes (SR, Secondary Capture, tomosynthesis, calcnode's own results ...) are counted and
left out; a second file with the same SOP Instance UID is left out.

Manifest (CSV with a header row; paths relative to the manifest's folder), either

* one row per file: ``path`` (required) and optionally ``study_instance_uid`` (then checked
  against the file's header); or
* one row per study: ``images`` (required) and optionally ``rois`` -- several paths separated by
  ``;`` -- and ``study_instance_uid`` (checked).

Either way the files are grouped by the Study Instance UID their headers state.
"""
from __future__ import annotations

import csv
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ..assembly import input_hash
from ..scp import KEPT_SOP_CLASSES, instance_kind
from ..spool import check_uid

HEADER_READ_THREADS = 8  # header reads wait on the disk (often network storage), not the CPU


class ManifestError(ValueError):
    """The manifest cannot be used; the message says why."""


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute
    sop_instance_uid: str
    kind: str  # "MG", "GSPS" or "SEG"


@dataclass
class Study:
    study_instance_uid: str
    images: list[InputFile] = field(default_factory=list)
    rois: list[InputFile] = field(default_factory=list)

    @property
    def files(self) -> list[InputFile]:
        return self.images + self.rois

    def input_hash(self) -> str:
        """The node's input-set hash: SHA-256 of the sorted SOP Instance UIDs."""
        return input_hash(f.sop_instance_uid for f in self.files)


@dataclass
class Inventory:
    studies: dict[str, Study] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)  # failure rows (stage "inputs") for unusable files
    ignored: Counter = field(default_factory=Counter)    # why files were left out, how many

    def add_problem(self, path: str, reason: str, study_uid: str = "") -> None:
        self.problems.append({"study_instance_uid": study_uid, "stage": "inputs", "reason": reason,
                              "n_images": 0, "n_roi_objects": 0, "path": path})


def folder_files(root: str | Path, exclude: list[Path] = ()) -> list[Path]:
    """Every regular file under ``root`` (recursively), hidden files and folders and ``exclude`` left out."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise ManifestError(f"{root}: no such folder")
    excluded = [Path(e).absolute() for e in exclude]
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if any(path == e or e in path.parents for e in excluded):
            continue
        out.append(path)
    return out


def manifest_files(manifest: str | Path) -> list[tuple[Path, str | None]]:
    """(path, expected Study Instance UID or None) for every file the manifest lists."""
    manifest = Path(manifest).absolute()
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {c.strip() for c in (reader.fieldnames or [])}
            rows = list(reader)
    except FileNotFoundError:
        raise ManifestError(f"{manifest}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{manifest}: cannot be read ({exc})") from None
    if "path" in columns and "images" in columns:
        raise ManifestError(f"{manifest}: use either a 'path' column (one row per file) or 'images'/'rois' "
                            "columns (one row per study), not both")
    if "path" not in columns and "images" not in columns:
        raise ManifestError(f"{manifest}: needs a 'path' column (one row per file) or an 'images' column "
                            f"(one row per study); found {', '.join(sorted(columns)) or 'no header'}")
    base = manifest.parent
    out = []
    for row in rows:
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        expected = row.get("study_instance_uid") or None
        cells = [row.get("path", "")] if "path" in columns else \
            row.get("images", "").split(";") + row.get("rois", "").split(";")
        out += [((base / c.strip()).absolute(), expected) for c in cells if c.strip()]
    return out


def read_header(path: Path):
    """The Study and SOP Instance UIDs and the SOP Class UID of a DICOM file (pixels not read)."""
    return pydicom.dcmread(path, stop_before_pixels=True,
                           specific_tags=["StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"])


def inventory(files: list[tuple[Path, str | None]], *, listed: bool) -> Inventory:
    """Read every file's header and group the usable ones by study.

    ``listed``: the files were named by a manifest, so one that is not DICOM is a problem (in a
    scanned folder it is just another file, counted as ``not_dicom``).
    """
    inv = Inventory()
    seen: dict[str, str] = {}

    def read(item):
        path, _ = item
        try:
            return read_header(path), None
        except InvalidDicomError as exc:
            return None, exc
        except Exception as exc:  # noqa: BLE001 - missing, unreadable, truncated: reported per file
            return None, exc

    with ThreadPoolExecutor(HEADER_READ_THREADS) as pool:
        headers = list(pool.map(read, files))
    for (path, expected), (ds, error) in zip(files, headers):
        if ds is None:
            if isinstance(error, InvalidDicomError) and not listed:
                inv.ignored["not_dicom"] += 1
            else:
                inv.add_problem(str(path), f"not a readable DICOM file: {type(error).__name__}: {error}")
            continue
        try:
            sop_class = str(ds.SOPClassUID)
            study = check_uid(str(ds.StudyInstanceUID), "Study Instance UID")
            sop = check_uid(str(ds.SOPInstanceUID), "SOP Instance UID")
        except Exception as exc:  # noqa: BLE001 - a missing or malformed UID (it becomes a folder name)
            inv.add_problem(str(path), f"unusable header: {exc}")
            continue
        if sop_class not in KEPT_SOP_CLASSES:
            inv.ignored["other_sop_class"] += 1
            continue
        if expected and expected != study:
            inv.add_problem(str(path), f"the manifest says study {expected}, the file's header {study}", study)
            continue
        if sop in seen:
            inv.ignored["duplicate_sop_instance"] += 1
            continue
        seen[sop] = str(path)
        kind = instance_kind(sop_class)
        entry = inv.studies.setdefault(study, Study(study))
        (entry.images if kind == "MG" else entry.rois).append(InputFile(str(path), sop, kind))
    return inv
