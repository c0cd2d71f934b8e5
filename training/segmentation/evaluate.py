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
particle's type (the simulator's ``*_particles.csv``), sensitivity is also given per type.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from analysis.dicom_input import load_image
from analysis.segmentation.cnn import SegmentationModel, select_candidates
from analysis.segmentation.pipeline import segment

from ..datasets import DatasetImage, image_rois, load_truth, roi_region, scan_dataset
from ..synth.config import canonical_type

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
                        truth_kinds=truth_kinds(Path(item.truth_path), raw_labels, truth_labels, truth_ids))


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
    return {kind: {"objects": row["objects"],
                   **{f"{stage}_sensitivity": round(row[stage] / row["objects"], 4) for stage in thresholds}}
            for kind, row in sorted(counts.items())}


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
# calcifications within 10^-2 of 1.
SUPPORT_THRESHOLDS = np.unique(np.concatenate([[0.0], np.logspace(-4, np.log10(0.99), 80),
                                               1.0 - np.logspace(-4, -1, 40)]))


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


def evaluate_segmentation(model_path: str | Path, data_dirs: list[str | Path], out_dir: str | Path) -> dict:
    model = SegmentationModel.load(model_path)
    items = [i for d in data_dirs for i in scan_dataset(d, require_truth=True) if i.roi_paths]
    images = collect_matches(items, model, "evaluate-seg")
    if not images:
        raise ValueError("no image with both truth and ROIs found")
    op = model.params.prediction_threshold
    dog_t = np.unique(np.quantile(np.concatenate([m.stages["hdog"].score for m in images] or [np.zeros(1)]),
                                  np.linspace(0, 0.995, 60)))
    report = {
        "model": str(model_path),
        "model_sha256": model.sha256,
        "outline_level": model.params.outline_level,
        "images": len(images),
        "truth_objects": sum(m.n_truth for m in images),
        "region_cm2": round(sum(m.area_cm2 for m in images), 3),
        "matching": {"centroid_distance_mm": MATCH_DISTANCE_MM, "iou": MATCH_IOU},
    }
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
    # HDoG: every candidate; the CNN stages at the model's operating point
    report["by_type"] = found_by_type(images, {"hdog": -np.inf, "hdog_cnn": op, "hdog_cnn_whole": op})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "segmentation_metrics.json").write_text(json.dumps(report, indent=2))
    _plot(report, out_dir / "froc.png")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for key, name in STAGE_NAMES.items():
        pts = sorted(report[key]["froc"], key=lambda p: p["fp_per_cm2"])
        ax.plot([p["fp_per_cm2"] for p in pts], [p["sensitivity"] for p in pts], label=name)
        op = report[key]["operating_point"]
        ax.plot(op["fp_per_cm2"], op["sensitivity"], "o")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false positives per cm² of ROI")
    ax.set_ylabel("sensitivity (calcifications)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"FROC, {report['truth_objects']} calcifications in {report['images']} images\n"
                 "simulated data - not for clinical use", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
