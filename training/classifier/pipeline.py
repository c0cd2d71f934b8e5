"""``calcnode train`` and ``calcnode evaluate`` end to end (see :mod:`training.classifier`)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.classify import SEGMENTATION_FILE, ClassifierBundle, segmentation_identity
from analysis.features import DEFAULT_PARAMS
from analysis.segmentation.hdog import HDoGParams
from analysis.study import MIN_CALCIFICATIONS

from ..model_files import save_bundle, save_segmentation_model
from . import report as rep
from .features import ExtractedRoi, FeatureCache, extract_features
from .labels import LabelsError, file_sha256, label_tables, match_outcomes
from .model import Settings, TrainingError, TrainingSet, auc, fit_model, grid_search, nested_cv

CACHE_DIRNAME = ".calcnode-cache"


def _stderr(prefix: str, quiet: bool = False) -> Callable[[str], None]:
    def log(text: str) -> None:
        if not quiet:
            print(f"{prefix}: {text}", file=sys.stderr, flush=True)
    return log


def default_cache_dir(data_dirs, out: Path) -> Path:
    """``DATA/.calcnode-cache/features`` when the data folder is writable, else beside ``out``."""
    first = Path(data_dirs[0])
    if os.access(first, os.W_OK):
        return first / CACHE_DIRNAME / "features"
    return Path(out).resolve().parent / CACHE_DIRNAME / "features"


@dataclass
class DataOutcome:
    """The labelled ROIs after feature extraction, split by what can be used."""

    extracted: list[ExtractedRoi]
    problems: list[str]  # rows that matched no ROI, ROI objects that could not be read
    usable: list[ExtractedRoi] = field(default_factory=list)
    failed: list[ExtractedRoi] = field(default_factory=list)
    not_assessable: list[ExtractedRoi] = field(default_factory=list)

    def __post_init__(self):
        for e in self.extracted:
            if e.features is None:
                self.failed.append(e)
            elif e.n_calcifications < MIN_CALCIFICATIONS:
                self.not_assessable.append(e)
            else:
                self.usable.append(e)

    def training_set(self) -> TrainingSet:
        u = self.usable
        return TrainingSet(rois=[e.features for e in u], y=[e.labelled.row.outcome for e in u],
                           groups=[e.labelled.row.patient_key for e in u], ids=[e.labelled.key for e in u],
                           bayes=[np.nan if e.labelled.row.bayes_score is None else e.labelled.row.bayes_score
                                  for e in u])

    def summary(self, labels) -> dict:
        """Counts; ``labels``: the outcome table(s) (one path or a list, as :func:`load_data`)."""
        ys = [e.labelled.row.outcome for e in self.usable]
        tables = label_tables(labels)
        if len(tables) == 1:
            files = {"labels_file": tables[0][0].name, "labels_sha256": file_sha256(tables[0][0])}
        else:
            each = [{"file": f"{tag}/{path.name}", "sha256": file_sha256(path)} for path, tag in tables]
            files = {"labels_file": ", ".join(t["file"] for t in each),
                     "labels_sha256": hashlib.sha256("".join(t["sha256"] for t in each).encode()).hexdigest(),
                     "labels_files": each}
        return files | {
            "rows_matched": len(self.extracted),
            "rows_unmatched_or_unreadable": len(self.problems),
            "rois_failed": len(self.failed),
            "rois_not_assessable": len(self.not_assessable),
            "rois_used": len(self.usable),
            "actionable": int(sum(ys)),
            "benign": int(len(ys) - sum(ys)),
            "patients": len({e.labelled.row.patient_key for e in self.usable}),
        }


def load_data(data_dirs, labels, seg_model_path: Path, seg_sha256: str, *, params=DEFAULT_PARAMS,
              cache_dir: Path | None, workers: int, progress: bool, log, default_pixel_spacing_mm=None,
              point_radius_mm: float = 2.5, hdog_params: HDoGParams = HDoGParams()) -> DataOutcome:
    """The labelled ROIs' features, segmented with the CNN at ``seg_model_path`` and
    ``hdog_params``; ``seg_sha256`` is ``segmentation_identity`` of the two. ``labels``: one
    outcome table or a list (patients then grouped per table, :mod:`.labels`)."""
    matched, problems = match_outcomes(data_dirs, labels, point_radius_mm=point_radius_mm,
                                       default_pixel_spacing_mm=default_pixel_spacing_mm)
    log(f"{len(matched)} labelled ROIs matched on {len({m.image.sop_instance_uid for m in matched})} images"
        + (f"; {len(problems)} problems (see the report)" if problems else ""))
    for p in problems[:5]:
        log(f"  {p}")
    if not matched:
        raise LabelsError("no row of the outcome table matches an ROI of the data folder", reason="no_match",
                          source=", ".join(str(p) for p, _ in label_tables(labels)))
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    extracted = extract_features(matched, seg_model_path, seg_sha256=seg_sha256, params=params, cache=cache,
                                 workers=workers, progress=progress,
                                 default_pixel_spacing_mm=default_pixel_spacing_mm, hdog_params=hdog_params)
    outcome = DataOutcome(extracted, problems)
    log(f"{len(outcome.usable)} ROIs usable, {len(outcome.not_assessable)} not assessable "
        f"(< {MIN_CALCIFICATIONS} calcifications), {len(outcome.failed)} failed")
    return outcome


def describe_training_data(data_dirs, outcome: DataOutcome) -> str:
    n, p = len(outcome.usable), len({e.labelled.row.patient_key for e in outcome.usable})
    meta = Path(data_dirs[0]) / "dataset.json"
    if meta.is_file():
        try:
            info = json.loads(meta.read_text())
        except ValueError:
            info = {}
        if info.get("generator") == "calcnode synth":
            cfg = info.get("config", {})
            types = ",".join(sorted(cfg.get("type_weights", {}))) or "amorphous"
            return (f"calcnode synth (simulated, not patients): seed {cfg.get('seed')}, {cfg.get('cases')} cases, "
                    f"difficulty {cfg.get('difficulty')}, types {types}; {n} ROIs of {p} simulated patients")
    return f"{n} labelled ROIs of {p} patients"


def _importance(booster, names) -> list[dict]:
    gain = booster.feature_importance("gain")
    split = booster.feature_importance("split")
    order = np.argsort(-gain, kind="stable")
    return [{"feature": names[i], "gain": round(float(gain[i]), 6), "splits": int(split[i])}
            for i in order if gain[i] > 0]


def _lib_versions() -> dict:
    import imblearn
    import lightgbm
    import sklearn

    return {"lightgbm": lightgbm.__version__, "scikit-learn": sklearn.__version__,
            "imbalanced-learn": imblearn.__version__}


def _seg_model(path, log, threshold: float | None = None, workdir: Path | None = None,
               hdog_params: HDoGParams = HDoGParams()):
    """(path of the CNN file to segment with, its segmentation identity with ``hdog_params``). With
    ``threshold``, a copy of the CNN with that prediction threshold is written to ``workdir`` and
    used (and bundled) instead."""
    from analysis.segmentation.cnn import SegmentationModel
    from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL

    path = Path(path) if path else DEFAULT_SEGMENTATION_MODEL
    if not path.is_file():
        raise TrainingError(f"no segmentation CNN at {path}: train one with `calcnode train-seg` or pass --seg-model",
                            reason="not_found")
    try:
        model = SegmentationModel.load(path)
    except ValueError as exc:
        raise TrainingError(str(exc), reason="malformed") from None
    if threshold is not None:
        model.params = replace(model.params, prediction_threshold=float(threshold))
        path = Path(workdir) / path.name
        save_segmentation_model(model, path)
    identity = segmentation_identity(model, hdog_params)
    log(f"segmentation CNN {path.name} (weights {model.sha256[:12]}, prediction threshold "
        f"{model.params.prediction_threshold:.4g}; identity {identity[:12]})")
    return path, identity


def _predictions_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None or (isinstance(v, float) and not np.isfinite(v)) else
                         (round(v, 6) if isinstance(v, float) else v) for v in row])
    rep.write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- train

@dataclass
class TrainOptions:
    data_dirs: list
    labels: Path | list  # one outcome table, or one per data folder
    out: Path
    seg_model: Path | None = None
    seg_threshold: float | None = None
    report_dir: Path | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    workers: int = 2
    settings: Settings = field(default_factory=Settings)
    name: str = "calcnode-classifier"
    version: str = "1.0.0"
    training_data: str | None = None
    n_boot: int = 2000
    quiet: bool = False
    default_pixel_spacing_mm: float | None = None
    hdog_params: HDoGParams = field(default_factory=HDoGParams)  # recorded in the bundle, used by analysis


def train(opt: TrainOptions) -> dict:
    with tempfile.TemporaryDirectory(prefix="calcnode-train-") as workdir:
        return _train(opt, Path(workdir))


def _train(opt: TrainOptions, workdir: Path) -> dict:
    log = _stderr("calcnode train", opt.quiet)
    t0 = time.perf_counter()
    out = Path(opt.out)
    report_dir = Path(opt.report_dir) if opt.report_dir else out.with_name(out.name + "-report")
    seg_path, seg_sha = _seg_model(opt.seg_model, log, opt.seg_threshold, workdir, opt.hdog_params)
    cache_dir = (Path(opt.cache_dir) if opt.cache_dir else default_cache_dir(opt.data_dirs, out)) \
        if opt.use_cache else None
    data = load_data(opt.data_dirs, opt.labels, seg_path, seg_sha, cache_dir=cache_dir, workers=opt.workers,
                     progress=not opt.quiet, log=log, default_pixel_spacing_mm=opt.default_pixel_spacing_mm,
                     hdog_params=opt.hdog_params)
    t_features = time.perf_counter() - t0
    ts = data.training_set()
    if len(ts) == 0:
        raise TrainingError("no labelled ROI has 2 or more calcifications: nothing to train on", reason="no_data")
    s = opt.settings
    log(f"training on {len(ts)} ROIs ({int(ts.y.sum())} actionable) of {len(set(ts.groups))} patients; "
        f"grid of {s.grid.size} settings, {s.folds}-fold CV" + (f", nested {s.outer_folds} x {s.folds}"
                                                                  if s.outer_folds else ""))
    # One BLAS/OpenMP thread: k-means on small tables is ~10x slower with threads competing for
    # 2 busy cores, and the result does not depend on it.
    with threadpool_limits(1):
        t1 = time.perf_counter()
        nested = nested_cv(ts, s, log=log) if s.outer_folds else None
        t_nested = time.perf_counter() - t1
        t2 = time.perf_counter()
        best, rows = grid_search(ts, s, s.seed)
        fitted = fit_model(ts, best, s, s.seed)
        t_final = time.perf_counter() - t2
    log(f"selected K={best['k']} num_leaves={best['num_leaves']} max_depth={best['max_depth']} "
        f"learning_rate={best['learning_rate']} n_estimators={best['n_estimators']} lambda_l2={best['reg_lambda']} "
        f"threshold={best['threshold']}: CV sensitivity {best['sensitivity']:.3f}, specificity "
        f"{best['specificity']:.3f}, AUC {best['auc']:.3f}")

    has_bayes = bool(np.isfinite(ts.bayes).all())
    nested_report = None
    if nested is not None:
        nested_report = _nested_report(ts, nested, has_bayes, opt.n_boot, s.seed)
    importance = _importance(fitted.booster, list(fitted.aggregator.feature_names))
    bayes_all = [e.labelled.row.bayes_score for e in data.extracted]
    summary = {
        "data": data.summary(opt.labels),
        "seed": s.seed,
        "settings": s.to_json(),
        "selected": {k: best[k] for k in ("k", "num_leaves", "max_depth", "learning_rate", "n_estimators",
                                          "reg_lambda", "threshold")},
        "grid_search_cv": {k: _r(best[k]) for k in ("sensitivity", "specificity", "auc")}
        | {"specificity_floor_met": best["specificity_floor_met"]},
        "resampling_final": fitted.resampling,
        "libraries": _lib_versions(),
    }
    if nested_report is not None:
        k = nested_report["kmeans"]
        summary["nested_cv"] = {"auc": k["metrics"]["auc"], "auc_fold_mean": k["auc_fold_mean"],
                                "auc_fold_sd": k["auc_fold_sd"], "sensitivity": k["metrics"]["sensitivity"],
                                "specificity": k["metrics"]["specificity"]}
        if "mean_std" in nested_report:
            summary["nested_cv"]["mean_std_auc"] = nested_report["mean_std"]["metrics"]["auc"]
        if "bayes" in nested_report:
            summary["nested_cv"]["bayes_auc"] = nested_report["bayes"]["auc"]
    training_data = opt.training_data or describe_training_data(opt.data_dirs, data)
    bundle = ClassifierBundle.create(
        name=opt.name, version=opt.version, threshold=best["threshold"], aggregator=fitted.aggregator,
        booster=fitted.booster, impute=fitted.impute, feature_params=DEFAULT_PARAMS,
        parameters={"lightgbm": {k: best[k] for k in ("num_leaves", "max_depth", "learning_rate", "n_estimators",
                                                      "reg_lambda")} | {"min_data_in_leaf": s.grid.min_child_samples,
                                                                        "feature_fraction": s.feature_fraction},
                    "kmeans_k": best["k"], "threshold": best["threshold"], "resampling": s.resampling,
                    "seed": s.seed},
        training_summary=summary, training_data=training_data, segmentation_model_path=seg_path,
        hdog_params=opt.hdog_params)
    save_bundle(bundle, out)
    log(f"wrote {out} (sha256 {bundle.sha256[:12]}); NOT FOR CLINICAL USE")

    report_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    if nested is not None:
        curves = [("k-means (nested CV)", nested.scores)]
        if nested.baseline_scores is not None:
            curves.append(("mean/std baseline (nested CV)", nested.baseline_scores))
        if has_bayes:
            curves.append(("Bayes-optimal score", ts.bayes))
        m = nested_report["kmeans"]["metrics"]
        op = (1 - m["specificity"]["value"], m["sensitivity"]["value"]) \
            if m["specificity"]["value"] is not None and m["sensitivity"]["value"] is not None else None
        rep.roc_figure(report_dir / "roc.png", ts.y, curves, op, f"{opt.name} {opt.version}: nested CV ROC")
        figures["roc"] = "roc.png"
    rep.importance_figure(report_dir / "importance.png", [(i["feature"], i["gain"]) for i in importance],
                          f"{opt.name} {opt.version}: feature importance (gain)")
    figures["importance"] = "importance.png"
    if nested is not None:
        _predictions_csv(report_dir / "predictions.csv",
                         ["roi", "patient_id", "outcome", "outer_fold", "score", "threshold", "decision",
                          "mean_std_score", "bayes_score"],
                         [[ts.ids[i], ts.groups[i], "actionable" if ts.y[i] else "benign", int(nested.fold[i]),
                           float(nested.scores[i]), float(nested.thresholds[i]),
                           "actionable" if nested.scores[i] >= nested.thresholds[i] else "benign",
                           None if nested.baseline_scores is None else float(nested.baseline_scores[i]),
                           float(ts.bayes[i])] for i in range(len(ts))])
        figures["predictions"] = "predictions.csv"
    report = {
        "kind": "training",
        "model": {"name": opt.name, "version": opt.version, "sha256": bundle.sha256, "path": str(out),
                  "training_data": training_data, "not_for_clinical_use": bundle.not_for_clinical_use,
                  "segmentation_cnn_identity": seg_sha},
        "data": data.summary(opt.labels) | {
            "problems": data.problems,
            "failed": [f"{e.labelled.key}: {e.error}" for e in data.failed],
            "bayes_auc_all_labelled_rois": _bayes_all(data.extracted, bayes_all)},
        "settings": s.to_json(),
        "nested_cv": nested_report,
        "grid_search": {"selected": best, "settings_evaluated": len(rows),
                        "top": sorted(rows, key=lambda r: (-_n(r["sensitivity"]), -_n(r["auc"])))[:10]},
        "final_model": {"resampling": fitted.resampling, "feature_importance": importance[:30]},
        "figures": figures,
        "timings_s": {"features": round(t_features, 1), "nested_cv": round(t_nested, 1),
                      "grid_search_and_final_fit": round(t_final, 1),
                      "total": round(time.perf_counter() - t0, 1)},
        "feature_cache": str(cache_dir) if cache_dir else None,
    }
    rep.write_json(report_dir / "report.json", report)
    rep.write_text(report_dir / "report.md", _training_markdown(report))
    log(f"report in {report_dir} ({report['timings_s']['total']:.0f} s)")
    return report


def _n(v):
    return -1.0 if v is None or not np.isfinite(v) else float(v)


def _r(v):
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def _bayes_all(extracted, bayes):
    y = np.array([e.labelled.row.outcome for e in extracted])
    b = np.array([np.nan if v is None else v for v in bayes], dtype=float)
    if not len(b) or not np.isfinite(b).all():
        return None
    return _r(auc(y, b))


def _nested_report(ts: TrainingSet, nested, has_bayes: bool, n_boot: int, seed: int) -> dict:
    out = {}
    extra = {"bayes": ts.bayes} if has_bayes else None
    for name, scores, thresholds, configs in (
            ("kmeans", nested.scores, nested.thresholds, nested.configs),
            ("mean_std", nested.baseline_scores, nested.baseline_thresholds, nested.baseline_configs)):
        if scores is None:
            continue
        decisions = scores >= thresholds
        m = rep.with_intervals(ts.y, scores, decisions, ts.groups, n_boot=n_boot, seed=seed, extra=extra)
        fold_auc = [auc(ts.y[nested.fold == f], scores[nested.fold == f]) for f in range(len(configs))]
        finite = [a for a in fold_auc if np.isfinite(a)]
        out[name] = {
            "metrics": {k: v for k, v in m.items() if k != "bayes_auc"},
            "confusion": rep.confusion(ts.y, decisions),
            "auc_per_fold": [_r(a) for a in fold_auc],
            "auc_fold_mean": _r(np.mean(finite)) if finite else None,
            "auc_fold_sd": _r(np.std(finite, ddof=1)) if len(finite) > 1 else None,
            "selected_per_fold": [{k: c[k] for k in ("k", "num_leaves", "max_depth", "learning_rate", "n_estimators",
                                                     "reg_lambda", "threshold")} for c in configs],
        }
        if has_bayes and "bayes" not in out:
            out["bayes"] = {"auc": m["bayes_auc"], "note": "Bayes-optimal score (labels.csv bayes_score) on the same "
                                                            "ROIs: the ceiling a model can approach"}
    return out


def _training_markdown(r: dict) -> str:
    m = r["model"]
    d = r["data"]
    lines = [f"# Training report: {m['name']} {m['version']}", "",
             "**NOT FOR CLINICAL USE.**" if m["not_for_clinical_use"] else "", "",
             f"- model sha256: `{m['sha256']}`", f"- training data: {m['training_data']}",
             "- segmentation identity (CNN weights, selection and segmentation settings): "
             f"`{m['segmentation_cnn_identity']}`",
             f"- outcome table: `{d['labels_file']}` (sha256 `{d['labels_sha256'][:16]}...`)",
             f"- ROIs: {d['rows_matched']} matched, {d['rois_used']} used ({d['actionable']} actionable, "
             f"{d['benign']} benign, {d['patients']} patients), {d['rois_not_assessable']} not assessable "
             f"(< 2 calcifications), {d['rois_failed']} failed, {d['rows_unmatched_or_unreadable']} rows/objects "
             "unmatched or unreadable", ""]
    n = r.get("nested_cv")
    if n:
        s = r["settings"]
        cols = [("k-means (the method)", n["kmeans"]["metrics"])]
        if "mean_std" in n:
            cols.append(("mean/std baseline", n["mean_std"]["metrics"]))
        lines += [f"## Nested cross-validation ({s['outer_folds']} outer x {s['folds']} inner folds, grouped by "
                  "patient)", "",
                  "Pooled outer-test predictions, each at its fold's selected threshold; 95 % intervals from a "
                  f"patient bootstrap ({len(n['kmeans']['auc_per_fold'])} folds).", "",
                  rep.metrics_table(cols), ""]
        k = n["kmeans"]
        lines.append(f"AUC per outer fold: {', '.join('n/a' if a is None else f'{a:.3f}' for a in k['auc_per_fold'])}"
                     + (f" (mean {k['auc_fold_mean']:.3f} +/- {k['auc_fold_sd']:.3f})"
                        if k["auc_fold_mean"] is not None and k["auc_fold_sd"] is not None else ""))
        if "bayes" in n:
            lines += ["", f"**Bayes-optimal AUC on the same ROIs: {rep.fmt(n['bayes']['auc'])}** "
                          f"(model: {rep.fmt(k['metrics']['auc'])})."]
        lines += ["", "Confusion matrix (k-means, pooled):", "", rep.confusion_table(k["confusion"]), "",
                  "![ROC](roc.png)", ""]
    g = r["grid_search"]["selected"]
    lines += ["## Final model (grid search on all data)", "",
              f"Selected: K = {g['k']}, num_leaves = {g['num_leaves']}, max_depth = {g['max_depth']}, "
              f"learning_rate = {g['learning_rate']}, n_estimators = {g['n_estimators']}, "
              f"lambda_l2 = {g['reg_lambda']}, threshold = {g['threshold']}; "
              f"CV sensitivity {g['sensitivity']:.3f}, specificity {g['specificity']:.3f}, AUC {g['auc']:.3f} "
              f"({r['grid_search']['settings_evaluated']} settings evaluated).", "",
              "Top features (gain):", "", "| feature | gain | splits |", "|---|---|---|"]
    lines += [f"| {i['feature']} | {i['gain']:.2f} | {i['splits']} |"
              for i in r["final_model"]["feature_importance"][:15]]
    lines += ["", "![importance](importance.png)", "",
              f"Timings (s): {', '.join(f'{k} {v}' for k, v in r['timings_s'].items())}", ""]
    if d["problems"]:
        lines += ["## Problems", ""] + [f"- {p}" for p in d["problems"][:50]] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- evaluate

def evaluate(model: Path, data_dirs, labels: Path, out: Path, *, seg_model: Path | None = None,
             cache_dir: Path | None = None, use_cache: bool = True, workers: int = 2, n_boot: int = 2000,
             seed: int = 0, quiet: bool = False, default_pixel_spacing_mm: float | None = None) -> dict:
    log = _stderr("calcnode evaluate", quiet)
    t0 = time.perf_counter()
    bundle = ClassifierBundle.load(model)
    log(f"model {bundle.describe()}")
    # the bundle's HDoG parameters; the identity recomputed (the CNN, or a code setting, may differ)
    seg_path, seg_sha = _seg_model(seg_model or Path(bundle.path) / SEGMENTATION_FILE, log,
                                   hdog_params=bundle.hdog_params)
    if seg_sha != bundle.segmentation_sha256:
        log("warning: this segmentation (CNN and settings) is not the one the model was trained with")
    out = Path(out)
    cache_dir = (Path(cache_dir) if cache_dir else default_cache_dir(data_dirs, out)) if use_cache else None
    data = load_data(data_dirs, labels, seg_path, seg_sha, params=bundle.feature_params, cache_dir=cache_dir,
                     workers=workers, progress=not quiet, log=log, default_pixel_spacing_mm=default_pixel_spacing_mm,
                     hdog_params=bundle.hdog_params)
    ts = data.training_set()
    if len(ts) == 0:
        raise TrainingError("no labelled ROI has 2 or more calcifications: nothing to evaluate", reason="no_data")
    x = bundle.vectors(ts.rois)
    scores = bundle.predict(x)
    decisions = scores >= bundle.threshold
    has_bayes = bool(np.isfinite(ts.bayes).all())
    m = rep.with_intervals(ts.y, scores, decisions, ts.groups, n_boot=n_boot, seed=seed,
                           extra={"bayes": ts.bayes} if has_bayes else None)
    contrib = bundle.contributions(x)[:, :-1]
    mean_abs = np.abs(contrib).mean(axis=0)
    order = np.argsort(-mean_abs, kind="stable")
    out.mkdir(parents=True, exist_ok=True)
    curves = [(f"{bundle.name} {bundle.version}", scores)] + ([("Bayes-optimal score", ts.bayes)] if has_bayes else [])
    op = (1 - m["specificity"]["value"], m["sensitivity"]["value"]) \
        if m["specificity"]["value"] is not None and m["sensitivity"]["value"] is not None else None
    rep.roc_figure(out / "roc.png", ts.y, curves, op, f"{bundle.name} {bundle.version}: held-out ROC")
    importance = _importance(bundle.booster, list(bundle.feature_names))
    rep.importance_figure(out / "importance.png", [(i["feature"], i["gain"]) for i in importance],
                          f"{bundle.name} {bundle.version}: feature importance (gain)")
    _predictions_csv(out / "predictions.csv", ["roi", "patient_id", "outcome", "score", "decision", "bayes_score"],
                     [[ts.ids[i], ts.groups[i], "actionable" if ts.y[i] else "benign", float(scores[i]),
                       "actionable" if decisions[i] else "benign", float(ts.bayes[i])] for i in range(len(ts))])
    report = {
        "kind": "evaluation",
        "model": {"name": bundle.name, "version": bundle.version, "sha256": bundle.sha256,
                  "training_data": bundle.training_data, "not_for_clinical_use": bundle.not_for_clinical_use,
                  "threshold": bundle.threshold, "segmentation_cnn_identity": seg_sha},
        "data": data.summary(labels) | {
            "problems": data.problems,
            "failed": [f"{e.labelled.key}: {e.error}" for e in data.failed],
            "bayes_auc_all_labelled_rois": _bayes_all(data.extracted,
                                                      [e.labelled.row.bayes_score for e in data.extracted])},
        "metrics": {k: v for k, v in m.items() if k != "bayes_auc"},
        "bayes": {"auc": m["bayes_auc"]} if has_bayes else None,
        "confusion": rep.confusion(ts.y, decisions),
        "feature_importance": importance[:30],
        "mean_abs_contribution": [{"feature": bundle.feature_names[i], "mean_abs_shap": round(float(mean_abs[i]), 6)}
                                  for i in order[:30] if mean_abs[i] > 0],
        "figures": {"roc": "roc.png", "importance": "importance.png", "predictions": "predictions.csv"},
        "timings_s": {"total": round(time.perf_counter() - t0, 1)},
    }
    rep.write_json(out / "report.json", report)
    rep.write_text(out / "report.md", _evaluation_markdown(report))
    log(f"AUC {rep.fmt(m['auc'])}; report in {out}")
    return report


def _evaluation_markdown(r: dict) -> str:
    m, d = r["model"], r["data"]
    lines = [f"# Evaluation report: {m['name']} {m['version']}", "",
             "**NOT FOR CLINICAL USE.**" if m["not_for_clinical_use"] else "", "",
             f"- model sha256: `{m['sha256']}`, trained on: {m['training_data']}",
             f"- threshold: {m['threshold']}",
             f"- ROIs: {d['rows_matched']} matched, {d['rois_used']} scored ({d['actionable']} actionable, "
             f"{d['benign']} benign, {d['patients']} patients), {d['rois_not_assessable']} not assessable "
             f"(< 2 calcifications, not scored), {d['rois_failed']} failed", "",
             "95 % intervals from a patient bootstrap.", "",
             rep.metrics_table([(f"{m['name']} {m['version']}", r["metrics"])]), ""]
    if r.get("bayes"):
        lines += [f"**Bayes-optimal AUC on the same ROIs: {rep.fmt(r['bayes']['auc'])}** "
                  f"(model: {rep.fmt(r['metrics']['auc'])}).", ""]
    lines += ["Confusion matrix at the threshold:", "", rep.confusion_table(r["confusion"]), "", "![ROC](roc.png)", "",
              "Features with the largest mean |contribution| on this set:", "",
              "| feature | mean abs SHAP |", "|---|---|"]
    lines += [f"| {i['feature']} | {i['mean_abs_shap']:.4f} |" for i in r["mean_abs_contribution"][:15]]
    lines += [""]
    if d["problems"]:
        lines += ["## Problems", ""] + [f"- {p}" for p in d["problems"][:50]] + [""]
    return "\n".join(lines)
