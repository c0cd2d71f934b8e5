"""Per-ROI feature extraction: a pure function of (pixels, spacing, bit depth, ROI mask,
calcification labels) -> :class:`RoiFeatures`.

It reads nothing but its arguments and returns plain numpy tables, so it can be mapped
over ROIs by any engine (a process pool, Dask, Spark) unchanged.  Optionally the
per-object pyradiomics work is spread over an ``executor`` (see :func:`feature_pool`);
the result is identical with or without it.
"""
from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .objects import (as_label_image, boundary_pixels, padded_box, ring_mask, select_roi_objects,
                      stored_values)
from .pyrad import BACKGROUND_NAMES, FOREGROUND_NAMES, _init_worker, radiomics_rows
from .regionprops import REGIONPROP_NAMES, region_properties
from .table import FeatureTable, FeatureVector
from .topology import (HANDCRAFTED_NAMES, TOPOLOGY_RADII_MM, handcrafted_features,
                       pairwise_min_distances, topology_features, topology_names)

LOCAL_SETS = ("foreground", "regionprops", "background")


@dataclass(frozen=True)
class FeatureParams:
    """Parameters of the feature extraction (lengths in mm)."""

    bin_width: float = 25.0  # pyradiomics binWidth on the stored-value scale
    ring_width_mm: float = 1.75  # background ring (25 px at 0.07 mm)
    topology_radii_mm: tuple[float, ...] = TOPOLOGY_RADII_MM


DEFAULT_PARAMS = FeatureParams()


@dataclass(frozen=True, eq=False, kw_only=True)
class RoiFeatures:
    """All features of one ROI.

    Local tables have one row per calcification, rows in the order of ``labels``:
    ``foreground`` (102 pyradiomics), ``regionprops`` (13), ``background`` (93 pyradiomics
    on the ring).  Globals: ``topology`` (64) and ``handcrafted`` (3).
    ``timings``: seconds per step (diagnostics; not part of the features).
    """

    labels: np.ndarray
    foreground: FeatureTable
    regionprops: FeatureTable
    background: FeatureTable
    topology: FeatureVector
    handcrafted: FeatureVector
    timings: dict = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        return int(np.asarray(self.labels).size)

    def local_sets(self) -> dict[str, FeatureTable]:
        return {name: getattr(self, name) for name in LOCAL_SETS}

    def global_features(self) -> FeatureVector:
        """topology + handcrafted: the 67 global features."""
        return FeatureVector(self.topology.names + self.handcrafted.names,
                             np.concatenate([self.topology.values, self.handcrafted.values]))

    def unmeasurable(self) -> dict[str, list[tuple[int, str]]]:
        return {name: t.unmeasurable for name, t in self.local_sets().items() if t.unmeasurable}

    def to_dict(self) -> dict[str, np.ndarray]:
        d = {"labels": np.asarray(self.labels, dtype=np.int64)}
        for name, t in self.local_sets().items():
            d.update(t.to_dict(prefix=f"{name}/"))
        d.update(self.topology.to_dict(prefix="topology/"))
        d.update(self.handcrafted.to_dict(prefix="handcrafted/"))
        return d

    @classmethod
    def from_dict(cls, d) -> "RoiFeatures":
        return cls(labels=np.asarray(d["labels"], dtype=np.int64),
                   **{name: FeatureTable.from_dict(d, prefix=f"{name}/") for name in LOCAL_SETS},
                   topology=FeatureVector.from_dict(d, prefix="topology/"),
                   handcrafted=FeatureVector.from_dict(d, prefix="handcrafted/"))


