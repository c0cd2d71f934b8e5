"""Detection and segmentation metrics against truth (``calcnode evaluate-seg``).

For every image with truth and ROIs, inside the union of its ROIs:

* truth objects: 8-connected components of the truth mask whose centroid lies in the region;
* predicted objects: HDoG candidates (HDoG stage), the CNN's scored objects (HDoG + CNN: the
  candidates cut to their outlines, the product's segmentation) and, for comparison, HDoGReg's
  own rule on whole candidates (HDoG + CNN, whole candidates);
* a prediction *matches* a truth object when their centroids are <= 0.35 mm apart or their
  IoU is >= 0.3; sensitivity = matched truth / all truth; false positives = predictions matching
  no truth, per cm² of analysed region.

The FROC curve sweeps the stage's own score: the peak DoG value for the HDoG stage, the CNN support
score for HDoG + CNN (the threshold t such that more than 30 % of the object's pixels are >= t; the
operating point is the model's calibrated ``prediction_threshold``). Per-object
IoU is that of each truth object with its best-overlapping kept prediction (0 when missed); mIoU
is their mean, reported over detected objects and over all objects. Where the truth names each
particle's type (the simulator's ``*_particles.csv``), sensitivity is also given per type, at the
operating point and at the most sensitive threshold with <= 1 FP/cm², beside the ideal observer's
bound when a ``calcnode seg-ceiling`` report of the same data is given.

Views without calcification truth (``negatives``, :mod:`training.segmentation.negatives`; real
tissue) are segmented over the whole breast (``segment(..., region=None)``): every object kept
there is false. They are reported as false objects per cm² of breast (the breast mask of
:func:`analysis.segmentation.breast_mask`, minus a marked lesion's region, whose objects are not
counted either), at the operating point and as a curve over the same thresholds, separately for
views the model was trained on (``info["negative_views"]``, matched by the file's SHA-256) and
held-out views. One picture (``froc.png``) shows both: the FROC inside the ROIs and, against the
negatives' false objects per cm² of breast, the in-ROI sensitivity at the same threshold.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from analysis.dicom_input import load_image
from analysis.segmentation import breast_mask
from analysis.segmentation.cnn import SegmentationModel, select_candidates
from analysis.segmentation.pipeline import label_centroids, segment
from common.durable import make_dirs, write_bytes, write_text

from ..datasets import DatasetImage, image_rois, load_truth, roi_region, scan_dataset
from ..synth.config import canonical_type
from .negatives import NegativeView

MATCH_DISTANCE_MM = 0.35
MATCH_IOU = 0.3
_EIGHT = np.ones((3, 3), bool)


STAGES = ("hdog", "hdog_cnn", "hdog_cnn_whole")
STAGE_NAMES = {"hdog": "HDoG candidates", "hdog_cnn": "HDoG + CNN (outlined objects)",
               "hdog_cnn_whole": "HDoG + CNN, HDoGReg's whole candidates"}


@dataclass
class StageMatches:
    """Per predicted object of one stage: its score, the truth objects it matches, its IoUs."""

    score: np.ndarray      # per object
    matched: list[set]     # per object: indices of the truth objects it matches
    best_iou: np.ndarray   # (n_objects, n_truth) IoU


@dataclass
class ImageMatches:
    """Per-stage scores and match flags of one image, ready for any threshold."""

    n_truth: int
    area_cm2: float
    stages: dict[str, StageMatches]
    truth_kinds: list[str | None]   # per truth object its calcification type, where the truth says
    case: str = ""                  # the patient (the unit of :func:`case_bootstrap_interval`)


def particle_kinds(truth_path: Path) -> dict[int, str | None] | None:
    """Label -> calcification type from the ``*_particles.csv`` that ``calcnode synth`` writes beside
    ``*_labels.npz``; None where there is no such table (a site's own truth)."""
    truth_path = Path(truth_path)
    table = truth_path.with_name(truth_path.name.replace("_labels.npz", "_particles.csv"))
    if table == truth_path or not table.is_file():
        return None
    with table.open(newline="") as f:
        return {int(row["label"]): canonical_type(row["kind"]) if row.get("kind") else None
                for row in csv.DictReader(f)}


def truth_kinds(truth_path: Path, raw_labels: np.ndarray, truth_labels: np.ndarray,
                truth_ids: list[int]) -> list[str | None]:
    """The calcification type of each truth object, from the ``*_particles.csv`` that
    ``calcnode synth`` writes beside ``*_labels.npz`` (``kind`` per particle ``label``); None where
    there is no such table (a site's own truth) or the object joins particles of different types."""
    kind_of = particle_kinds(truth_path)
    if kind_of is None:
        return [None] * len(truth_ids)
    kinds = []
    for t in truth_ids:
        particles = np.unique(raw_labels[truth_labels == t])
        found = {kind_of.get(int(k)) for k in particles if k > 0}
        kinds.append(found.pop() if len(found) == 1 else None)
    return kinds


def match_candidates(cand_labels: np.ndarray, truth_labels: np.ndarray, truth_ids: list[int],
                     spacing_mm: tuple[float, float]) -> tuple[list[set], np.ndarray]:
    """Which truth objects each candidate matches, and the IoU matrix."""
    n_cand = int(cand_labels.max(initial=0))
    iou = np.zeros((n_cand, len(truth_ids)))
    matched: list[set] = [set() for _ in range(n_cand)]
    if n_cand == 0 or not truth_ids:
        return matched, iou
    index = np.arange(1, n_cand + 1)
    c_com = np.array(ndimage.center_of_mass(np.ones(cand_labels.shape), cand_labels, index)).reshape(-1, 2)
    c_area = ndimage.sum_labels(np.ones(cand_labels.shape), cand_labels, index)
    t_com = np.array(ndimage.center_of_mass(np.ones(truth_labels.shape), truth_labels, truth_ids)).reshape(-1, 2)
    t_area = ndimage.sum_labels(np.ones(truth_labels.shape), truth_labels, truth_ids)
    scale = np.asarray(spacing_mm, float)
    distance = np.linalg.norm((c_com[:, None, :] - t_com[None, :, :]) * scale, axis=2)
    overlap = (cand_labels > 0) & (truth_labels > 0)
    pairs, counts = np.unique(np.stack([cand_labels[overlap], truth_labels[overlap]]), axis=1,
                              return_counts=True)
    column = {t: k for k, t in enumerate(truth_ids)}
    for (c, t), inter in zip(pairs.T, counts):
        if t in column:
            k = column[t]
            iou[c - 1, k] = inter / (c_area[c - 1] + t_area[k] - inter)
    for c in range(n_cand):
        hits = np.nonzero((distance[c] <= MATCH_DISTANCE_MM) | (iou[c] >= MATCH_IOU))[0]
        matched[c] = set(hits.tolist())
    return matched, iou


def image_matches(item: DatasetImage, model: SegmentationModel) -> ImageMatches | None:
    image = load_image(item.image_path)
    rois, _ = image_rois(item, image.geometry)
    region = roi_region(rois, image.geometry)
    if region is None or item.truth_path is None:
        return None
    raw_labels = load_truth(item.truth_path, image.shape)
    truth_labels, n = ndimage.label(raw_labels > 0, structure=_EIGHT)
    com = ndimage.center_of_mass(np.ones(image.shape), truth_labels, np.arange(1, n + 1)) if n else []
    truth_ids = [k + 1 for k, (r, c) in enumerate(com) if region[int(round(r)), int(round(c))]]
    predictions: dict = {}  # the network runs once; both rules judge its predictions
    result = segment(image.pixels, image.pixel_spacing_mm, region, model, predictions=predictions)
    cands = result.candidates
    whole = select_candidates(image.pixels, float(np.mean(image.pixel_spacing_mm)), cands.labels,
                              SegmentationModel(model.net, replace(model.params, outline_level=None)),
                              predictions)
    stages = {}
    for stage, labels, score in (("hdog", cands.labels, np.asarray(cands.table["dog"], float)),
                                 ("hdog_cnn", result.selection.objects, result.selection.scores),
                                 ("hdog_cnn_whole", whole.objects, whole.scores)):
        matched, iou = match_candidates(labels, truth_labels, truth_ids, image.pixel_spacing_mm)
        stages[stage] = StageMatches(score=np.asarray(score, float), matched=matched, best_iou=iou)
    area_cm2 = float(region.sum() * np.prod(image.pixel_spacing_mm) / 100.0)
    return ImageMatches(n_truth=len(truth_ids), area_cm2=area_cm2, stages=stages,
                        truth_kinds=truth_kinds(Path(item.truth_path), raw_labels, truth_labels, truth_ids),
                        case=case_key(item))


def case_key(item: DatasetImage) -> str:
    """The patient an image belongs to, unique across data folders (two ``calcnode synth`` sets
    both have a SYNTH0001): the folder above the patient's folder, and the patient ID."""
    return f"{Path(item.image_path).parent.parent}/{item.patient_id}"


def found_at(st: StageMatches, threshold: float) -> tuple[set, int]:
    """The truth objects found by the objects with score >= ``threshold``, and how many of those
    objects match no truth (false positives)."""
    found: set = set()
    false_pos = 0
    for c in np.nonzero(st.score >= threshold)[0]:
        if st.matched[c]:
            found |= st.matched[c]
        else:
            false_pos += 1
    return found, false_pos


def froc(images: list[ImageMatches], stage: str, thresholds: np.ndarray) -> list[dict]:
    """Sensitivity and FP/cm² when the objects of ``stage`` with score >= t are kept."""
    total_truth = sum(m.n_truth for m in images)
    area = sum(m.area_cm2 for m in images)
    points = []
    for t in thresholds:
        detected, false_pos = 0, 0
        for m in images:
            found, fp = found_at(m.stages[stage], t)
            detected += len(found)
            false_pos += fp
        points.append({"threshold": float(t), "sensitivity": detected / max(total_truth, 1),
                       "fp_per_cm2": false_pos / max(area, 1e-9)})
    return points


def found_by_type(images: list[ImageMatches], thresholds: dict[str, float]) -> dict:
    """Per calcification type (where the truth names it): how many truth objects, and the fraction
    each stage finds with its objects of score >= ``thresholds[stage]``."""
    counts: dict[str, dict] = {}
    for m in images:
        found = {stage: found_at(m.stages[stage], t)[0] for stage, t in thresholds.items()}
        for k, kind in enumerate(m.truth_kinds):
            row = counts.setdefault(kind or "unknown", {"objects": 0, **{stage: 0 for stage in thresholds}})
            row["objects"] += 1
            for stage in thresholds:
                row[stage] += k in found[stage]
    out = {}
    for kind, row in sorted(counts.items()):
        out[kind] = {"objects": row["objects"],
                     **{f"{stage}_sensitivity": round(row[stage] / row["objects"], 4) for stage in thresholds}}
        if "hdog_cnn" in thresholds:
            out[kind]["hdog_cnn_sensitivity_95ci"] = wilson_interval(row["hdog_cnn"], row["objects"])
    return out


def wilson_interval(found: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval (95 % for z = 1.96) of a proportion ``found / n``.

    Per calcification, as if they were independent: calcifications of one cluster share their
    tissue, so the true uncertainty is somewhat wider. It still shows when a set is too small to
    tell a per-type figure from its target (8 held-out cases were: docs/segmentation.md)."""
    if n == 0:
        return [0.0, 1.0]
    p = found / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(float(max(centre - half, 0.0)), 4), round(float(min(centre + half, 1.0)), 4)]


def case_bootstrap_interval(images: list[ImageMatches], threshold: float, n_boot: int = 2000,
                            seed: int = 0) -> dict[str, list[float]]:
    """Per calcification type, a 95 % interval of the HDoG + CNN sensitivity at ``threshold`` with
    the *patients* as the unit: the percentile bootstrap over patients drawn with replacement.

    Why besides :func:`wilson_interval`: a patient's calcifications are not independent. The
    simulator gives every cluster one type and shows it in two views, so one dense fine linear
    cluster can hold a fifth of a type's particles; on two held-out sets of the same settings the
    shipped model found 0.88 and 0.72 of the fine linear particles (docs/segmentation.md), far
    outside either set's Wilson interval. This interval is the one that says how far a per-type
    figure would move on another set of the same size."""
    rows: dict[str, dict[str, list[int]]] = {}
    for m in images:
        found, _ = found_at(m.stages["hdog_cnn"], threshold)
        for k, kind in enumerate(m.truth_kinds):
            per_case = rows.setdefault(kind or "unknown", {}).setdefault(m.case, [0, 0])
            per_case[0] += k in found
            per_case[1] += 1
    cases = sorted({m.case for m in images})
    index = {c: i for i, c in enumerate(cases)}
    draws = np.random.default_rng(seed).integers(0, len(cases), size=(n_boot, len(cases)))
    weights = np.stack([np.bincount(d, minlength=len(cases)) for d in draws])  # (n_boot, cases)
    out = {}
    for kind, per_case in sorted(rows.items()):
        hits, totals = np.zeros(len(cases)), np.zeros(len(cases))
        for case, (h, t) in per_case.items():
            hits[index[case]], totals[index[case]] = h, t
        n = weights @ totals
        ok = n > 0
        ratio = (weights @ hits)[ok] / n[ok]
        lo, hi = np.percentile(ratio, [2.5, 97.5]) if ratio.size else (0.0, 1.0)
        out[kind] = [round(float(lo), 4), round(float(hi), 4)]
    return out


MISS_CAUSES = ("no_candidate", "not_outlined", "below_threshold", "kept_unmatched")


def miss_causes(m: ImageMatches, threshold: float) -> list[str | None]:
    """Per truth object of ``m``, why the outlined objects with score >= ``threshold`` miss it
    (None: it is found, as :func:`found_at` says). The first stage that loses it:

    * ``no_candidate``: no HDoG candidate pixel on it;
    * ``not_outlined``: a candidate lies on it, but no outlined object (the network's prediction
      >= ``outline_level``) overlaps or matches it;
    * ``below_threshold``: outlined objects overlap or match it, none of them is kept;
    * ``kept_unmatched``: a kept object overlaps it, but none passes the match rule (a fragment
      of a long particle, or an object much larger than it).
    """
    st = m.stages["hdog_cnn"]
    found, _ = found_at(st, threshold)
    candidates = m.stages["hdog"].best_iou
    on_candidate = (candidates > 0).any(axis=0) if candidates.size else np.zeros(m.n_truth, bool)
    # (objects, truth): the outlined object overlaps or matches the truth object
    touching = st.best_iou > 0 if st.best_iou.size else np.zeros((len(st.score), m.n_truth), bool)
    for c, matched in enumerate(st.matched):
        touching[c, list(matched)] = True
    kept_touching = touching[st.score >= threshold].any(axis=0)
    causes: list[str | None] = []
    for k in range(m.n_truth):
        if k in found:
            causes.append(None)
        elif not on_candidate[k]:
            causes.append("no_candidate")
        elif not touching[:, k].any():
            causes.append("not_outlined")
        else:
            causes.append("kept_unmatched" if kept_touching[k] else "below_threshold")
    return causes


def miss_cause(m: ImageMatches, k: int, threshold: float) -> str | None:
    """:func:`miss_causes` of truth object ``k`` alone."""
    return miss_causes(m, threshold)[k]


def misses_by_type(images: list[ImageMatches], threshold: float) -> dict:
    """Per calcification type, how many truth objects the outlined objects with score >=
    ``threshold`` miss, by :func:`miss_causes`."""
    counts: dict[str, dict] = {}
    for m in images:
        for kind, cause in zip(m.truth_kinds, miss_causes(m, threshold)):
            if cause is not None:
                row = counts.setdefault(kind or "unknown", dict.fromkeys(MISS_CAUSES, 0))
                row[cause] += 1
    return counts


def sensitivity_at(points: list[dict], max_fp_per_cm2: float) -> dict:
    """The most sensitive point of a FROC sweep with at most ``max_fp_per_cm2``."""
    allowed = [p for p in points if p["fp_per_cm2"] <= max_fp_per_cm2]
    if not allowed:
        return {"threshold": None, "sensitivity": 0.0, "fp_per_cm2": None}
    return max(allowed, key=lambda p: (p["sensitivity"], -p["fp_per_cm2"]))


def collect_matches(items: list[DatasetImage], model: SegmentationModel, label: str) -> list[ImageMatches]:
    images = []
    for k, item in enumerate(items, 1):
        m = image_matches(item, model)
        if m is not None:
            images.append(m)
        print(f"\r{label}: {k}/{len(items)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return images


# Dense at both ends: HDoGReg's 10^-3.5 lives at the low end, and a well-trained net puts most true
# calcifications within 10^-2 of 1. Near 1 the step is ~5 % of (1 - t) (~0.0014 at 0.97): with tight
# outlines the operating point sits there, and a coarser step (40 instead of 150) cost the
# calibration ~0.15 FP/cm². The grid is part of every calibrated threshold (calibrate-seg picks a
# grid point), so changing it moves the threshold `make demo-seg-model` gives.
SUPPORT_THRESHOLDS = np.unique(np.concatenate([[0.0], np.logspace(-4, np.log10(0.99), 80),
                                               1.0 - np.logspace(-4, -1, 150)]))


def iou_summary(images: list[ImageMatches], stage: str, threshold: float) -> dict:
    """Per truth object the IoU of its best-overlapping kept object (0 when missed)."""
    per_object = []
    for m in images:
        st = m.stages[stage]
        keep = st.score >= threshold
        for k in range(m.n_truth):
            column = st.best_iou[keep, k] if keep.any() else np.zeros(0)
            per_object.append(float(column.max()) if column.size else 0.0)
    detected = [v for v in per_object if v > 0]
    return {"objects": len(per_object), "miou_all": float(np.mean(per_object)) if per_object else None,
            "miou_detected": float(np.mean(detected)) if detected else None}


@dataclass
class NegativeObjects:
    """The objects the segmentation makes on one view without calcifications (all false)."""

    name: str
    sha256: str
    spacing_mm: tuple[float, float]
    spacing_source: str
    scores: np.ndarray     # per counted object (centroid outside the excluded region)
    breast_cm2: float      # breast mask minus the excluded region
    excluded_cm2: float    # of the breast, left out (a marked lesion, grown)
    excluded_objects: int  # objects with their centroid there, not counted


def negative_objects(view: NegativeView, model: SegmentationModel) -> NegativeObjects:
    """Segment ``view``'s whole breast and score every object (kept or not: the threshold is the
    caller's), leaving out those whose centroid lies in ``view.excluded``."""
    breast = breast_mask(view.pixels, view.spacing_mm)
    result = segment(view.pixels, view.spacing_mm, None, model)
    objects, scores = result.selection.objects, np.asarray(result.selection.scores, float)
    n = len(scores)
    area, centre_r, centre_c = label_centroids(objects, n)
    centre_r, centre_c = np.round(centre_r), np.round(centre_c)
    present = area > 0
    inside_lesion = np.zeros(n, bool)
    excluded_px = 0
    if view.excluded is not None:
        inside_lesion[present] = view.excluded[centre_r[present].astype(int), centre_c[present].astype(int)]
        excluded_px = int((breast & view.excluded).sum())
    counted = present & ~inside_lesion
    px_cm2 = float(np.prod(view.spacing_mm)) / 100.0
    return NegativeObjects(name=view.name, sha256=view.sha256, spacing_mm=view.spacing_mm,
                           spacing_source=view.spacing_source, scores=scores[counted],
                           breast_cm2=(int(breast.sum()) - excluded_px) * px_cm2,
                           excluded_cm2=excluded_px * px_cm2,
                           excluded_objects=int((present & inside_lesion).sum()))


def negatives_curve(views: list[NegativeObjects], thresholds: np.ndarray) -> list[dict]:
    """False objects per cm² of breast when the objects with score >= t are kept."""
    area = sum(v.breast_cm2 for v in views)
    return [{"threshold": float(t),
             "fp_per_cm2_breast": sum(int((v.scores >= t).sum()) for v in views) / max(area, 1e-9)}
            for t in thresholds]


def negatives_report(views: list[NegativeObjects], model: SegmentationModel) -> dict:
    """Per view and per group (held-out, training) the false objects per cm² of breast at the
    model's operating point, and the group's curve over ``SUPPORT_THRESHOLDS``."""
    op = model.params.prediction_threshold
    trained_on = {v.get("sha256") for v in (model.info.get("negative_views") or [])}
    per_view = []
    for v in views:
        kept = int((v.scores >= op).sum())
        per_view.append({
            "view": v.name, "in_training": v.sha256 in trained_on,
            "spacing_mm": [round(x, 4) for x in v.spacing_mm], "spacing_source": v.spacing_source,
            "breast_cm2": round(v.breast_cm2, 2), "excluded_lesion_cm2": round(v.excluded_cm2, 2),
            "excluded_lesion_objects": v.excluded_objects,
            "objects_at_operating_point": kept,
            "fp_per_cm2_breast": round(kept / max(v.breast_cm2, 1e-9), 3)})
    groups = {}
    for group, wanted in (("held_out", False), ("training", True)):
        members = [v for v, row in zip(views, per_view) if row["in_training"] is wanted]
        if not members:
            continue
        at_op = negatives_curve(members, np.array([op]))[0]["fp_per_cm2_breast"]
        groups[group] = {"views": [m.name for m in members],
                         "breast_cm2": round(sum(m.breast_cm2 for m in members), 2),
                         "objects_at_operating_point": sum(int((m.scores >= op).sum()) for m in members),
                         "fp_per_cm2_breast": round(at_op, 3),
                         "curve": negatives_curve(members, SUPPORT_THRESHOLDS)}
    assumed = sorted({v.spacing_mm[0] for v in views if v.spacing_source == "assumed"})
    return {"operating_point": op, "views": per_view, "groups": groups,
            "spacing_assumed_mm": assumed,
            "note": ("false objects per cm² of breast: every object kept on a view without calcifications, "
                     "whole breast; " + (f"pixel spacing ASSUMED {', '.join(map(str, assumed))} mm where the "
                                         "file states none (PNG views)" if assumed else "spacing from the headers"))}


def _with_ceiling(by_type: dict, ceiling: dict | None) -> dict:
    """``by_type`` with the ideal observer's bound at 1 FP/cm² of ROI (and the ratio to it) beside
    each type's sensitivity, where the ``seg-ceiling`` report has that type."""
    if not ceiling:
        return by_type
    bounds = ceiling.get("by_type", {})
    for kind, row in by_type.items():
        bound = bounds.get(kind, {}).get("sensitivity_at_1_fp_per_cm2")
        if bound is None:
            continue
        row["ideal_observer_at_1_fp_per_cm2"] = bound
        for key in ("hdog_cnn_sensitivity", "hdog_cnn_best_at_1_fp_per_cm2_sensitivity"):
            if key in row and bound > 0:
                row[key.replace("sensitivity", "over_bound")] = round(row[key] / bound, 3)
    return by_type


def evaluate_segmentation(model_path: str | Path, data_dirs: list[str | Path], out_dir: str | Path, *,
                          negatives: list[NegativeView] = (), ceiling: dict | None = None) -> dict:
    """Evaluate the model file ``model_path`` inside the ROIs of ``data_dirs`` (images with truth)
    and on the views without calcifications ``negatives``; write ``segmentation_metrics.json``
    and ``froc.png`` to ``out_dir`` and return the report. ``ceiling``: a ``calcnode seg-ceiling``
    report of the same data, shown beside the per-type sensitivity."""
    model = SegmentationModel.load(model_path)
    items = [i for d in data_dirs for i in scan_dataset(d, require_truth=True) if i.roi_paths]
    images = collect_matches(items, model, "evaluate-seg")
    if not images and not negatives:
        raise ValueError("no image with both truth and ROIs found, and no --negatives")
    op = model.params.prediction_threshold
    report = {
        "model": str(model_path),
        "model_sha256": model.sha256,
        "outline_level": model.params.outline_level,
        "images": len(images),
        "truth_objects": sum(m.n_truth for m in images),
        "region_cm2": round(sum(m.area_cm2 for m in images), 3),
        "matching": {"centroid_distance_mm": MATCH_DISTANCE_MM, "iou": MATCH_IOU},
    }
    if images:
        dog_t = np.unique(np.quantile(np.concatenate([m.stages["hdog"].score for m in images]),
                                      np.linspace(0, 0.995, 60)))
        for stage in STAGES:
            thresholds, point = (dog_t, -np.inf) if stage == "hdog" else (SUPPORT_THRESHOLDS, op)
            curve = froc(images, stage, thresholds)
            report[stage] = {
                "name": STAGE_NAMES[stage],
                "operating_point": froc(images, stage, np.array([point]))[0],
                "best_at_1_fp_per_cm2": sensitivity_at(curve, 1.0),
                "froc": curve,
                "iou": iou_summary(images, stage, point),
            }
        # HDoG: every candidate; the CNN stages at the model's operating point, and the outlined
        # objects also at their most sensitive threshold with <= 1 FP/cm² of ROI
        thresholds = {"hdog": -np.inf, "hdog_cnn": op, "hdog_cnn_whole": op}
        best = report["hdog_cnn"]["best_at_1_fp_per_cm2"]["threshold"]
        by_type = found_by_type(images, thresholds)
        if best is not None:
            at_best = found_by_type(images, {"hdog_cnn": best})
            for kind, row in at_best.items():
                by_type[kind]["hdog_cnn_best_at_1_fp_per_cm2_sensitivity"] = row["hdog_cnn_sensitivity"]
        misses = misses_by_type(images, op)
        by_case = case_bootstrap_interval(images, op)
        for kind, row in by_type.items():
            row["hdog_cnn_sensitivity_95ci_by_patient"] = by_case[kind]
            row["hdog_cnn_missed_by_cause"] = misses.get(kind, dict.fromkeys(MISS_CAUSES, 0))
        report["patients"] = len({m.case for m in images})
        report["by_type"] = _with_ceiling(by_type, ceiling)
        if ceiling:
            report["ideal_observer"] = {"overall": ceiling.get("overall"), "rois": ceiling.get("rois"),
                                        "skipped": ceiling.get("skipped")}
    if negatives:
        report["negatives"] = negatives_report([negative_objects(v, model) for v in negatives], model)
    out_dir = make_dirs(out_dir)
    write_text(out_dir / "segmentation_metrics.json", json.dumps(report, indent=2))
    _plot(report, out_dir / "froc.png")
    return report


def _plot(report: dict, path: Path) -> None:
    """One picture: the FROC inside the ROIs (left) and, where there are negative views, the
    in-ROI sensitivity against the negatives' false objects per cm² of breast (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_rois = "hdog_cnn" in report
    groups = report.get("negatives", {}).get("groups", {})
    panels = int(has_rois) + int(bool(groups))
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), dpi=100, squeeze=False)
    axes = list(axes[0])
    if has_rois:
        ax = axes.pop(0)
        for key, name in STAGE_NAMES.items():
            pts = sorted(report[key]["froc"], key=lambda p: p["fp_per_cm2"])
            ax.plot([p["fp_per_cm2"] for p in pts], [p["sensitivity"] for p in pts], label=name)
            op = report[key]["operating_point"]
            ax.plot(op["fp_per_cm2"], op["sensitivity"], "o")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("false positives per cm² of ROI")
        ax.set_ylabel("sensitivity (calcifications in ROIs)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"FROC, {report['truth_objects']} calcifications in {report['images']} images\n"
                     "simulated data - not for clinical use", fontsize=9)
    if groups:
        ax = axes.pop(0)
        negatives = report["negatives"]
        froc_by_t = {round(p["threshold"], 12): p["sensitivity"] for p in report["hdog_cnn"]["froc"]} \
            if has_rois else {}
        for group, style in (("held_out", "-"), ("training", "--")):
            if group not in groups:
                continue
            curve = groups[group]["curve"]
            label = f"{group.replace('_', '-')} views ({', '.join(groups[group]['views'])})"
            if has_rois:
                ax.plot([p["fp_per_cm2_breast"] for p in curve],
                        [froc_by_t.get(round(p["threshold"], 12), np.nan) for p in curve], style,
                        label=label)
                op_sens = report["hdog_cnn"]["operating_point"]["sensitivity"]
                ax.plot(groups[group]["fp_per_cm2_breast"], op_sens, "o", color=ax.lines[-1].get_color())
            else:
                ax.plot([p["threshold"] for p in curve], [p["fp_per_cm2_breast"] for p in curve], style,
                        label=label)
                ax.plot(negatives["operating_point"], groups[group]["fp_per_cm2_breast"], "o",
                        color=ax.lines[-1].get_color())
        if has_rois:
            ax.set_xscale("symlog", linthresh=0.1)
            ax.set_xlabel("false objects per cm² of breast, views without calcifications")
            ax.set_ylabel("sensitivity (calcifications in ROIs), same threshold")
            ax.set_ylim(0, 1.02)
        else:
            ax.set_xlabel("threshold (support score)")
            ax.set_ylabel("false objects per cm² of breast")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
        spacing = negatives.get("spacing_assumed_mm")
        ax.set_title("HDoG + CNN on views without calcifications (whole breast), dot = operating point"
                     + (f"\npixel spacing assumed {', '.join(map(str, spacing))} mm (PNG)" if spacing else ""),
                     fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
