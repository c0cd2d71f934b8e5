"""Cluster model training and evaluation end to end: folders in, model file or report out.

``calcnode train-clusters`` and ``calcnode evaluate-clusters`` call :func:`train` and
:func:`evaluate_folders`. Files are written durably (:mod:`common.durable`); the model's bytes come
from :meth:`analysis.clusters.ClusterModel.to_bytes`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from analysis.clusters import ClusterModel, ClusterParams
from common.durable import atomic_path, write_bytes, write_text

from .collect import ViewCandidates, add_observer_truth, collect, load_segmentation_model
from .evaluate import evaluate, plot, report_json
from .train import MAX_POSITIVE_AREA_MM2, describe, importance, train_cluster_model
from .views import REAL_SPACING_MM, real_png_paths, real_view, synthetic_views


def gather(data_dirs: Sequence[str | Path], negatives: Sequence[str | Path], seg_model_path=None,
           real_spacing_mm: float = REAL_SPACING_MM, progress: bool = True,
           params: ClusterParams = ClusterParams(), member_threshold: float | None = None,
           member_density_per_cm2: float | None = None) -> tuple[list[ViewCandidates], list[ViewCandidates]]:
    """Segment and label every simulated view of ``data_dirs`` and every real PNG of ``negatives``;
    the cluster members at ``member_threshold`` raised per view to ``member_density_per_cm2``
    (:func:`analysis.clusters.cluster_members`; None: the segmentation model's own threshold)."""
    seg_model = load_segmentation_model(seg_model_path)
    sim: list[ViewCandidates] = []
    for d in data_dirs:
        views = collect(synthetic_views(d), seg_model, params, progress, member_threshold, member_density_per_cm2)
        add_observer_truth(views, d, progress)
        sim += views
    real = collect((real_view(p, real_spacing_mm) for p in real_png_paths(negatives)), seg_model, params,
                   progress, member_threshold, member_density_per_cm2) if negatives else []
    return sim, real


def save_candidates(path: str | Path, sim: list[ViewCandidates], real: list[ViewCandidates],
                    member_threshold: float | None = None, member_density_per_cm2: float | None = None) -> None:
    write_text(path, json.dumps({"simulated": [v.to_dict() for v in sim], "real": [v.to_dict() for v in real],
                                 "member_threshold": member_threshold,
                                 "member_density_per_cm2": member_density_per_cm2}))


def load_candidates(path: str | Path) -> tuple[list[ViewCandidates], list[ViewCandidates], tuple]:
    """The candidates :func:`save_candidates` wrote, and how their members were chosen:
    ``(member_threshold, member_density_per_cm2)`` (a file before the tenth session has no density:
    None, members at one support on every view)."""
    blob = json.loads(Path(path).read_text())
    return ([ViewCandidates.from_dict(d) for d in blob["simulated"]],
            [ViewCandidates.from_dict(d) for d in blob["real"]],
            (blob.get("member_threshold"), blob.get("member_density_per_cm2")))


def train(sim: list[ViewCandidates], real: list[ViewCandidates], out: str | Path, *, seed: int = 0,
          name: str = "calcnode-clusters-demo", version: str = "1", training_data: str = "",
          target_fp_per_image: float = 0.1, seg_model_path=None,
          member_threshold: float | None = None, learner: str = "lightgbm",
          member_density_per_cm2: float | None = None,
          max_positive_area_mm2: float | None = MAX_POSITIVE_AREA_MM2) -> ClusterModel:
    """Train on ``sim`` + ``real`` candidates and write the model file ``out``. The model records
    the selection CNN (weights and operating point) its candidates were segmented with, and the
    members' threshold they were collected at (``member_threshold``, None: the operating point,
    raised per view to ``member_density_per_cm2``, :func:`analysis.clusters.cluster_members`):
    cluster features depend on both, so the node detects with them (docs/method.md §3.7)."""
    seg = load_segmentation_model(seg_model_path)
    model = train_cluster_model([*sim, *real], seed=seed, target_fp_per_image=target_fp_per_image, learner=learner,
                                max_positive_area_mm2=max_positive_area_mm2,
                                info={"training_data": training_data or
                                      f"{len(sim)} simulated views, {len(real)} real normal views",
                                      "real_views_used": sorted(v.name for v in real),
                                      "segmentation_model": {
                                          "weights_sha256": seg.sha256,
                                          "prediction_threshold": float(seg.params.prediction_threshold)}})
    model = replace(model, name=name, version=version, member_threshold=member_threshold,
                    member_density_per_cm2=member_density_per_cm2,
                    info={**model.info, ("coefficients" if model.learner == "logistic" else "feature_gain"):
                          importance(model)})
    write_bytes(out, model.to_bytes())
    return model


def evaluate_folders(sim: list[ViewCandidates], real: list[ViewCandidates], model_path: str | Path | None,
                     out_dir: str | Path) -> dict:
    """Evaluate the model at ``model_path`` (None: the rule) and write ``cluster_metrics.json`` and
    ``cluster_froc.png`` into ``out_dir``."""
    model = ClusterModel.load(model_path) if model_path else None
    name = "rule-based confidence (no model)" if model is None else \
        f"{model.name} {model.version} (sha256 {model.sha256[:12]})"
    report = evaluate(sim, real, model, name)
    if model is not None:
        report["model_file_sha256"] = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
        report["model_coefficients"] = describe(model)
    out_dir = Path(out_dir)
    write_text(out_dir / "cluster_metrics.json", report_json(report))
    with atomic_path(out_dir / "cluster_froc.png") as tmp:
        plot(report, tmp)
    return report
