"""``calcnode train`` and ``calcnode evaluate``: the classifier on a data set with outcomes."""
from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path

from training.classifier.model import GRIDS, Settings

_DATA_HELP = ("folder with the DICOM images and their ROI objects (GSPS/SEG), searched recursively; "
              "repeatable")
_SCHEDULER_HELP = ("run the segmentation and feature extraction on this Dask scheduler's workers "
                   "(tcp://host:8786; default: a local cluster of --workers processes). The data folders "
                   "and the segmentation CNN must be on storage the workers see at the same paths "
                   "(docs/scale-out.md)")
_LABELS_HELP = ("outcome table, one row per ROI: patient_id, image_sop_instance_uid, roi_id, outcome "
                "(benign/actionable), optional roi_file, bayes_score; repeatable (default: each --data "
                "folder's labels.csv; with several tables patients are grouped per table)")


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train the calcification-cluster classifier (writes a model bundle and a report)",
        description="Segment the calcifications of every labelled ROI, extract their features (cached), "
                    "tune LightGBM with SMOTE+ENN inside patient-grouped CV folds (sensitivity first, then "
                    "AUC), estimate performance by nested CV, and write the model bundle and a report. "
                    "See docs/classifier.md. Models are NOT FOR CLINICAL USE.")
    train.add_argument("--data", action="append", required=True, metavar="DIR", help=_DATA_HELP)
    train.add_argument("--labels", action="append", metavar="CSV", help=_LABELS_HELP)
    train.add_argument("--out", required=True, metavar="MODEL", help="model bundle folder to write")
    train.add_argument("--seg-model", metavar="PT",
                       help="segmentation CNN (default: the shipped demonstration CNN); copied into the bundle")
    train.add_argument("--seg-threshold", type=float, metavar="T",
                       help="prediction threshold of the CNN's candidate selection for this model (default: the "
                            "CNN's own; HDoGReg uses 10^-3.5 = 0.000316); stored in the bundle's copy")
    train.add_argument("--report", metavar="DIR", help="report folder (default: MODEL-report)")
    train.add_argument("--cache", metavar="DIR",
                       help="per-ROI feature cache (default: DATA/.calcnode-cache/features)")
    train.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--folds", type=int, default=5, help="CV folds of the grid search (default 5)")
    train.add_argument("--outer-folds", type=int, default=4,
                       help="outer folds of the nested CV (default 4; 0 skips the nested CV)")
    train.add_argument("--grid", choices=sorted(GRIDS), default="small",
                       help="hyper-parameter grid: small (default) or tiny (smoke tests)")
    train.add_argument("--min-specificity", type=float, default=Settings.min_specificity,
                       help="specificity floor of the sensitivity-first selection (default %(default)s)")
    train.add_argument("--no-resampling", action="store_true", help="train without SMOTE+ENN (for comparison)")
    train.add_argument("--no-baseline", action="store_true", help="skip the mean/std aggregation baseline")
    train.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap replicates (default 2000)")
    train.add_argument("--workers", type=int, default=None,
                       help="local Dask worker processes for segmentation and features (default: one per core; "
                            "1: in this process)")
    train.add_argument("--scheduler", metavar="ADDRESS", help=_SCHEDULER_HELP)
    train.add_argument("--name", default="calcnode-classifier", help="model name (in every report and SR)")
    train.add_argument("--version", default="1.0.0", dest="model_version", help="model version")
    train.add_argument("--training-data", metavar="TEXT",
                       help="one line describing the training data (default: derived from the data)")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate", help="score a held-out data set with a model bundle and write the same report",
        description="Metrics with patient-bootstrap 95 %% intervals at the bundle's threshold, the confusion "
                    "matrix, the ROC curve (and the Bayes-optimal AUC for simulated data).")
    evaluate.add_argument("--model", required=True, metavar="MODEL", help="model bundle folder")
    evaluate.add_argument("--data", action="append", required=True, metavar="DIR", help=_DATA_HELP)
    evaluate.add_argument("--labels", action="append", metavar="CSV", help=_LABELS_HELP)
    evaluate.add_argument("--out", required=True, metavar="REPORT", help="report folder to write")
    evaluate.add_argument("--seg-model", metavar="PT", help="segmentation CNN (default: the bundle's)")
    evaluate.add_argument("--cache", metavar="DIR", help="per-ROI feature cache")
    evaluate.add_argument("--no-cache", action="store_true")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluate.add_argument("--bootstrap", type=int, default=2000, metavar="N")
    evaluate.add_argument("--workers", type=int, default=None,
                          help="local Dask worker processes (default: one per core; 1: in this process)")
    evaluate.add_argument("--scheduler", metavar="ADDRESS", help=_SCHEDULER_HELP)
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(func=run_evaluate)


