"""Features of the labelled ROIs of a data set: segmentation + extraction, cached on disk.

Per image: the calcifications are segmented once inside the union of *all* its ROIs (exactly
as ``calcnode analyze`` does, so training and analysis see the same objects), then each
labelled ROI's features are extracted (:func:`analysis.features.extract_roi_features`, with the
bundle's feature parameters). Images are spread over ``workers`` processes, or over any
``concurrent.futures`` executor set with :func:`use_executor` -- e.g. a Dask client's
(``calcnode train --scheduler``), whose workers need the same initialisation as the pool's
(:func:`_worker_init`; :mod:`dicom_node.cluster` registers it as a worker plugin).

Cache: one ``.npz`` per ROI (``RoiFeatures.to_dict``, no pickle) under the cache folder, named by
the SHA-256 of (cache format, image SOP Instance UID, ROI object SOP Instance UID, ROI id, the
ROI's geometry, segmentation identity, feature-parameter hash, segmentation settings). The
segmentation identity (:func:`analysis.classify.segmentation_identity`) covers the CNN and the
settings; the settings the images are segmented with (HDoG parameters, ROI growth, breast mask:
:func:`analysis.segmentation.settings.segmentation_settings`) are in the key as well, so the key
follows what actually ran even if a caller passes an identity computed for other settings. A
re-run with the same inputs reads them instead of recomputing; anything that would change a
feature changes the key. Files are written durably (:mod:`common.durable`: temporary name, fsync, rename, fsync of the
folder), so an interrupted run or a power cut leaves no half file.
"""
from __future__ import annotations

import hashlib
import json
import contextlib
import contextvars
import multiprocessing
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.classify import feature_params_hash
from analysis.features import DEFAULT_PARAMS, FeatureParams, RoiFeatures
from analysis.segmentation.hdog import HDoGParams
from analysis.segmentation.settings import segmentation_settings
from common.durable import atomic_path

from .labels import LabelledRoi

CACHE_FORMAT = 1


def roi_digest(roi) -> str:
    h = hashlib.sha256()
    h.update(roi.kind.encode())
    h.update(np.ascontiguousarray(roi.points_px, dtype=np.float64).tobytes())
    if roi.mask is not None:
        h.update(np.packbits(np.asarray(roi.mask, bool)).tobytes())
        h.update(str(roi.mask.shape).encode())
    h.update(repr(roi.radius_mm).encode())
    return h.hexdigest()


