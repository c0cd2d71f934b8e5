"""Calcification clusters on a view without ROI: group, describe, score (docs/method.md §3.7).

A view analysed without a radiologist's ROI used to be one "whole breast" region holding every
calcification kept over the breast; a normal breast then came back "actionable" on a few noise
peaks and vessel specks scattered over 200 cm². Calcification CAD marks *clusters* instead, and so
does this module: pure arrays in (the segmentation, the image, its spacing, the breast mask),
typed clusters out (:class:`DetectedCluster`). It writes and reads no DICOM and imports nothing of
ours outside :mod:`analysis`.

The grouping rule (BI-RADS sense)
---------------------------------
BI-RADS (5th edition) calls calcifications *grouped* when "few calcifications occupy a small
portion of breast tissue", with a lower limit of about 5 calcifications within 1 cm and an upper
limit of a larger number within 2 cm; in CAD and in the older literature a *cluster* is at least 3
calcifications within 1 cm² (e.g. Kopans; the DDSM/INbreast cluster annotations). Here:

1. **Members.** The segmented calcifications (labels of ``segmentation.labels``) whose centroid
   lies in the breast mask. A cluster model may set its own ``member_threshold``, a selection CNN
   support score other than the operating point: the members are then the selection's objects at
   or above it (:func:`analysis.segmentation.pipeline.at_threshold`, no network run again). Below
   the operating point, a faint cluster shows more of its calcifications, and the cluster stage's
   own evidence must remove the false groups that come with them; above it, fewer isolated false
   objects over the whole breast link into false groups (the shipped model's choice,
   docs/clusters.md). What
   is *reported* stays at the operating point: :mod:`analysis.study` analyses the outline as an
   ROI, with the calcifications the SEG shows and the classifier scores (docs/clusters.md
   "Members at their own threshold").
2. **Linking.** Two calcifications are joined when their centroids are at most ``link_mm``
   (default 5 mm, half of the 1 cm of BI-RADS' "grouped") apart in mm (pixel spacing applied per
   axis); a candidate cluster is a connected component of that graph (single linkage). A linear
   or segmental run of calcifications stays one cluster as long as no gap exceeds ``link_mm``.
3. **Density test ("within 1 cm²").** A component is a cluster when some *disk of area*
   ``window_mm2`` (default 100 mm² = 1 cm², radius 5.64 mm) contains at least ``min_count``
   (default 3) of its centroids. The test is exact: if such a disk exists, one also exists with
   either a member centroid at its centre or two member centroids on its boundary, and every one
   of those disks is tried (members-centred first, which settles almost every real cluster).
   A disk, not a square: it does not depend on the image's orientation.
4. **Outline.** The convex hull of the members' pixels (each pixel the unit square around its
   centre, so a one-pixel calcification has area) grown by ``margin_mm`` (default 1 mm, the ROI
   growth the segmentation uses, docs/method.md §3.1) in mm: the Minkowski sum of the hull with
   an ellipse of semi-axes ``margin_mm / spacing`` in pixels, computed on 16 directions and
   convexified. Coordinates follow :mod:`analysis.results` "Conventions" exactly: (column, row)
   in pixels, pixel (r, c) centred at (c + 0.5, r + 0.5), N >= 3 vertices counter-clockwise in
   the displayed image (rows down), the first vertex not repeated.

Scoring
-------
Each candidate is described by :data:`FEATURE_NAMES` (:func:`cluster_features`): its members'
layout, the selection CNN's evidence, contrast, and (since the tenth session) how it stands out of
its surroundings (:func:`surround_density`) and how elongated its members are
(:func:`member_elongation`). With a trained :class:`ClusterModel` (LightGBM trees or a logistic
regression on transformed features, JSON, written by ``training.clusters``) the confidence is the
model's probability that the cluster is true and a cluster is kept when
``confidence >= model.threshold``. Without a model the confidence is
:func:`rule_confidence`, a documented hand-set rule (count, linearity, selection support) with
threshold :data:`RULE_THRESHOLD`; it is a fallback, not a measured operating point.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

from analysis.extent import nonzero_extent

if TYPE_CHECKING:  # importing the pipeline loads torch; this module needs only its arrays
    from analysis.segmentation.pipeline import Segmentation

MODEL_FORMAT = "calcnode-cluster-model/1"
#: The confidence threshold of :func:`rule_confidence` (no trained model).
RULE_THRESHOLD = 0.5

#: Cluster-level features, in the order a :class:`ClusterModel` sees them.
FEATURE_NAMES = (
    "n_calcifications",        # members
    "log_n",                   # log(members)
    "density_per_cm2",         # members per cm² of the outline
    "area_mm2",                # outline area, mm²
    "max_in_window",           # most members in one 1 cm² disk (the density test's count)
    "spread_mm",               # RMS distance of member centroids to their mean, mm
    "linearity",               # 1 - lambda2 / lambda1 of the centroids' covariance (1 = on a line)
    "line_residual_mm",        # RMS distance of centroids to their principal axis, mm
    "nn_distance_mm",          # median nearest-neighbour distance between centroids, mm
    "cnn_mean",                # mean over members of the selection CNN's support score
    "cnn_min",
    "cnn_max",
    "cnn_evidence_mean",       # mean over members of -log10(1 - support), capped at 6 (support 0.99 -> 2)
    "cnn_evidence_top3",       # the same, mean of the 3 best-supported members (the grouping rule's count)
    "cnn_evidence_sum",        # its sum over members: the cluster's total CNN evidence
    "contrast_mean",           # mean member peak minus its local background median, [0, 1] image units
    "cnr_mean",                # mean member contrast over its local background noise (robust SD)
    "cnr_max",
    "object_area_mean_mm2",    # mean member area, mm²
    "object_area_cv",          # coefficient of variation of member areas
    "edge_distance_mm",        # distance of the cluster centre to the breast mask's edge, mm
    # the cluster against its surroundings (since the tenth session): real processed tissue and
    # dense tissue give many isolated objects, and a group is a cluster only as an excess over them
    "surround_density_per_cm2",  # other calcifications per cm² of breast within surround_mm of the centre
    "view_density_per_cm2",      # all calcifications of the view per cm² of breast
    "window_excess",             # max_in_window / (1 + the surround's expected count in one window)
    "object_elongation_mean",    # mean over members of sqrt(lambda1 / lambda2) of its pixels (1 = round)
)


@dataclass(frozen=True)
class ClusterParams:
    """The grouping rule's parameters (module docstring); lengths in mm, areas in mm²."""

    link_mm: float = 5.0          # single-linkage distance between centroids
    min_count: int = 3            # calcifications needed within one window
    window_mm2: float = 100.0     # the window's area: 1 cm² (a disk)
    margin_mm: float = 1.0        # the outline's margin around the members' convex hull
    background_mm: float = 1.0    # half-side of the square around a member its background is read in
    surround_mm: float = 15.0     # radius of the disk around a cluster's centre its surroundings are read in

    def __post_init__(self):
        for name in ("link_mm", "window_mm2", "margin_mm", "background_mm", "surround_mm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"ClusterParams.{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.min_count, int) and self.min_count >= 1):
            raise ValueError(f"ClusterParams.min_count must be an integer >= 1, got {self.min_count!r}")

    @property
    def window_radius_mm(self) -> float:
        """Radius of the disk of area ``window_mm2``."""
        return math.sqrt(self.window_mm2 / math.pi)


