"""``calcnode learning-curve``: the classifier's nested-CV AUC against the number of training
ROIs, with the Bayes-optimal AUC on the same ROIs (docs/classifier.md#learning-curve)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from training.classifier.model import GRIDS, Settings

from .train import _DATA_HELP, _LABELS_HELP, _config, _labels


def _sizes(text: str) -> list[int | str]:
    try:
        sizes = [v.strip() if v.strip() == "all" else int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min((v for v in sizes if v != "all"), default=2) < 2:
        raise SystemExit(f"calcnode learning-curve: error: --sizes takes integers >= 2 (or 'all') separated by "
                         f"commas, not {text!r}")
    return sizes


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "learning-curve", help="nested-CV AUC of the classifier against the number of training ROIs",
        description="Segment and extract the features of the labelled ROIs exactly as `calcnode train` does "
                    "(same CNN, operating point and feature cache), then, for each size, draw random subsets "
                    "of whole patients and run the training report's nested CV on each: AUC with a patient "
                    "bootstrap 95 %% interval beside the Bayes-optimal AUC on the same ROIs. Writes "
                    "learning_curve.json, .png, .md and the subsets' scores. NOT FOR CLINICAL USE.")
    p.add_argument("--data", action="append", required=True, metavar="DIR", help=_DATA_HELP)
    p.add_argument("--labels", action="append", metavar="CSV", help=_LABELS_HELP)
    p.add_argument("--sizes", default="100,200,450,1000,2000", type=_sizes, metavar="N,N,...",
                   help="numbers of usable ROIs (>= 2 calcifications) per subset (default %(default)s); a size "
                        "larger than the usable ROIs is reported as skipped; 'all' is every usable ROI")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the curve to")
    p.add_argument("--seg-model", metavar="PT",
                   help="segmentation CNN, at its own threshold (default: the shipped demonstration CNN)")
    p.add_argument("--repeats", type=int, metavar="R",
                   help="random subsets per size (default: 3 below 1000 ROIs, 1 from 1000)")
    p.add_argument("--seed", type=int, default=0, help="subset draws and nested CV (default 0)")
    p.add_argument("--cache", metavar="DIR", help="per-ROI feature cache (default: DATA/.calcnode-cache/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--folds", type=int, default=5, help="inner CV folds (default 5, as train)")
    p.add_argument("--outer-folds", type=int, default=4, help="outer folds of the nested CV (default 4, as train)")
    p.add_argument("--grid", choices=sorted(GRIDS), default="small", help="hyper-parameter grid (default small)")
    p.add_argument("--no-baseline", action="store_true", help="skip the mean/std aggregation baseline")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap replicates (default 2000)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the features and then for the nested CVs (default: one per core; "
                        "1: in this process)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from training.classifier.learning_curve import CurveOptions, learning_curve

    if args.folds < 2 or args.outer_folds < 2:
        raise SystemExit("calcnode learning-curve: error: --folds and --outer-folds must be >= 2")
    if (args.repeats is not None and args.repeats < 1) or args.bootstrap < 0 or (args.workers or 1) < 1:
        raise SystemExit("calcnode learning-curve: error: --repeats and --workers must be >= 1, --bootstrap >= 0")
    settings = replace(Settings(), seed=args.seed, folds=args.folds, outer_folds=args.outer_folds,
                       grid=GRIDS[args.grid], baseline=not args.no_baseline)
    workers = args.workers or os.cpu_count() or 1
    # A plain process pool (extract_features' own) rather than train's Dask cluster: the same
    # per-image function, and no idle cluster left holding memory while the nested CVs run.
    result = learning_curve(CurveOptions(
        data_dirs=args.data, labels=_labels(args), out=Path(args.out), sizes=args.sizes,
        seg_model=Path(args.seg_model) if args.seg_model else None,
        cache_dir=Path(args.cache) if args.cache else None, use_cache=not args.no_cache, workers=workers,
        repeats=args.repeats, settings=settings, n_boot=args.bootstrap, quiet=args.quiet,
        default_pixel_spacing_mm=_config()))
    print(json.dumps({"curve": [{"n": e["n"], "repeats": e["repeats"], "auc_mean": e["auc_mean"],
                                 "bayes_auc_mean": e["bayes_auc_mean"]} for e in result["curve"]],
                      "skipped": result["skipped"], "timings_s": result["timings_s"]}, indent=2))
    return 0