def cache_key(image_uid: str, roi, seg_sha256: str, params_hash: str,
              hdog_params: HDoGParams = HDoGParams()) -> str:
    """The cache file name of one ROI's features (see the module docstring); ``seg_sha256`` is
    the segmentation identity, ``hdog_params`` the HDoG parameters the image is segmented with."""
    spec = [CACHE_FORMAT, image_uid, roi.source_sop_instance_uid, roi.roi_id, roi_digest(roi), seg_sha256,
            params_hash, segmentation_settings(hdog_params)]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Per-ROI features on disk (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> RoiFeatures | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return RoiFeatures.from_dict({k: npz[k] for k in npz.files})
        except Exception:  # a damaged cache file is recomputed, never trusted
            return None

    def put(self, key: str, features: RoiFeatures) -> None:
        with atomic_path(self.path(key)) as tmp, open(tmp, "wb") as fh:  # a file object: savez adds no suffix
            np.savez(fh, **features.to_dict())


@dataclass(frozen=True, eq=False)
class ExtractedRoi:
    labelled: LabelledRoi
    features: RoiFeatures | None  # None when the ROI could not be analysed
    error: str | None = None
    cached: bool = False

    @property
    def n_calcifications(self) -> int:
        return self.features.n_objects if self.features is not None else 0


class Progress:
    """A one-line progress bar on stderr (a line every 10 s when stderr is not a terminal)."""

    def __init__(self, what: str, total: int, enabled: bool = True, unit: str = "ROIs"):
        self.what, self.total, self.enabled, self.unit = what, total, enabled, unit
        self.done = self.cached = 0
        self.start = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._shown = None

    def update(self, done: int = 0, cached: int = 0, force: bool = False) -> None:
        self.done += done
        self.cached += cached
        if not self.enabled:
            return
        now = time.monotonic()
        if not (force or self.tty or now - self.last >= 10.0) or self._shown == self.done:
            return
        self._shown = self.done
        self.last = now
        elapsed = now - self.start
        computed = self.done - self.cached
        left = self.total - self.done
        eta = elapsed / computed * left if computed else 0.0
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        text = (f"{self.what}: [{bar}] {self.done}/{self.total} {self.unit} ({self.cached} cached) "
                f"{_clock(elapsed)} elapsed, ~{_clock(eta)} left")
        print(("\r" if self.tty else "") + text, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            if self.tty:
                print(file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------- workers

_MODELS: dict = {}
# An executor the caller owns (a Dask client's), used instead of a process pool of our own.
_EXECUTOR: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("feature_executor", default=None)


@contextlib.contextmanager
def use_executor(executor: Executor | None):
    """Within the block, :func:`extract_features` runs its per-image tasks on ``executor``
    (not shut down here) instead of its own ``workers`` processes. None: no change."""
    token = _EXECUTOR.set(executor)
    try:
        yield executor
    finally:
        _EXECUTOR.reset(token)


def _worker_init() -> None:
    from analysis.features.pyrad import _init_worker

    _init_worker()
    import torch

    torch.set_num_threads(1)


def _model(path: str):
    from analysis.segmentation.cnn import SegmentationModel

    if path not in _MODELS:
        _MODELS[path] = SegmentationModel.load(path)
    return _MODELS[path]


def image_features(image_path: str, all_rois, wanted: list[int], seg_model_path: str,
                   params: FeatureParams, default_pixel_spacing_mm: float | None = None,
                   hdog_params: HDoGParams = HDoGParams()):
    """Segment one image inside its ROIs (with ``hdog_params``) and extract the features of the
    ``wanted`` ROIs.

    Returns ``[(index, RoiFeatures.to_dict() or None, error or None)]`` (picklable: it runs in a
    worker process)."""
    from analysis.dicom_input import InputError, RoiError, load_image
    from analysis.features import extract_roi_features
    from analysis.segmentation.pipeline import segment

    try:
        image = load_image(image_path, default_pixel_spacing_mm=default_pixel_spacing_mm)
        if image.pixel_spacing_mm is None:
            raise ValueError("the image states no pixel spacing")
        masks = {}
        for i, roi in enumerate(all_rois):
            try:
                masks[i] = roi.rasterise(image.geometry)
            except RoiError as exc:
                masks[i] = exc
        good = [m for m in masks.values() if isinstance(m, np.ndarray)]
        if not good:
            raise ValueError("no ROI of the image can be rasterised")
        labels = segment(image.pixels, image.pixel_spacing_mm, np.logical_or.reduce(good),
                         _model(seg_model_path), hdog_params).labels
    except (InputError, ValueError, RuntimeError, MemoryError) as exc:
        return [(i, None, f"{type(exc).__name__}: {exc}") for i in wanted]
    out = []
    for i in wanted:
        mask = masks[i]
        if not isinstance(mask, np.ndarray):
            out.append((i, None, str(mask)))
            continue
        try:
            feats = extract_roi_features(image.pixels, image.pixel_spacing_mm, image.bits_stored, mask, labels,
                                         params=params)
            out.append((i, feats.to_dict(), None))
        except Exception as exc:  # one ROI's failure must not lose the image's others
            out.append((i, None, f"{type(exc).__name__}: {exc}"))
    return out


def extract_features(labelled: list[LabelledRoi], seg_model_path: str | Path, *, seg_sha256: str,
                     params: FeatureParams = DEFAULT_PARAMS, cache: FeatureCache | None = None,
                     workers: int = 2, progress: bool = True,
                     default_pixel_spacing_mm: float | None = None,
                     hdog_params: HDoGParams = HDoGParams()) -> list[ExtractedRoi]:
    """Features of every labelled ROI (in the given order), from the cache when there.

    ``seg_sha256``: ``segmentation_identity(model, hdog_params)`` of the CNN at ``seg_model_path``;
    ``hdog_params``: the HDoG parameters the images are segmented with."""
    params_hash = feature_params_hash(params)
    results: list[ExtractedRoi | None] = [None] * len(labelled)
    bar = Progress("features", len(labelled), enabled=progress)
    keys = [cache_key(lab.image.sop_instance_uid, lab.roi, seg_sha256, params_hash, hdog_params)
            for lab in labelled]
    todo: dict[str, list[int]] = {}
    for i, (lab, key) in enumerate(zip(labelled, keys)):
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            results[i] = ExtractedRoi(lab, hit, cached=True)
        else:
            todo.setdefault(lab.image.sop_instance_uid, []).append(i)
    bar.update(done=len(labelled) - sum(len(v) for v in todo.values()),
               cached=len(labelled) - sum(len(v) for v in todo.values()), force=True)

    tasks = []
    for uid, indices in todo.items():
        lab0 = labelled[indices[0]]
        all_rois = list(lab0.image_rois)
        ids = [(r.source_sop_instance_uid, r.roi_id) for r in all_rois]
        wanted = [ids.index((labelled[i].roi.source_sop_instance_uid, labelled[i].roi.roi_id)) for i in indices]
        tasks.append((indices, (str(lab0.image.image_path), all_rois, wanted, str(seg_model_path), params,
                                default_pixel_spacing_mm, hdog_params)))

    def collect(indices, answer):
        by_roi = {w: (d, e) for w, d, e in answer}
        lab0 = labelled[indices[0]]
        ids = [(r.source_sop_instance_uid, r.roi_id) for r in lab0.image_rois]
        for i in indices:
            w = ids.index((labelled[i].roi.source_sop_instance_uid, labelled[i].roi.roi_id))
            data, error = by_roi[w]
            feats = RoiFeatures.from_dict(data) if data is not None else None
            if feats is not None and cache is not None:
                cache.put(keys[i], feats)
            results[i] = ExtractedRoi(labelled[i], feats, error=error)
        bar.update(done=len(indices))

    pool, own = _EXECUTOR.get(), None
    if pool is None and workers > 1 and len(tasks) > 1:
        own = pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                                         mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    try:
        if pool is None:
            for indices, args in tasks:
                collect(indices, image_features(*args))
        else:
            futures = {pool.submit(image_features, *args): indices for indices, args in tasks}
            for future in as_completed(futures):
                collect(futures[future], future.result())
    finally:
        if own is not None:
            own.shutdown()
        bar.close()
    return [r for r in results if r is not None]
