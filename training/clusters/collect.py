"""Segment views, collect their candidate clusters and label them against truth.

Per view: the breast mask (:func:`analysis.segmentation.breast_mask.breast_mask`), the whole-view
segmentation with the shipped selection CNN (``segment(..., region=None)``, as
:mod:`analysis.study` does for ``no_roi="whole_breast"``), then every group that passes the grouping
rule (:func:`analysis.clusters.candidate_clusters`) with its features.

**Hit rule.** A candidate *hits* a truth cluster when its outline contains at least half of that
cluster's calcifications (their pixel centroids, PIXEL convention), **or at least half of those of
its calcifications the ideal observer finds** (below; since the eighth session, once
:func:`add_observer_truth` has run). The second half of the rule is why: the target's truth is the
clusters the ideal observer sees, by the calcifications it sees; a mark around exactly those is a
correct mark, and asking the outline to also hold calcifications nobody could see asks more than the
observer could do (an amorphous cluster of 9 with 3 visible could not be hit at all). For a cluster
whose calcifications are all visible (most punctate, fine linear and fine pleomorphic ones) the two
halves are the same. A candidate that hits no truth cluster is a false mark, unless its centre lies
in the view's ignore region (a real view's benign lesion, :mod:`training.clusters.views`). A truth
cluster is found at a threshold when a candidate with confidence >= the threshold hits it.
``hits_all`` keeps the first half alone (the rule before the eighth session), so both can be reported.

**Detectable.** A truth cluster is detectable when at least ``min_count`` (3) *and* at least half of
its calcifications overlap a segmented calcification (a pixel in common): with fewer, the grouping
rule or the hit rule cannot be met from what the segmentation found (except by chance inclusion).
The segmentation's misses are not the cluster stage's, so sensitivities are reported for all
clusters and for detectable ones.

**Assessable.** ``n_operating_point``: the calcifications at the segmentation's operating point whose
centroid lies in the candidate's outline, i.e. what the node's ROI analysis of that outline gets; with
fewer than 2 a detected cluster is reported but not scored (docs/clusters.md, "Members at their own
threshold"). It differs from the member count when the members are searched at another threshold.

**Visible to the ideal observer** (the truth the cluster target is stated on). A truth cluster is
*visible* when at least ``OBSERVER_MIN_PARTICLES`` (3) of its calcifications are found by the
ideal observer of ``calcnode seg-ceiling`` (:mod:`training.segmentation.ceiling`) searching the
cluster's simulator ROI at 1 false positive per cm²: a particle counts as found when the observer's
probability of finding it, ``Phi(d' - z*)``, is at least 1/2 (its d' reaches the search threshold).
This is independent of our segmentation: a cluster nobody could see is not counted as a miss, a
cluster the observer sees but our segmentation misses is. :func:`add_observer_truth` adds it to the
truth of the views of a ``calcnode synth`` folder (elsewhere, a folder without ``dataset.json``, it
stays unknown, ``None``).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.clusters import ClusterParams, candidate_clusters, cluster_members, points_in_polygon
from analysis.segmentation.breast_mask import breast_mask

from .views import View, synthetic_view_name

DEFAULT_SEGMENTATION_MODEL = Path(__file__).resolve().parents[2] / "analysis" / "segmentation" / "weights" / "demo-seg-cnn.pt"
HIT_FRACTION = 0.5
OBSERVER_FP_PER_CM2 = 1.0      # the ideal observer's allowed false positives per cm² of ROI
OBSERVER_MIN_PARTICLES = 3     # a cluster is visible with >= 3 particles the ideal observer finds


@dataclass
class ViewCandidates:
    """One view's candidate clusters and truth, in plain values (JSON-able via :meth:`to_dict`)."""

    name: str
    source: str
    truth: list[dict]                    # per truth cluster: kind, n, n_segmented, detectable
    candidates: list[dict] = field(default_factory=list)  # features, hits (truth indices), ignored, ...
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "truth": self.truth,
                "candidates": self.candidates, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "ViewCandidates":
        return cls(name=d["name"], source=d["source"], truth=d["truth"], candidates=d["candidates"],
                   seconds=d.get("seconds", 0.0))


def hits(outline_xy: np.ndarray, truth_points: list[np.ndarray], fraction: float = HIT_FRACTION) -> list[int]:
    """Indices of the truth clusters (each (n, 2) PIXEL points) of which ``outline_xy`` contains at
    least ``fraction`` of the calcifications (the hit rule)."""
    out = []
    for k, points in enumerate(truth_points):
        if len(points) and points_in_polygon(outline_xy, points).sum() >= fraction * len(points):
            out.append(k)
    return out


def load_segmentation_model(path: str | Path | None = None):
    from analysis.segmentation.cnn import SegmentationModel

    return SegmentationModel.load(Path(path) if path else DEFAULT_SEGMENTATION_MODEL)