@dataclass(frozen=True)
class DetectedCluster:
    """One detected calcification cluster of a view.

    ``cluster_id``: 1..n, ordered by confidence (descending). ``member_labels``: the labels of the
    member label image that make it up (ascending): the segmentation's, or with a model's
    ``member_threshold`` that of :func:`analysis.segmentation.pipeline.at_threshold`. ``centroid_rc``: mean of the members'
    centroids, pixel indices (row, column). ``outline_xy``: float (N, 2), N >= 3, a closed polygon in
    the DICOM PIXEL convention (column, row), pixel centres at +0.5, first vertex not repeated.
    ``area_mm2``: the outline's area. ``confidence``: in [0, 1]. ``features``: the cluster-level
    evidence (:data:`FEATURE_NAMES`), read-only.
    """

    cluster_id: int
    member_labels: tuple[int, ...]
    centroid_rc: tuple[float, float]
    outline_xy: np.ndarray
    area_mm2: float
    n_calcifications: int
    confidence: float
    features: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not (isinstance(self.cluster_id, int) and self.cluster_id >= 1):
            raise ValueError(f"cluster_id must be an integer >= 1, got {self.cluster_id!r}")
        outline = np.array(self.outline_xy, dtype=float, copy=True)
        if outline.ndim != 2 or outline.shape[1] != 2 or len(outline) < 3 or not np.isfinite(outline).all():
            raise ValueError("outline_xy must be a finite (N, 2) array with N >= 3")
        outline.setflags(write=False)
        object.__setattr__(self, "outline_xy", outline)
        if self.n_calcifications != len(self.member_labels):
            raise ValueError(f"n_calcifications {self.n_calcifications} != {len(self.member_labels)} members")
        if not 0.0 <= float(self.confidence) <= 1.0:
            raise ValueError(f"confidence {self.confidence!r} is outside [0, 1]")
        object.__setattr__(self, "features", MappingProxyType({str(k): float(v) for k, v in self.features.items()}))


# ---------------------------------------------------------------------------------------------
# The grouping rule on points (mm)

def link_components(points_mm: np.ndarray, link_mm: float) -> list[np.ndarray]:
    """Single-linkage groups: connected components of "centroids at most ``link_mm`` apart".

    ``points_mm``: (n, 2) centroids in mm. Returns index arrays (ascending), largest first, ties
    by first index.
    """
    points_mm = np.asarray(points_mm, float).reshape(-1, 2)
    n = len(points_mm)
    if n == 0:
        return []
    pairs = cKDTree(points_mm).query_pairs(link_mm * (1 + 1e-9), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    groups = [np.flatnonzero(comp == k) for k in range(comp.max() + 1)]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))


def max_in_disk(points_mm: np.ndarray, radius_mm: float, stop_at: int | None = None) -> int:
    """The most points of ``points_mm`` (n, 2, mm) that one disk of ``radius_mm`` can hold.

    Exact: some optimal disk has a point at its centre or two points on its boundary, and all of
    them are tried (points-centred first; ``stop_at`` ends the search once that count is reached).
    """
    pts = np.asarray(points_mm, float).reshape(-1, 2)
    n = len(pts)
    if n <= 1:
        return n
    tol = radius_mm * 1e-9 + 1e-12
    tree = cKDTree(pts)
    best = max(len(v) for v in tree.query_ball_point(pts, radius_mm + tol))
    if stop_at is not None and best >= stop_at:
        return best
    for i, j in tree.query_pairs(2 * radius_mm + tol, output_type="ndarray"):
        mid = (pts[i] + pts[j]) / 2
        half = pts[j] - pts[i]
        d = float(np.hypot(*half)) / 2
        if d == 0:
            continue
        h = math.sqrt(max(radius_mm ** 2 - d ** 2, 0.0))
        normal = np.array([-half[1], half[0]]) / (2 * d)
        for centre in (mid + h * normal, mid - h * normal):
            best = max(best, len(tree.query_ball_point(centre, radius_mm + tol)))
            if stop_at is not None and best >= stop_at:
                return best
    return best


def group_points(points_mm: np.ndarray, params: ClusterParams = ClusterParams()) -> list[np.ndarray]:
    """The clusters of the grouping rule among ``points_mm`` (n, 2, mm): single-linkage groups at
    ``link_mm`` with at least ``min_count`` points in one disk of area ``window_mm2``."""
    points_mm = np.asarray(points_mm, float).reshape(-1, 2)
    out = []
    for group in link_components(points_mm, params.link_mm):
        if len(group) < params.min_count:
            continue
        if max_in_disk(points_mm[group], params.window_radius_mm, stop_at=params.min_count) >= params.min_count:
            out.append(group)
    return out