def feature_pool(workers: int = 2, mp_context: str = "spawn") -> ProcessPoolExecutor:
    """A process pool whose workers have radiomics loaded and configured.

    Create it once and reuse it across ROIs (start-up costs ~1-2 s: importing
    SimpleITK/pyradiomics in each worker).  ``spawn`` is the default context because the
    node process may hold threads."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(mp_context),
                               initializer=_init_worker)


def _check_inputs(pixels, spacing_mm, bits_stored, roi_mask):
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be 2D, got shape {pixels.shape}")
    sp = tuple(float(s) for s in spacing_mm)
    if len(sp) != 2 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_mm must be two positive numbers (row, col), got {spacing_mm!r}")
    if not 1 <= int(bits_stored) <= 32:
        raise ValueError(f"bits_stored must be in 1..32, got {bits_stored!r}")
    if roi_mask is not None and np.shape(roi_mask) != pixels.shape:
        raise ValueError(f"ROI mask has shape {np.shape(roi_mask)}, image is {pixels.shape}")
    return pixels, sp


def _chunks(n: int, k: int) -> list[range]:
    k = max(1, min(k, n))
    bounds = np.linspace(0, n, k + 1).astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def extract_roi_features(pixels: np.ndarray, spacing_mm, bits_stored: int, roi_mask, calc_labels, *,
                         params: FeatureParams = DEFAULT_PARAMS, executor: Executor | None = None,
                         chunks_per_family: int = 4) -> RoiFeatures:
    """Features of one ROI.

    pixels: float [0, 1] image, calcifications bright (``MammogramImage.pixels``).
    spacing_mm: (row, col) pixel spacing in mm.  bits_stored: stored bit depth; pyradiomics
    and the intensity region properties see rint(pixels * (2**bits_stored - 1)).
    roi_mask: bool image (or None = whole image); objects whose centroid lies inside it are
    the ROI's calcifications.  calc_labels: int label image of *all* calcifications of the
    image (0 = background), a bool mask (labelled 4-connected), or a list of bool masks.
    Every calcification pixel, inside the ROI or not, is removed from background rings.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    pixels, sp = _check_inputs(pixels, spacing_mm, bits_stored, roi_mask)
    labels_img = as_label_image(calc_labels, pixels.shape)
    objs = select_roi_objects(labels_img, roi_mask)
    obj_labels = np.array([o.label for o in objs], dtype=np.int64)
    n = len(objs)
    shape = pixels.shape

    # Crops.  Foreground: bounding box + 1 px.  Background: bounding box + the ring width.
    t0 = time.perf_counter()
    ring_pad = (math.ceil(params.ring_width_mm / sp[0]) + 1, math.ceil(params.ring_width_mm / sp[1]) + 1)
    fg_tasks, bg_tasks, boundaries, areas, centroids = [], [], [], [], []
    for o in objs:
        box = padded_box(o.bbox, (1, 1), shape)
        fg_tasks.append((stored_values(pixels, box, bits_stored), labels_img[box] == o.label))
        b = boundary_pixels(fg_tasks[-1][1]) + np.array([box[0].start, box[1].start])
        boundaries.append(b * np.array(sp))
        areas.append(o.n_pixels * sp[0] * sp[1])
        centroids.append((o.centroid_px[0] * sp[0], o.centroid_px[1] * sp[1]))
        rbox = padded_box(o.bbox, ring_pad, shape)
        lab = labels_img[rbox]
        bg_tasks.append((stored_values(pixels, rbox, bits_stored),
                         ring_mask(lab == o.label, lab > 0, sp, params.ring_width_mm)))
    timings["crops"] = time.perf_counter() - t0

    futures = []
    if executor is not None and n:
        t_rad = time.perf_counter()
        for fam, tasks in (("foreground", fg_tasks), ("background", bg_tasks)):
            for rng in _chunks(n, chunks_per_family):
                futures.append((fam, rng, executor.submit(
                    radiomics_rows, [tasks[i] for i in rng], sp, params.bin_width, fam == "foreground")))

    # Region properties (main process; overlaps the workers when an executor is used).
    t0 = time.perf_counter()
    rp = np.array([region_properties(m, img, sp) for img, m in fg_tasks]).reshape(n, len(REGIONPROP_NAMES))
    timings["regionprops"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    radii = tuple(params.topology_radii_mm)
    dist = pairwise_min_distances(boundaries, 2.0 * max(radii))
    topo = topology_features(dist, radii)
    timings["topology"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    hand = handcrafted_features(np.array(areas), np.array(centroids).reshape(-1, 2))
    timings["handcrafted"] = time.perf_counter() - t0

    results = {}
    if executor is None:
        for fam, tasks in (("foreground", fg_tasks), ("background", bg_tasks)):
            vals, errs, secs = radiomics_rows(tasks, sp, params.bin_width, fam == "foreground")
            results[fam] = (vals, errs)
            timings[f"{fam}_radiomics"] = secs
    else:
        acc = {"foreground": (np.full((n, len(FOREGROUND_NAMES)), np.nan), [], 0.0),
               "background": (np.full((n, len(BACKGROUND_NAMES)), np.nan), [], 0.0)}
        for fam, rng, fut in futures:
            vals, errs, secs = fut.result()
            arr, all_errs, tot = acc[fam]
            arr[rng.start:rng.stop] = vals
            all_errs.extend((rng.start + i, r) for i, r in errs)
            acc[fam] = (arr, all_errs, tot + secs)
        for fam, (arr, errs, secs) in acc.items():
            results[fam] = (arr, sorted(errs))
            timings[f"{fam}_radiomics"] = secs  # summed worker seconds
        if n:
            timings["radiomics_wall"] = time.perf_counter() - t_rad
    if not n:
        results = {"foreground": (np.zeros((0, len(FOREGROUND_NAMES))), []),
                   "background": (np.zeros((0, len(BACKGROUND_NAMES))), [])}

    def table(names, fam):
        vals, errs = results[fam]
        return FeatureTable(names, vals, obj_labels, [(int(obj_labels[i]), r) for i, r in errs])

    timings["total"] = time.perf_counter() - t_start
    return RoiFeatures(
        labels=obj_labels,
        foreground=table(FOREGROUND_NAMES, "foreground"),
        regionprops=FeatureTable(REGIONPROP_NAMES, rp, obj_labels, []),
        background=table(BACKGROUND_NAMES, "background"),
        topology=FeatureVector(topology_names(radii), topo),
        handcrafted=FeatureVector(HANDCRAFTED_NAMES, hand),
        timings=timings,
    )


def extract_image_roi_features(image, roi_mask, calc_labels, **kwargs) -> RoiFeatures:
    """:func:`extract_roi_features` for a :class:`analysis.dicom_input.image.MammogramImage`
    (its ``pixels``, ``geometry.pixel_spacing_mm`` and ``bits_stored``)."""
    spacing = image.geometry.pixel_spacing_mm
    if spacing is None:
        raise ValueError(f"image {getattr(image, 'sop_instance_uid', '?')} has no pixel spacing")
    return extract_roi_features(image.pixels, spacing, image.bits_stored, roi_mask, calc_labels, **kwargs)
