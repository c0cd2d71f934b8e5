"""Write every result object of a study: :func:`write_study_results`."""
from __future__ import annotations

import os
import warnings
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping

import pydicom
from pydicom.dataset import Dataset

from common.durable import atomic_path, make_dirs

from .cad_sr import build_mammography_cad_sr
from .common import index_sources
from .headers import clean_source
from .gsps import build_presentation_state, study_laterality
from .measurement_report import build_measurement_report
from analysis.results import StudyResult
from .seg import build_segmentation


def _as_dataset(source) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, os.PathLike)):
        return pydicom.dcmread(source, stop_before_pixels=True)
    raise ValueError(f"a source must be a pydicom Dataset or a file path, got {type(source).__name__}")


def build_study_results(result: StudyResult, source_datasets: Iterable | Mapping[str, Dataset], *,
                        gsps: bool = True, created: datetime | None = None) -> list[tuple[str, Dataset]]:
    """Every result object, in memory: [(kind, dataset)], kind in SEG, SR, CADSR, GSPS.

    Order: the SEGs (one per image with a segmented ROI: drawn or detected cluster), the TID 1500
    SR, the Mammography CAD SR, then the GSPSs (one per image with an ROI, or whose cluster
    detection found none) when ``gsps``.
    """
    if isinstance(source_datasets, Mapping):
        source_datasets = list(source_datasets.values())
    cleaned, notes = [], []
    for source in source_datasets:  # a sender's header never makes a writer fail
        ds, source_notes = clean_source(_as_dataset(source))
        cleaned.append(ds)
        notes += source_notes
    result = with_notes(result, notes)
    sources = index_sources(result, cleaned)
    objects: list[tuple[str, Dataset]] = []
    segs: dict[str, Dataset] = {}
    for image in result.images:
        seg = build_segmentation(result, image, sources[image.sop_instance_uid])
        if seg is not None:
            segs[image.sop_instance_uid] = seg
            objects.append(("SEG", seg))
    objects.append(("SR", build_measurement_report(result, sources, segs)))
    objects.append(("CADSR", build_mammography_cad_sr(result, sources, created=created)))
    if gsps:
        with_rois = {im.sop_instance_uid: sources[im.sop_instance_uid] for im in result.images
                     if im.rois or im.cluster_detection is not None}
        laterality = study_laterality(result, with_rois)
        for image in result.images:
            pr = build_presentation_state(result, image, sources[image.sop_instance_uid], laterality=laterality)
            if pr is not None:
                objects.append(("GSPS", pr))
    return objects


def with_notes(result: StudyResult, notes: list[str]) -> StudyResult:
    """``result`` with the images' own warnings (an assumed pixel spacing, ...) and ``notes``
    added to the study warnings the SRs list (each once). UIDs do not depend on warnings."""
    extra = [f"image {image.sop_instance_uid}: {w}" for image in result.images for w in image.warnings]
    extra = [w for w in dict.fromkeys(extra + list(notes)) if w not in result.warnings]
    return replace(result, warnings=tuple(result.warnings) + tuple(extra)) if extra else result


def result_filename(kind: str, ds: Dataset) -> str:
    return f"{kind}-{ds.SOPInstanceUID}.dcm"


def write_study_results(result: StudyResult, source_datasets: Iterable | Mapping[str, Dataset],
                        out_dir: str | os.PathLike, *, gsps: bool = True) -> list[Path]:
    """Build all result objects of ``result`` and write them to ``out_dir``.

    ``source_datasets``: the study's source images (pydicom Datasets, pixels not
    needed, or file paths), at least every analysed image. Everything is built
    before anything is written, so an inconsistent result writes nothing; each
    file is written to a temporary name in ``out_dir``, fsync'ed, renamed
    (``<KIND>-<SOPInstanceUID>.dcm``) and the folder fsync'ed
    (:mod:`common.durable`), so a reader never sees half a file, a written file
    survives a power cut, and a re-run replaces identical instances in place.
    Returns the written paths in the order of :func:`build_study_results`.
    """
    with warnings.catch_warnings():
        # highdicom warns (Python warnings, printed on stderr) about an unusual person name, quoting
        # it: a patient's name must never reach a log
        warnings.filterwarnings("ignore", category=UserWarning, module="highdicom")
        objects = build_study_results(result, source_datasets, gsps=gsps)
    out = make_dirs(out_dir)
    return [_write(ds, out / result_filename(kind, ds)) for kind, ds in objects]


def _write(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a Part 10 file, durably (temporary file, fsync, rename, fsync of the folder)."""
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path
