"""``calcnode batch``: analyse many studies on a Dask cluster (a local one by default).

Per study the same result objects the node sends (SEG, TID 1500 SR, Mammography CAD SR, GSPS),
plus one results table for the whole run; resumable (done studies are skipped), failures
collected in failures.csv instead of stopping the run. See :mod:`dicom_node.batch` and
docs/scale-out.md.

Exit code: 0 when every study was analysed (now or before), 1 when any study or input file
failed (failures.csv says which and why), 2 for bad arguments.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="analyse many studies on a Dask cluster: DICOM results per study, one results table",
        description="Analyse every study of a folder of DICOM files (or of a manifest) on a Dask cluster: "
                    "a local cluster sized to this machine, or --scheduler ADDRESS. Writes per study the "
                    "objects the node sends (SEG, SR, CAD SR, GSPS) and for the run results.csv (one row per "
                    "ROI), failures.csv and summary.json. A re-run skips the studies already done. The inputs "
                    "and --out must be on storage every Dask worker sees at the same paths.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR",
                        help="folder of DICOM files, searched recursively (e.g. `calcnode synth` output); "
                             "grouped by Study Instance UID")
    source.add_argument("--manifest", metavar="CSV",
                        help="CSV with a 'path' column (one row per file) or 'images' and optional 'rois' "
                             "columns (one row per study, paths separated by ';'); optional "
                             "'study_instance_uid'. Paths relative to the CSV's folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (results, tables, markers)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="Dask scheduler (tcp://host:8786); default: a local cluster of --workers processes")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="local cluster: worker processes, one study each at a time (default: one per core)")
    parser.add_argument("--config", metavar="FILE",
                        help="node configuration whose [analysis] settings to use (default: embedded defaults)")
    parser.add_argument("--model", metavar="MODEL", help="classifier bundle folder (default: the configured one)")
    parser.add_argument("--seg-model", metavar="PT", help="segmentation CNN (default: the bundle's)")
    parser.add_argument("--no-roi", choices=("detect", "whole-breast", "skip"),
                        help="an image without ROI: detect its calcification clusters and analyse each "
                             "(the configured assembly.no_roi_policy, default detect), analyse the whole "
                             "breast as one region (research only) or skip it")
    parser.add_argument("--no-gsps", action="store_true", help="do not write the GSPS")
    parser.add_argument("--retry-failed", action="store_true",
                        help="analyse again the studies whose earlier analysis failed")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def batch_config(args):
    """The node configuration with the command's flags over it; model paths made absolute (the
    workers may run in another folder)."""
    config = load_config(args.config, overrides={
        "analysis": {"model_bundle": args.model, "segmentation_model": args.seg_model,
                     "write_gsps": False if args.no_gsps else None},
        "assembly": {"no_roi_policy": args.no_roi.replace("-", "_") if args.no_roi else None},
    })
    analysis = config.analysis
    return dataclasses.replace(config, analysis=dataclasses.replace(
        analysis, model_bundle=str(Path(analysis.model_bundle).absolute()) if analysis.model_bundle else "",
        segmentation_model=str(Path(analysis.segmentation_model).absolute()) if analysis.segmentation_model
        else ""))


def run(args) -> int:
    from ..batch import BatchOptions, ManifestError, run_batch

    if args.workers is not None and args.workers < 1:
        raise SystemExit("calcnode batch: error: --workers must be >= 1")
    if args.workers is not None and args.scheduler:
        raise SystemExit("calcnode batch: error: --workers sizes the local cluster; with --scheduler the "
                         "scheduler's workers are used")
    config = batch_config(args)
    opts = BatchOptions(out=Path(args.out), data=Path(args.data) if args.data else None,
                        manifest=Path(args.manifest) if args.manifest else None, scheduler=args.scheduler,
                        workers=args.workers, retry_failed=args.retry_failed, progress=not args.quiet)
    from ..cluster import SchedulerUnreachable

    try:
        summary = run_batch(config, opts)
    except (ManifestError, SchedulerUnreachable) as exc:
        raise SystemExit(f"calcnode batch: error: {exc}") from None
    print(json.dumps(summary, indent=2))
    return 1 if summary["failures"] else 0