def _labels(args) -> list[Path]:
    """The --labels tables, or each data folder's own labels.csv (every ``calcnode synth`` folder
    has one: reading only the first folder's would leave the other folders' ROIs out)."""
    from training.classifier.labels import default_labels

    return [Path(p) for p in args.labels] if args.labels else default_labels(args.data)


def _config():
    from ..config import load_config

    analysis = load_config().analysis
    return analysis.default_pixel_spacing_mm or None


@contextlib.contextmanager
def _feature_executor(scheduler: str | None, workers: int | None):
    """The segmentation and feature extraction run on Dask: the workers of ``scheduler``, or
    without one a local cluster of ``workers`` single-threaded processes (default: one per core,
    the embedded default). ``workers <= 1`` without a scheduler: in this process, no cluster.
    Either way through the same code path (the client's concurrent.futures executor)."""
    if not scheduler and workers is not None and workers <= 1:
        yield
        return
    from ..cluster import SchedulerUnreachable, dask_client

    from training.classifier.features import use_executor

    try:
        with dask_client(scheduler, n_workers=None if scheduler else workers) as client, \
                use_executor(client.get_executor(pure=False)):
            yield
    except SchedulerUnreachable as exc:
        raise SystemExit(f"calcnode: error: {exc}") from None


def run_train(args) -> int:
    from training.classifier.pipeline import TrainOptions, train

    for name in ("folds", "outer_folds", "workers", "bootstrap"):
        if (getattr(args, name) or 0) < 0:
            raise SystemExit(f"calcnode train: error: --{name.replace('_', '-')} must be >= 0")
    if args.folds < 2:
        raise SystemExit("calcnode train: error: --folds must be >= 2")
    if args.seg_threshold is not None and not 0 < args.seg_threshold < 1:
        raise SystemExit("calcnode train: error: --seg-threshold must be in (0, 1)")
    if args.outer_folds == 1:
        raise SystemExit("calcnode train: error: --outer-folds must be 0 or >= 2")
    settings = replace(Settings(), seed=args.seed, folds=args.folds, outer_folds=args.outer_folds,
                       grid=GRIDS[args.grid], min_specificity=args.min_specificity,
                       resampling="none" if args.no_resampling else "smoteenn", baseline=not args.no_baseline)
    with _feature_executor(args.scheduler, args.workers):
        report = train(TrainOptions(
            data_dirs=args.data, labels=_labels(args), out=Path(args.out),
            seg_model=Path(args.seg_model) if args.seg_model else None, seg_threshold=args.seg_threshold,
            report_dir=Path(args.report) if args.report else None,
            cache_dir=Path(args.cache) if args.cache else None, use_cache=not args.no_cache,
            workers=max(1, args.workers or 1), settings=settings, name=args.name, version=args.model_version,
            training_data=args.training_data, n_boot=args.bootstrap, quiet=args.quiet,
            default_pixel_spacing_mm=_config()))
    print(json.dumps(_summary(report), indent=2))
    return 0


def run_evaluate(args) -> int:
    from training.classifier.pipeline import evaluate

    with _feature_executor(args.scheduler, args.workers):
        report = evaluate(Path(args.model), args.data, _labels(args), Path(args.out),
                          seg_model=Path(args.seg_model) if args.seg_model else None,
                          cache_dir=Path(args.cache) if args.cache else None, use_cache=not args.no_cache,
                          workers=max(1, args.workers or 1), n_boot=args.bootstrap, seed=args.seed, quiet=args.quiet,
                          default_pixel_spacing_mm=_config())
    print(json.dumps(_summary(report), indent=2))
    return 0


def _summary(report: dict) -> dict:
    out = {"model": report["model"], "data": {k: v for k, v in report["data"].items()
                                              if k not in ("problems", "failed")}}
    if report["kind"] == "training":
        nested = report.get("nested_cv") or {}
        out["nested_cv_auc"] = nested.get("kmeans", {}).get("metrics", {}).get("auc")
        out["nested_cv_mean_std_auc"] = nested.get("mean_std", {}).get("metrics", {}).get("auc")
        out["bayes_auc"] = nested.get("bayes", {}).get("auc")
        out["selected"] = {k: report["grid_search"]["selected"][k]
                           for k in ("k", "num_leaves", "max_depth", "learning_rate", "n_estimators", "reg_lambda",
                                     "threshold", "sensitivity", "specificity", "auc")}
    else:
        out["metrics"] = report["metrics"]
        out["bayes_auc"] = (report.get("bayes") or {}).get("auc")
        out["confusion"] = report["confusion"]
    out["timings_s"] = report["timings_s"]
    return out