# ---------------------------------------------------------------------------------------------
# Outline

def _hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of (n, 2) points, counter-clockwise in (x, y) axes."""
    return points[ConvexHull(points).vertices]


def cluster_outline(rows: np.ndarray, cols: np.ndarray, spacing_mm: tuple[float, float],
                    margin_mm: float, directions: int = 16) -> np.ndarray:
    """Outline (N, 2) in the PIXEL convention of the pixels (``rows``, ``cols``): the convex hull of
    their unit squares grown by ``margin_mm`` (an ellipse in pixels for unequal spacing).

    The hull of the squares is the hull of the square corners of the pixels whose centres are
    vertices of the centres' hull (a Minkowski sum of convex sets); the growth adds the margin
    ellipse's points to each vertex and takes the hull again, so the outline contains every point
    within ``margin_mm`` of a member pixel up to the 16-gon's chord error (1.9 % of the margin).
    """
    centres = np.unique(np.stack([np.asarray(cols, float), np.asarray(rows, float)], axis=1), axis=0) + 0.5
    try:
        centres = _hull(centres)
    except (QhullError, ValueError):  # fewer than 3 or collinear centres: the squares are enough
        pass
    square = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    points = (centres[:, None, :] + square[None]).reshape(-1, 2)
    if margin_mm > 0:
        angle = np.linspace(0, 2 * np.pi, directions, endpoint=False)
        # circumscribed polygon: its vertices at radius / cos(pi / k) so the true disk lies inside
        scale = margin_mm / math.cos(math.pi / directions)
        ellipse = np.stack([np.cos(angle) * scale / spacing_mm[1], np.sin(angle) * scale / spacing_mm[0]], axis=1)
        points = (_hull(points)[:, None, :] + ellipse[None]).reshape(-1, 2)
    outline = _hull(points)
    # ConvexHull orders counter-clockwise in (x, y) with y up; in the image (y = rows down) that
    # is clockwise on screen. Either is a valid closed polygon; keep scipy's order.
    return outline.astype(float)


def polygon_area(xy: np.ndarray) -> float:
    """Area of a closed polygon (N, 2), first vertex not repeated (shoelace), in its units²."""
    x, y = np.asarray(xy, float).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def points_in_polygon(xy: np.ndarray, points: np.ndarray) -> np.ndarray:
    """bool (m,): which of ``points`` (m, 2) lie inside or on the convex polygon ``xy`` (N, 2).

    For the convex outlines of this module (a half-plane test per edge, orientation-free)."""
    xy = np.asarray(xy, float)
    p = np.asarray(points, float).reshape(-1, 2)
    a, b = xy, np.roll(xy, -1, axis=0)
    cross = ((b[:, 0] - a[:, 0])[None] * (p[:, 1, None] - a[None, :, 1])
             - (b[:, 1] - a[:, 1])[None] * (p[:, 0, None] - a[None, :, 0]))
    scale = np.abs(cross).max(initial=1.0) * 1e-12
    return (cross >= -scale).all(axis=1) | (cross <= scale).all(axis=1)


# ---------------------------------------------------------------------------------------------
# Members and their evidence

@dataclass(frozen=True)
class _Members:
    """Per calcification of the view (index i = label - 1 of ``labels``)."""

    labels: np.ndarray        # int (n,)
    centroid_rc: np.ndarray   # (n, 2) pixel indices
    area_mm2: np.ndarray
    cnn: np.ndarray           # the selection CNN's support score (max over the label's objects)
    contrast: np.ndarray      # peak - local background median
    cnr: np.ndarray           # contrast / local background robust SD
    elongation: np.ndarray    # sqrt(lambda1 / lambda2) of the label's pixels in mm (1 = round)


def member_elongation(labels: np.ndarray, n: int, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Per label 1..n of ``labels``: ``sqrt(lambda1 / lambda2)`` of the covariance of its pixels'
    positions in mm, each pixel taken as the uniform square it covers (variance ``spacing² / 12``
    added per axis, so a one-pixel object is round, 1.0). A speck of grain or a compact
    calcification is near 1; a piece of a vessel or ligament edge, a few pixels wide and many long,
    is well above (a label without pixels: NaN)."""
    out = np.full(n, np.nan)
    extent = nonzero_extent(labels)
    if extent is None or n == 0:
        return out
    box = labels[extent]
    rows, cols = np.nonzero(box)
    lab = box[rows, cols]
    y = (rows + extent[0].start) * float(spacing_mm[0])
    x = (cols + extent[1].start) * float(spacing_mm[1])
    count = np.bincount(lab, minlength=n + 1)[1:].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = lambda v: np.bincount(lab, weights=v, minlength=n + 1)[1:] / count  # noqa: E731
        my, mx = mean(y), mean(x)
        vy = mean(y * y) - my ** 2 + float(spacing_mm[0]) ** 2 / 12
        vx = mean(x * x) - mx ** 2 + float(spacing_mm[1]) ** 2 / 12
        cxy = mean(x * y) - mx * my
        half_trace, det_root = (vx + vy) / 2, np.sqrt(np.maximum(((vx - vy) / 2) ** 2 + cxy ** 2, 0.0))
        l1, l2 = half_trace + det_root, np.maximum(half_trace - det_root, 1e-12)
        out = np.sqrt(l1 / l2)
    out[count == 0] = np.nan
    return out