def collect_view(view: View, seg_model, params: ClusterParams = ClusterParams(),
                 member_threshold: float | None = None,
                 member_density_per_cm2: float | None = None) -> ViewCandidates:
    """Segment ``view`` and label its candidate clusters (module docstring). ``member_threshold``
    and ``member_density_per_cm2``: how the cluster members are chosen
    (:func:`analysis.clusters.cluster_members`), None: the segmentation model's own calcifications;
    "detectable" is judged on those members."""
    from analysis.segmentation.pipeline import segment

    start = time.process_time()
    mask = breast_mask(view.pixels, view.spacing_mm)
    seg = segment(view.pixels, view.spacing_mm, None, seg_model)
    # the operating point's calcifications (what the SEG shows and the classifier scores), PIXEL points
    at_operating_point = np.stack([seg.particles["col"], seg.particles["row"]], axis=1).astype(float) + 0.5
    seg = cluster_members(seg, view.pixels, view.spacing_mm, mask, member_threshold, member_density_per_cm2)
    candidates = candidate_clusters(seg, view.pixels, view.spacing_mm, mask, params)
    truth = []
    for cluster in view.clusters:
        segmented = 0
        if view.truth_labels is not None:
            found = np.unique(view.truth_labels[(seg.labels > 0) & (view.truth_labels > 0)])
            segmented = int(np.isin(cluster.particle_labels, found).sum())
        truth.append({"cluster_id": cluster.cluster_id, "kind": cluster.kind, "n": len(cluster.points_xy),
                      "labels": list(cluster.particle_labels),
                      "points_xy": np.round(np.asarray(cluster.points_xy, float), 2).tolist(),
                      "n_segmented": segmented, "detectable": segmented >= max(params.min_count, math.ceil(HIT_FRACTION * len(cluster.points_xy)))})
    points = [c.points_xy for c in view.clusters]
    out = []
    for c in candidates:
        r, col = int(round(c.centroid_rc[0])), int(round(c.centroid_rc[1]))
        ignored = bool(view.ignore is not None and view.ignore[min(max(r, 0), view.ignore.shape[0] - 1),
                                                              min(max(col, 0), view.ignore.shape[1] - 1)])
        n_op = int(points_in_polygon(c.outline_xy, at_operating_point).sum()) if len(at_operating_point) else 0
        hit = hits(c.outline_xy, points)
        out.append({"features": dict(c.features), "hits": hit, "hits_all": hit, "ignored": ignored,
                    "n_operating_point": n_op,
                    "centroid_rc": list(c.centroid_rc), "area_mm2": c.area_mm2,
                    "outline_xy": np.round(c.outline_xy, 2).tolist()})
    return ViewCandidates(name=view.name, source=view.source, truth=truth, candidates=out,
                          seconds=round(time.process_time() - start, 2))


def collect(views, seg_model, params: ClusterParams = ClusterParams(), progress: bool = True,
            member_threshold: float | None = None,
            member_density_per_cm2: float | None = None) -> list[ViewCandidates]:
    """:func:`collect_view` over an iterable of views."""
    out = []
    for i, view in enumerate(views, 1):
        out.append(collect_view(view, seg_model, params, member_threshold, member_density_per_cm2))
        if progress:
            v = out[-1]
            print(f"\r[{i}] {v.name}: {len(v.candidates)} candidates, {len(v.truth)} truth clusters, "
                  f"{v.seconds:.1f} s CPU", end="", file=sys.stderr, flush=True)
    if progress and out:
        print(file=sys.stderr)
    return out


def apply_observer(view: ViewCandidates, found: dict[int, float]) -> None:
    """Mark ``view``'s truth clusters with what the ideal observer finds (``found``: per particle
    label, its probability of being found, :func:`training.segmentation.ceiling.particles_found`):
    ``observed_labels``, ``n_observer`` and ``visible``; then add to each candidate's ``hits`` the
    clusters of which it contains at least half of the observed calcifications (the hit rule's second
    half, module docstring). Truth collected before the rule (no ``points_xy``) keeps its hits."""
    observed_points = []
    for t in view.truth:
        labels = [int(label) for label in t.get("labels", ())]
        seen = [found.get(label, 0.0) >= 0.5 for label in labels]
        t["observed_labels"] = [label for label, s in zip(labels, seen) if s]
        t["n_observer"], t["visible"] = len(t["observed_labels"]), len(t["observed_labels"]) >= OBSERVER_MIN_PARTICLES
        points = np.asarray(t.get("points_xy", []), float).reshape(-1, 2)
        observed_points.append(points[np.asarray(seen, bool)] if len(points) == len(labels) else np.zeros((0, 2)))
    for c in view.candidates:
        extra = hits(np.asarray(c["outline_xy"], float), observed_points)
        c["hits"] = sorted(set(c["hits"]) | set(extra))


def add_observer_truth(views: list[ViewCandidates], root: str | Path, progress: bool = True) -> int:
    """Mark each truth cluster of ``views`` (collected from the ``calcnode synth`` folder ``root``)
    with ``n_observer`` (its calcifications the ideal observer finds) and ``visible``, and extend the
    candidates' hits by the rule's second half (:func:`apply_observer`). Returns the number of views
    annotated; 0 for a folder that is not a ``calcnode synth`` set (the fields stay ``None``)."""
    from training.segmentation.ceiling import image_observers, particles_found

    by_name = {v.name: v for v in views}
    for v in views:
        for t in v.truth:
            t.setdefault("n_observer", None)
            t.setdefault("visible", None)
    done = 0
    try:
        for truth_path, observers in image_observers(root):
            view = by_name.get(synthetic_view_name(Path(root), truth_path))
            if view is None:
                continue
            apply_observer(view, particles_found(observers, OBSERVER_FP_PER_CM2))
            done += 1
            if progress:
                print(f"\rideal observer: {done} views", end="", file=sys.stderr, flush=True)
    except ValueError as exc:   # not a calcnode synth folder: no background to draw again
        print(f"ideal observer skipped for {root}: {exc}", file=sys.stderr)
        return 0
    if progress and done:
        print(file=sys.stderr)
    return done