def member_cnn_scores(labels: np.ndarray, objects: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Per label 1..n of ``labels``: the highest support score of the selection objects it holds.

    A label is a connected piece of the kept objects (holes filled), so it holds one or more of
    the selection's objects; a label holding none (only filled hole pixels, never in practice)
    gets NaN."""
    out = np.full(n, np.nan)
    extent = nonzero_extent(labels)
    if extent is None or len(scores) == 0:
        return out
    lab, obj = labels[extent], objects[extent]
    inside = (lab > 0) & (obj > 0)
    best = np.full(n + 1, -np.inf)
    np.maximum.at(best, lab[inside], np.asarray(scores, float)[obj[inside] - 1])
    best = best[1:]
    out[np.isfinite(best)] = best[np.isfinite(best)]
    return out


def member_contrast(pixels: np.ndarray, labels: np.ndarray, centroid_rc: np.ndarray, peak: np.ndarray,
                    spacing_mm: tuple[float, float], half_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Per member: peak minus the median of the unlabelled pixels of a square of half-side
    ``half_mm`` around its centroid, and that over the square's robust SD (1.4826 x MAD)."""
    hr = max(int(round(half_mm / spacing_mm[0])), 2)
    hc = max(int(round(half_mm / spacing_mm[1])), 2)
    contrast = np.zeros(len(peak))
    cnr = np.zeros(len(peak))
    rows, cols = pixels.shape
    for i, (r, c) in enumerate(np.round(centroid_rc).astype(int)):
        box = (slice(max(r - hr, 0), min(r + hr + 1, rows)), slice(max(c - hc, 0), min(c + hc + 1, cols)))
        background = pixels[box][labels[box] == 0]
        if background.size < 5:
            continue
        median = float(np.median(background))
        sd = 1.4826 * float(np.median(np.abs(background - median)))
        contrast[i] = float(peak[i]) - median
        cnr[i] = contrast[i] / max(sd, 1e-4)
    return contrast, cnr


def _members(segmentation: "Segmentation", pixels: np.ndarray, spacing_mm: tuple[float, float],
             breast_mask: np.ndarray | None, params: ClusterParams) -> _Members:
    particles = segmentation.particles
    labels = np.asarray(particles["label"], int)
    centroid = np.stack([particles["row"], particles["col"]], axis=1).astype(float).reshape(-1, 2)
    ok = np.isfinite(centroid).all(axis=1) & (np.asarray(particles["area_px"]) > 0)
    if breast_mask is not None and len(labels):
        mask = np.asarray(breast_mask, bool)
        r = np.clip(np.round(centroid[:, 0]).astype(int), 0, mask.shape[0] - 1)
        c = np.clip(np.round(centroid[:, 1]).astype(int), 0, mask.shape[1] - 1)
        ok &= np.where(ok, mask[r, c], False)
    n_all = len(labels)
    selection = segmentation.selection
    cnn = member_cnn_scores(segmentation.labels, selection.objects, selection.scores, n_all)
    keep = np.flatnonzero(ok)
    contrast, cnr = member_contrast(pixels, segmentation.labels, centroid[keep],
                                    np.asarray(particles["max_intensity"], float)[keep], spacing_mm,
                                    params.background_mm)
    elongation = member_elongation(segmentation.labels, n_all, spacing_mm)
    return _Members(labels=labels[keep], centroid_rc=centroid[keep],
                    area_mm2=np.asarray(particles["area_mm2"], float)[keep], cnn=cnn[keep],
                    contrast=contrast, cnr=cnr, elongation=elongation[keep])


def layout_features(points_mm: np.ndarray, params: ClusterParams) -> dict[str, float]:
    """Count, spread and shape features of a cluster's centroids (n, 2, mm)."""
    pts = np.asarray(points_mm, float).reshape(-1, 2)
    n = len(pts)
    centred = pts - pts.mean(axis=0)
    eig = np.sort(np.linalg.eigvalsh(np.cov(centred.T, bias=True)))[::-1] if n >= 2 else np.zeros(2)
    eig = np.clip(eig, 0.0, None)
    linearity = 1.0 - eig[1] / eig[0] if eig[0] > 0 else 1.0
    if n >= 2:
        d, _ = cKDTree(pts).query(pts, k=2)
        nn = float(np.median(d[:, 1]))
    else:
        nn = 0.0
    return {"n_calcifications": float(n), "log_n": math.log(max(n, 1)),
            "max_in_window": float(max_in_disk(pts, params.window_radius_mm)),
            "spread_mm": float(np.sqrt((centred ** 2).sum(axis=1).mean())) if n else 0.0,
            "linearity": float(linearity), "line_residual_mm": float(np.sqrt(eig[1])),
            "nn_distance_mm": nn}


#: The support whose evidence is the cap: float32 scores reach 1.0 exactly.
EVIDENCE_CAP = 6.0


def support_evidence(support: np.ndarray) -> np.ndarray:
    """``-log10(1 - support)``, capped at :data:`EVIDENCE_CAP`: the selection CNN's support on the
    scale where its operating points differ. Kept objects' supports are all within a few hundredths
    of 1 (the shipped operating point is 0.9935, cluster members are searched at up to 0.99), where
    a linear feature cannot tell 0.97 (evidence 1.5) from 0.999 (3)."""
    s = np.clip(np.asarray(support, float), 0.0, 1.0)
    return np.minimum(-np.log10(np.maximum(1.0 - s, 10.0 ** -EVIDENCE_CAP)), EVIDENCE_CAP)


def cluster_features(points_mm: np.ndarray, area_mm2: float, member_area_mm2: np.ndarray,
                     cnn: np.ndarray, contrast: np.ndarray, cnr: np.ndarray, edge_distance_mm: float,
                     params: ClusterParams = ClusterParams(), *, surround_density_per_cm2: float = math.nan,
                     view_density_per_cm2: float = math.nan,
                     member_elongation: np.ndarray | None = None) -> dict[str, float]:
    """All of :data:`FEATURE_NAMES` for one cluster (per-member arrays in member order).

    ``surround_density_per_cm2``: the view's other calcifications per cm² of breast around the
    cluster (:func:`surround_density`); ``view_density_per_cm2``: all of them per cm² of breast;
    ``member_elongation``: per member, :func:`member_elongation`. Unknown: NaN (a model sends a
    missing value where it learnt to)."""
    f = layout_features(points_mm, params)
    window_count = params.window_mm2 / 100.0 * surround_density_per_cm2
    elongation = np.asarray(member_elongation if member_elongation is not None else [math.nan], float)
    areas = np.asarray(member_area_mm2, float)
    cnn = np.asarray(cnn, float)
    cnn = np.where(np.isfinite(cnn), cnn, 0.0)
    evidence = support_evidence(cnn)
    f.update({
        "density_per_cm2": f["n_calcifications"] / max(area_mm2 / 100.0, 1e-6),
        "area_mm2": float(area_mm2),
        "cnn_mean": float(cnn.mean()), "cnn_min": float(cnn.min()), "cnn_max": float(cnn.max()),
        "cnn_evidence_mean": float(evidence.mean()), "cnn_evidence_sum": float(evidence.sum()),
        "cnn_evidence_top3": float(np.sort(evidence)[::-1][:3].mean()),
        "contrast_mean": float(np.mean(contrast)), "cnr_mean": float(np.mean(cnr)),
        "cnr_max": float(np.max(cnr)),
        "object_area_mean_mm2": float(areas.mean()),
        "object_area_cv": float(areas.std() / areas.mean()) if areas.mean() > 0 else 0.0,
        "edge_distance_mm": float(edge_distance_mm),
        "surround_density_per_cm2": float(surround_density_per_cm2),
        "view_density_per_cm2": float(view_density_per_cm2),
        "window_excess": f["max_in_window"] / (1.0 + window_count),
        "object_elongation_mean": float(np.mean(elongation)),
    })
    return {name: f[name] for name in FEATURE_NAMES}


# ---------------------------------------------------------------------------------------------
# Scoring

def rule_confidence(features: Mapping[str, float]) -> float:
    """Confidence without a trained model: a hand-set rule, not a measured operating point.

    ``count * shape * support``: ``count = 1 - exp(-(n - 2) / 3)`` (3 members 0.28, 5 -> 0.63,
    10 -> 0.93); ``shape = min(1, 0.2 + 0.8 * line_residual_mm / 0.5 mm)`` when n >= 4, else 1: a
    line of objects along a vessel or duct (the commonest false cluster) has its centroids within
    ~0.3 mm of one axis, while a cluster, even an elongated one, spreads across its axis (linearity
    alone would also reject the elongated clusters that point along a duct; 3 points are too few to
    call a line); ``support = min(1, cnn_mean / 0.5)`` (the selection CNN's mean support,
    saturating at 0.5). A cluster is kept when the confidence is >= :data:`RULE_THRESHOLD` (0.5): in
    practice at least 5 well-supported members not on one line. docs/clusters.md gives its measured
    figures, well below a trained model's.
    """
    n = float(features["n_calcifications"])
    count = 1.0 - math.exp(-max(n - 2.0, 0.0) / 3.0)
    shape = min(1.0, 0.2 + 0.8 * float(features["line_residual_mm"]) / 0.5) if n >= 4 else 1.0
    support = min(1.0, max(float(features["cnn_mean"]), 0.0) / 0.5)
    return float(min(max(count * shape * support, 0.0), 1.0))


def transformed_features(features: Sequence[Mapping[str, float]], names: Sequence[str],
                         transforms: Sequence[str]) -> np.ndarray:
    """The (n, k) matrix of the features ``names`` of some clusters, each after its transform
    (``"log1p"`` of the value clipped at 0, or ``"identity"``); NaN where a value is not finite."""
    x = np.array([[float(f[name]) for name in names] for f in features], float).reshape(-1, len(names))
    for j, t in enumerate(transforms):
        if t == "log1p":
            x[:, j] = np.log1p(np.clip(x[:, j], 0.0, None))
    return np.where(np.isfinite(x), x, np.nan)


LEARNERS = ("logistic", "lightgbm")
#: Serialises building and calling a model's LightGBM booster (LightGBM's own predictor set-up is not
#: safe to race on one booster). Re-entrant: ``predict`` holds it while ``booster`` builds the cache.
_BOOSTER_LOCK = threading.RLock()


@dataclass(frozen=True)
class ClusterModel:
    """A cluster scorer on transformed cluster features: a logistic regression or gradient-boosted
    trees (LightGBM).

    ``feature_names``: a subset of :data:`FEATURE_NAMES`; ``transforms``: per feature, ``"log1p"``
    (counts, areas, distances) or ``"identity"``, applied before either learner.

    * ``learner="logistic"``: ``p = sigmoid(intercept + sum_k coef_k * (g_k(x_k) - mean_k) / scale_k)``
      with ``g_k`` the transform (a missing value takes the training mean).
    * ``learner="lightgbm"``: ``p`` is the LightGBM booster ``booster_text`` (LightGBM's own text
      format, its feature names equal to ``feature_names``) on the transformed features (a missing
      value goes where LightGBM learnt to send it); ``mean``, ``scale`` and ``coef`` are empty.

    A cluster is kept when ``p >= threshold``. ``member_threshold``: the selection CNN's support
    score at which a calcification counts as a *member* (module docstring, "Members"); None: the
    segmentation's own operating point. ``member_density_per_cm2``: raise that support per view
    until at most this many objects per cm² of breast reach it (:func:`view_member_threshold`;
    None: no raise; needs ``member_threshold``). Both are part of the model, because the features
    were learnt on members found so. ``info``: how it was made (data, seeds, NOT FOR CLINICAL USE).
    """

    feature_names: tuple[str, ...]
    transforms: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    name: str = "calcnode-clusters-demo"
    version: str = "1"
    not_for_clinical_use: bool = True
    info: Mapping[str, Any] = field(default_factory=dict)
    member_threshold: float | None = None
    learner: str = "logistic"
    booster_text: str | None = None
    member_density_per_cm2: float | None = None

    def __post_init__(self):
        if self.member_threshold is not None and not (
                isinstance(self.member_threshold, (int, float)) and 0.0 <= float(self.member_threshold) <= 1.0):
            raise ValueError(f"cluster model member_threshold {self.member_threshold!r} is outside [0, 1]")
        if self.member_density_per_cm2 is not None:
            d = self.member_density_per_cm2
            if not (isinstance(d, (int, float)) and math.isfinite(d) and d > 0):
                raise ValueError(f"cluster model member_density_per_cm2 {d!r} is not a density > 0")
            if self.member_threshold is None:
                raise ValueError("cluster model: member_density_per_cm2 raises member_threshold, which is not set")
        if self.learner not in LEARNERS:
            raise ValueError(f"cluster model learner {self.learner!r} is not one of {LEARNERS}")
        k = len(self.feature_names)
        unknown = set(self.feature_names) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"cluster model uses unknown features {sorted(unknown)}")
        if len(self.transforms) != k:
            raise ValueError("cluster model: feature_names and transforms differ in length")
        if set(self.transforms) - {"log1p", "identity"}:
            raise ValueError(f"cluster model: unknown transforms {sorted(set(self.transforms))}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"cluster model threshold {self.threshold!r} is outside [0, 1]")
        if self.learner == "lightgbm":
            if not self.booster_text:
                raise ValueError("cluster model: a lightgbm model needs its booster_text")
            names = list(self.booster().feature_name())
            if names != list(self.feature_names):
                raise ValueError(f"cluster model: the booster's features {names} differ from feature_names")
            return
        if self.booster_text is not None:
            raise ValueError("cluster model: a logistic model has no booster_text")
        if not all(len(getattr(self, a)) == k for a in ("mean", "scale", "coef")):
            raise ValueError("cluster model: feature_names, transforms, mean, scale and coef differ in length")
        if not all(math.isfinite(v) for v in (*self.mean, *self.coef, self.intercept)) or \
                not all(math.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError("cluster model: non-finite coefficients or non-positive scale")

    def booster(self):
        """The LightGBM booster of ``booster_text``, read once (a ``lightgbm`` model only)."""
        with _BOOSTER_LOCK:
            booster = self.__dict__.get("_booster_cache")
            if booster is None:
                import lightgbm as lgb  # deferred: about a second to import, needed only for this learner

                try:
                    booster = lgb.Booster(model_str=self.booster_text)
                except Exception as exc:  # LightGBM raises its own error type on a bad model text
                    raise ValueError(f"cluster model: the LightGBM booster cannot be read ({exc})") from None
                object.__setattr__(self, "_booster_cache", booster)
            return booster

    def transformed(self, features: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The (n, k) matrix of some clusters' features after their transforms (NaN where missing)."""
        return transformed_features(features, self.feature_names, self.transforms)

    def design(self, features: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The logistic model's standardised design matrix (n, k)."""
        x = self.transformed(features)
        x = np.where(np.isfinite(x), x, np.asarray(self.mean)[None])
        return (x - np.asarray(self.mean)) / np.asarray(self.scale)

    def predict(self, features: Sequence[Mapping[str, float]]) -> np.ndarray:
        """P(true cluster) per cluster, in [0, 1]."""
        if self.learner == "lightgbm":
            x = self.transformed(features)
            if not len(x):
                return np.zeros(0)
            with _BOOSTER_LOCK:   # the views of a study are detected in threads; one booster serves them
                return np.asarray(self.booster().predict(x, num_threads=1), float).reshape(-1)
        z = self.design(features) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_dict(self) -> dict:
        out = {"format": MODEL_FORMAT, "name": self.name, "version": self.version,
               "not_for_clinical_use": self.not_for_clinical_use,
               "feature_names": list(self.feature_names), "transforms": list(self.transforms),
               "mean": list(self.mean), "scale": list(self.scale), "coef": list(self.coef),
               "intercept": self.intercept, "threshold": self.threshold, "info": dict(self.info)}
        if self.member_threshold is not None:  # absent: a model file written before members had their own
            out["member_threshold"] = float(self.member_threshold)
        if self.member_density_per_cm2 is not None:  # absent: members at one support on every view
            out["member_density_per_cm2"] = float(self.member_density_per_cm2)
        if self.learner != "logistic":         # absent: a logistic model (every file before LightGBM)
            out["learner"] = self.learner
            out["booster_text"] = self.booster_text
        return out

    def to_bytes(self) -> bytes:
        """The model file (canonical JSON: same model, same bytes); ``training.clusters`` writes it."""
        return (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ClusterModel":
        try:
            blob = json.loads(data.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a calcnode cluster model ({type(exc).__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
            raise ValueError(f"not a calcnode cluster model (format {MODEL_FORMAT} expected)")
        try:
            return cls(feature_names=tuple(blob["feature_names"]), transforms=tuple(blob["transforms"]),
                       mean=tuple(map(float, blob["mean"])), scale=tuple(map(float, blob["scale"])),
                       coef=tuple(map(float, blob["coef"])), intercept=float(blob["intercept"]),
                       threshold=float(blob["threshold"]), name=str(blob["name"]),
                       version=str(blob["version"]), not_for_clinical_use=bool(blob["not_for_clinical_use"]),
                       info=dict(blob.get("info", {})),
                       member_threshold=None if blob.get("member_threshold") is None
                       else float(blob["member_threshold"]),
                       member_density_per_cm2=None if blob.get("member_density_per_cm2") is None
                       else float(blob["member_density_per_cm2"]),
                       learner=str(blob.get("learner", "logistic")), booster_text=blob.get("booster_text"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"calcnode cluster model lacks or mistypes {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> "ClusterModel":
        """Read a model file (reading only; writing is ``training.clusters``')."""
        try:
            return cls.from_bytes(Path(path).read_bytes())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of :meth:`to_bytes`: the model's identity."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


MODELS_DIR = Path(__file__).resolve().parent / "models"
#: The shipped demonstration cluster model (simulator + real normal tissue: NOT FOR CLINICAL USE).
DEFAULT_CLUSTER_MODEL = MODELS_DIR / "calcnode-clusters-demo-1" / "cluster-model.json"


def default_cluster_model() -> ClusterModel | None:
    """The shipped demonstration model, or None when this installation has none."""
    return ClusterModel.load(DEFAULT_CLUSTER_MODEL) if DEFAULT_CLUSTER_MODEL.is_file() else None


# ---------------------------------------------------------------------------------------------
# The view

@dataclass(frozen=True)
class ClusterCandidate:
    """A group passing the grouping rule, before scoring (for training and evaluation)."""

    member_labels: tuple[int, ...]
    centroid_rc: tuple[float, float]
    outline_xy: np.ndarray
    area_mm2: float
    features: Mapping[str, float]


def breast_area(breast_mask: np.ndarray | None, image_shape: tuple[int, int],
                spacing_mm: tuple[float, float]) -> float:
    """Area (mm²) of the breast mask, or of the whole image without one."""
    pixels = np.count_nonzero(breast_mask) if breast_mask is not None else int(np.prod(image_shape))
    return float(pixels) * spacing_mm[0] * spacing_mm[1]


def breast_area_in_disk(breast_mask: np.ndarray | None, centre_rc: Sequence[float], radius_mm: float,
                        spacing_mm: tuple[float, float]) -> float:
    """Area (mm²) of the breast within ``radius_mm`` of ``centre_rc`` (pixel indices): the mask's
    pixels whose centres lie in the disk (an ellipse in pixels for unequal spacing); without a mask,
    the part of the disk inside the image is not known and the whole disk's area is returned."""
    if breast_mask is None:
        return math.pi * radius_mm ** 2
    rows, cols = breast_mask.shape
    hr, hc = radius_mm / spacing_mm[0], radius_mm / spacing_mm[1]
    r0, r1 = max(int(math.floor(centre_rc[0] - hr)), 0), min(int(math.ceil(centre_rc[0] + hr)) + 1, rows)
    c0, c1 = max(int(math.floor(centre_rc[1] - hc)), 0), min(int(math.ceil(centre_rc[1] + hc)) + 1, cols)
    if r0 >= r1 or c0 >= c1:
        return 0.0
    rr = ((np.arange(r0, r1) - centre_rc[0]) * spacing_mm[0])[:, None]
    cc = ((np.arange(c0, c1) - centre_rc[1]) * spacing_mm[1])[None, :]
    inside = (rr ** 2 + cc ** 2) <= radius_mm ** 2
    return float(np.count_nonzero(inside & np.asarray(breast_mask[r0:r1, c0:c1], bool))) * spacing_mm[0] * spacing_mm[1]


def surround_density(points_mm: np.ndarray, group: np.ndarray, centre_mm: np.ndarray, radius_mm: float,
                     breast_area_mm2: float) -> float:
    """The view's calcifications outside ``group`` whose centroids (``points_mm``, (n, 2) mm) lie
    within ``radius_mm`` of ``centre_mm``, per cm² of ``breast_area_mm2`` (the breast in that disk;
    the group's own area is not taken out, so a large group lowers its surround a little). What the
    cluster must stand out from: a true cluster is an excess of calcifications over its
    surroundings, and in grainy or dense real tissue isolated objects are many."""
    if breast_area_mm2 <= 0:
        return math.nan
    near = np.flatnonzero(((np.asarray(points_mm, float) - centre_mm) ** 2).sum(axis=1) <= radius_mm ** 2)
    others = np.setdiff1d(near, group, assume_unique=True).size
    return others / (breast_area_mm2 / 100.0)


def view_member_threshold(scores: np.ndarray, breast_area_mm2: float, base: float,
                          max_density_per_cm2: float | None) -> float:
    """The selection support a calcification needs to be a cluster member on this view: ``base``,
    raised until at most ``max_density_per_cm2`` of the selection's objects per cm² of breast
    reach it (None: ``base``).

    Why: the grouping rule's "3 within 1 cm²" is met by chance wherever isolated objects are dense.
    In the simulated views the scorer learnt on, the members at 0.9 are ~1 per cm² of breast (90th
    percentile ~2); a real processed view at the same support has 3–4 per cm² (grain, vessel and
    ligament edges), where every 1 cm² window expects 3 by chance, single linkage at 5 mm
    percolates into groups of 80 spread over 6 cm², and the scorer meets groups it never saw. A
    constant-false-alarm-rate rule instead: each view gets the support at which its own density of
    objects is the simulator's, so a grainy view is searched at a higher support, and a clear one
    where it was. ``scores``: the selection's support per object (``Selection.scores``).
    """
    base = float(base)
    if max_density_per_cm2 is None:
        return base
    allowed = int(math.floor(max(float(max_density_per_cm2), 0.0) * max(breast_area_mm2, 0.0) / 100.0))
    scores = np.asarray(scores, float)
    s = np.sort(scores[scores >= base])[::-1]
    if len(s) <= allowed:
        return base
    # the least support with at most ``allowed`` objects at or above it: just above the
    # (allowed + 1)-th best (ties at that score all go out)
    return float(min(np.nextafter(s[allowed], np.inf), 1.0))


def cluster_members(segmentation: "Segmentation", pixels: np.ndarray, spacing_mm: tuple[float, float],
                    breast_mask: np.ndarray | None, member_threshold: float | None = None,
                    member_density_per_cm2: float | None = None) -> "Segmentation":
    """The view's calcifications that may be cluster members (module docstring, "Members"): the
    selection's objects with support >= ``member_threshold`` raised for this view by
    :func:`view_member_threshold` (at most ``member_density_per_cm2`` per cm² of ``breast_mask``, or
    of the image without one), as a :class:`Segmentation` of that label image
    (:func:`analysis.segmentation.pipeline.at_threshold`); ``member_threshold`` None:
    ``segmentation`` itself (its operating point; a density needs a threshold to raise)."""
    if member_threshold is None:
        if member_density_per_cm2 is not None:
            raise ValueError("member_density_per_cm2 raises member_threshold, which is not given")
        return segmentation
    from analysis.segmentation.pipeline import at_threshold  # loads torch: only when asked

    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    threshold = member_threshold
    if member_density_per_cm2 is not None:   # the breast's area only when the density needs it
        threshold = view_member_threshold(segmentation.selection.scores,
                                          breast_area(breast_mask, np.shape(pixels), spacing),
                                          member_threshold, member_density_per_cm2)
    return at_threshold(segmentation, pixels, spacing, threshold)


def candidate_clusters(segmentation: "Segmentation", pixels: np.ndarray, spacing_mm: tuple[float, float],
                       breast_mask: np.ndarray | None, params: ClusterParams = ClusterParams(),
                       member_threshold: float | None = None,
                       member_density_per_cm2: float | None = None) -> list[ClusterCandidate]:
    """Every group of the view's calcifications that passes the grouping rule, with its outline
    and :data:`FEATURE_NAMES` (module docstring). ``breast_mask``: bool (rows, cols), members must
    have their centroid in it (None: every calcification). ``member_threshold`` and
    ``member_density_per_cm2``: members are the selection's objects :func:`cluster_members` keeps
    (``member_labels`` then refer to that label image), None: ``segmentation``'s own calcifications."""
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    segmentation = cluster_members(segmentation, pixels, spacing, breast_mask, member_threshold,
                                   member_density_per_cm2)
    m = _members(segmentation, np.asarray(pixels, np.float32), spacing, breast_mask, params)
    if len(m.labels) < params.min_count:
        return []
    points_mm = m.centroid_rc * np.array(spacing)
    groups = group_points(points_mm, params)
    if not groups:
        return []
    labels = segmentation.labels
    edge = None
    if breast_mask is not None:
        edge = ndimage.distance_transform_edt(np.asarray(breast_mask, bool), sampling=spacing)
    breast_mm2 = breast_area(breast_mask, np.shape(pixels), spacing)
    view_density = len(m.labels) / (breast_mm2 / 100.0) if breast_mm2 > 0 else math.nan
    objects = ndimage.find_objects(labels)
    out = []
    for group in groups:
        rows, cols = [], []
        for label in m.labels[group]:
            box = objects[label - 1]
            r, c = np.nonzero(labels[box] == label)
            rows.append(r + box[0].start)
            cols.append(c + box[1].start)
        outline = cluster_outline(np.concatenate(rows), np.concatenate(cols), spacing, params.margin_mm)
        area = polygon_area(outline) * spacing[0] * spacing[1]
        centroid = m.centroid_rc[group].mean(axis=0)
        if edge is not None:
            rr = min(max(int(round(centroid[0])), 0), edge.shape[0] - 1)
            cc = min(max(int(round(centroid[1])), 0), edge.shape[1] - 1)
            edge_mm = float(edge[rr, cc])
        else:
            edge_mm = float("nan")
        around = breast_area_in_disk(breast_mask, centroid, params.surround_mm, spacing)
        surround = surround_density(points_mm, group, centroid * np.array(spacing), params.surround_mm, around)
        features = cluster_features(points_mm[group], area, m.area_mm2[group], m.cnn[group], m.contrast[group],
                                    m.cnr[group], edge_mm, params, surround_density_per_cm2=surround,
                                    view_density_per_cm2=view_density, member_elongation=m.elongation[group])
        out.append(ClusterCandidate(member_labels=tuple(int(v) for v in m.labels[group]),
                                    centroid_rc=(float(centroid[0]), float(centroid[1])),
                                    outline_xy=outline, area_mm2=float(area), features=features))
    return out


def score_candidates(candidates: Sequence[ClusterCandidate], model: ClusterModel | None = None) -> np.ndarray:
    """Confidence in [0, 1] per candidate: the model's probability, or :func:`rule_confidence`."""
    if not candidates:
        return np.zeros(0)
    if model is None:
        return np.array([rule_confidence(c.features) for c in candidates])
    return np.clip(model.predict([c.features for c in candidates]), 0.0, 1.0)


def detect_clusters(segmentation: "Segmentation", pixels: np.ndarray, spacing_mm: tuple[float, float],
                    breast_mask: np.ndarray | None, params: ClusterParams = ClusterParams(),
                    model: ClusterModel | None = None, *, keep_all: bool = False) -> list[DetectedCluster]:
    """The calcification clusters of one view (docs/method.md §3.7).

    Parameters
    ----------
    segmentation : the view's :class:`analysis.segmentation.pipeline.Segmentation` (whole breast,
        ``segment(..., region=None)``): its labels, particle table and selection scores are used.
    pixels : float32 (rows, cols) in [0, 1], calcifications bright (the image segmented).
    spacing_mm : (row, column) pixel spacing in mm.
    breast_mask : bool (rows, cols), the breast (:func:`analysis.segmentation.breast_mask.breast_mask`);
        calcifications whose centroid is outside are ignored. None: all count.
    params : the grouping rule's parameters (mm).
    model : the trained cluster model; None: :func:`rule_confidence` and :data:`RULE_THRESHOLD`.
        Its ``member_threshold`` and ``member_density_per_cm2`` (when set) decide which
        calcifications are members (:func:`cluster_members`).
    keep_all : return every candidate whatever its confidence (evaluation sweeps).

    Returns
    -------
    The clusters with ``confidence >= threshold`` (all with ``keep_all``), ``cluster_id`` 1..n in
    order of decreasing confidence (ties: larger clusters first, then position).
    """
    candidates = candidate_clusters(segmentation, pixels, spacing_mm, breast_mask, params,
                                    None if model is None else model.member_threshold,
                                    None if model is None else model.member_density_per_cm2)
    confidence = score_candidates(candidates, model)
    threshold = RULE_THRESHOLD if model is None else float(model.threshold)
    order = sorted(range(len(candidates)),
                   key=lambda i: (-confidence[i], -len(candidates[i].member_labels), candidates[i].centroid_rc))
    out = []
    for i in order:
        if not keep_all and confidence[i] < threshold:
            continue
        c = candidates[i]
        out.append(DetectedCluster(cluster_id=len(out) + 1, member_labels=c.member_labels,
                                   centroid_rc=c.centroid_rc, outline_xy=c.outline_xy, area_mm2=c.area_mm2,
                                   n_calcifications=len(c.member_labels), confidence=float(confidence[i]),
                                   features=c.features))
    return out
