"""``calcnode train-seg``, ``calcnode evaluate-seg`` and ``calcnode seg-ceiling``: the selection CNN's training
and evaluation (:mod:`training.segmentation`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.durable import make_dirs, write_text

# Defaults shown in --help; the training code (torch) is imported only when a command runs.
DEFAULT_MAX_EPOCHS, DEFAULT_PATIENCE, DEFAULT_WORKERS, DEFAULT_WIDTH = 40, 6, 2, 8
DEFAULT_OUTLINE_LEVEL = 0.7  # analysis.segmentation.cnn.SelectionParams.outline_level
DEFAULT_PROXIMITY_RADIUS_MM = 0.7  # analysis.segmentation.cnn.SelectionParams.proximity_radius_mm
DEFAULT_LEARNING_RATE = 2e-3  # training.segmentation.train.TrainSettings.learning_rate
DEFAULT_NEGATIVES_PER_EPOCH = 4000  # training.segmentation.train.NegativeSampling.per_epoch
DEFAULT_PATCH_PX = 48  # training.segmentation.patches.PATCH_PX
DEFAULT_NEGATIVE_SPACING_MM = 0.07  # training.segmentation.negatives.DEFAULT_NEGATIVE_SPACING_MM
DEFAULT_CALIBRATION_FP_PER_CM2 = 1.0  # training.segmentation.train.CALIBRATION_FP_PER_CM2
DEFAULT_CALIBRATION_NEGATIVE_FP_PER_CM2 = 0.5  # training.segmentation.train.CALIBRATION_NEGATIVE_FP_PER_CM2
NEGATIVES_HELP = ("views with NO calcification (DICOM MG files, 16-bit PNG views such as "
                  "../shared/interop/real-tissue/*.png, or folders of them); a STEM_benign_lesion_mask.png "
                  "beside a PNG marks a region left out")


def _add_negatives(parser) -> None:
    parser.add_argument("--negatives", nargs="+", default=[], metavar="PNG_OR_DICOM", help=NEGATIVES_HELP)
    parser.add_argument("--negative-spacing", type=float, default=DEFAULT_NEGATIVE_SPACING_MM, metavar="MM",
                        help="pixel spacing assumed for a negative view that states none: every PNG "
                             f"(default {DEFAULT_NEGATIVE_SPACING_MM} mm, a Hologic-like detector)")


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train-seg", help="train the calcification selection CNN on images with per-particle truth",
        description="Train the HDoGReg selection CNN. Each --data folder holds MG images, their ROI "
                    "objects (GSPS/SEG) and *_labels.npz truth files (docs/segmentation.md).")
    train.add_argument("--data", action="append", required=True, metavar="DIR")
    train.add_argument("--out", required=True, metavar="MODEL", help="weights file to write (.pt)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-epochs", type=int, default=DEFAULT_MAX_EPOCHS)
    train.add_argument("--patience", type=int, default=DEFAULT_PATIENCE)
    train.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    train.add_argument("--width", type=int, metavar="N",
                       help=f"channels of the first layers (compute grows with its square; default "
                            f"{DEFAULT_WIDTH}, or with --init the model's own; a larger one widens that "
                            f"model without changing its output first)")
    train.add_argument("--dilations", type=_dilations, metavar="D,D,...",
                       help="the network's 3x3 layers by dilation (default 1,2,4,8,1: receptive field 2.3 mm; "
                            "or with --init the model's own); with --init, layers added before its last one "
                            "start as the identity, e.g. 1,2,4,8,16,1 (4.5 mm). Give --patch-px to match")
    train.add_argument("--line-filters", type=int, metavar="N",
                       help="N fixed oriented line filters on the network's input (e.g. 8; default none, or "
                            "with --init the model's own); with --init, added without changing its output "
                            "first. They widen the receptive field by 0.63 mm on each side: give --patch-context-px to match")
    train.add_argument("--patch-px", type=int, default=DEFAULT_PATCH_PX, metavar="N",
                       help=f"side of the training patches at 0.07 mm (default {DEFAULT_PATCH_PX}, for the "
                            "default receptive field; e.g. 64 for 1,2,4,8,16,1; larger ones are stored at "
                            "half precision)")
    train.add_argument("--patch-context-px", type=int, default=0, metavar="N",
                       help="image around each training patch that the network sees and the loss does not "
                            "(px at 0.07 mm; default 0). The receptive field's radius (e.g. 32 for "
                            "1,2,4,8,16,1) gives every pixel in the loss its whole field on the image, as "
                            "at inference; inputs are --patch-px + 2N square")
    train.add_argument("--outline-level", type=_outline_level, default=DEFAULT_OUTLINE_LEVEL,
                       metavar="P|none",
                       help="cut candidates to their pixels with prediction >= P before the 30 %% rule "
                            f"(default {DEFAULT_OUTLINE_LEVEL}); 'none': HDoGReg's whole candidates")
    train.add_argument("--proximity-radius", type=float, metavar="MM",
                       help="x of the proximity target K(d): how far from a calcification the network is "
                            f"taught a non-zero value, in mm (default {DEFAULT_PROXIMITY_RADIUS_MM:g}, HDoGReg's, "
                            "or with --init the model's own, so that fine-tuning keeps the target it was taught)")
    train.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE, metavar="RATE",
                       help=f"Adam's initial learning rate (default {DEFAULT_LEARNING_RATE:g})")
    train.add_argument("--init", metavar="MODEL",
                       help="start from this model's weights (fine-tuning; see --width)")
    train.add_argument("--patches-per-epoch", type=int, metavar="N",
                       help="a fresh random N of the data sets' patches each epoch (default: all)")
    train.add_argument("--negatives-per-epoch", type=int, default=DEFAULT_NEGATIVES_PER_EPOCH, metavar="N",
                       help="negative views' patches per epoch, half of them the hardest for the network "
                            f"as it is (default {DEFAULT_NEGATIVES_PER_EPOCH})")
    train.add_argument("--seen-only", action="store_true",
                       help="teach only the simulated particles the ideal observer finds (seg-ceiling, p >= 0.5 "
                            "at 1 FP/cm²); the others' neighbourhoods are left out of the loss "
                            "(docs/segmentation.md, \"Seen-only targets\"); folders that are not calcnode synth "
                            "sets are taught whole")
    train.add_argument("--no-calibration", dest="calibrate", action="store_false",
                       help="skip the threshold calibration on the run's own validation split (minutes on a "
                            "large set) when calcnode calibrate-seg sets the threshold next")
    _add_negatives(train)
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate-seg", help="FROC, IoU and mIoU of a segmentation model against truth",
        description="Detection (FROC) and segmentation (IoU) metrics, for the HDoG stage alone and "
                    "with the CNN, inside the ROIs of images with truth.")
    evaluate.add_argument("--model", required=True, action="append", metavar="MODEL",
                          help="the model to evaluate (repeat to compare models on the same data: "
                               "one report each, in --out/<model file stem>/ and one table)")
    evaluate.add_argument("--data", action="append", default=[], metavar="DIR",
                          help="folders with images, ROIs and *_labels.npz truth (FROC inside the ROIs)")
    _add_negatives(evaluate)
    evaluate.add_argument("--ceiling", metavar="JSON",
                          help="a calcnode seg-ceiling report of the same --data: its per-type bound "
                               "is shown beside the sensitivity")
    evaluate.add_argument("--out", default="seg-evaluation", metavar="DIR",
                          help="where segmentation_metrics.json and froc.png go")
    evaluate.set_defaults(func=run_evaluate)

    calibrate = subparsers.add_parser(
        "calibrate-seg", help="set a selection CNN's operating point on a fixed set of images with truth",
        description="Calibrate the prediction threshold of a trained selection CNN on the ROIs of "
                    "--data (the most sensitive threshold with at most --max-fp-per-cm2 false "
                    "objects per cm² of ROI and, with --negatives, at most --max-negative-fp-per-cm2 "
                    "objects per cm² of those views' breasts) and write the model with it to --out; "
                    "the weights stay the same.")
    calibrate.add_argument("--model", required=True, metavar="MODEL")
    calibrate.add_argument("--data", action="append", required=True, metavar="DIR")
    calibrate.add_argument("--out", required=True, metavar="MODEL",
                           help="the calibrated model file (.pt); may be --model itself")
    calibrate.add_argument("--max-fp-per-cm2", type=float, default=DEFAULT_CALIBRATION_FP_PER_CM2, metavar="RATE",
                           help=f"false objects per cm² of ROI allowed (default {DEFAULT_CALIBRATION_FP_PER_CM2:g})")
    _add_negatives(calibrate)
    calibrate.add_argument("--max-negative-fp-per-cm2", type=float, default=DEFAULT_CALIBRATION_NEGATIVE_FP_PER_CM2,
                           metavar="RATE", help="objects per cm² of breast allowed on the --negatives views, "
                                                f"whole breast (default {DEFAULT_CALIBRATION_NEGATIVE_FP_PER_CM2:g})")
    calibrate.add_argument("--outline-level", type=_outline_level, metavar="LEVEL", default=argparse.SUPPRESS,
                           help="also set the outline level (prediction units in (0, 1), or 'none' for "
                                "whole candidates) before calibrating; default: keep the model's")
    calibrate.set_defaults(func=run_calibrate)

    ceiling = subparsers.add_parser(
        "seg-ceiling", help="how detectable a simulated set's calcifications are at all (ideal-observer bound)",
        description="The sensitivity that the prewhitening matched filter, told each particle's exact "
                    "shape and position, reaches at a given false-positive rate inside the ROIs of "
                    "calcnode synth folders: a bound on what any segmentation can show on that data "
                    "(training/segmentation/ceiling.py).")
    ceiling.add_argument("--data", action="append", required=True, metavar="DIR")
    ceiling.add_argument("--fp-per-cm2", type=float, action="append", metavar="RATE",
                         help="false positives per cm² of ROI allowed (repeatable; default 0.5, 1, 2)")
    ceiling.add_argument("--out", metavar="JSON", help="also write the report here")
    ceiling.set_defaults(func=run_ceiling)


def _dilations(text: str) -> tuple[int, ...]:
    """Parsed only: ProximityNet refuses layers it cannot have, before any patch is made."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers, e.g. 1,2,4,8,16,1") from None


def _outline_level(text: str) -> float | None:
    if text.lower() == "none":
        return None
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("must be in (0, 1) or 'none'")
    return value


def run_train(args) -> int:
    from analysis.segmentation.cnn import SelectionParams

    from training.segmentation.train import NegativeSampling, TrainSettings, train_segmentation

    init_width, init_radius = _init_settings(args.init)
    radius = args.proximity_radius if args.proximity_radius is not None else init_radius
    settings = TrainSettings(seed=args.seed, max_epochs=args.max_epochs, patience=args.patience,
                             workers=args.workers, width=args.width or init_width,
                             learning_rate=args.learning_rate,
                             patches_per_epoch=args.patches_per_epoch, seen_only=args.seen_only,
                             dilations=args.dilations, line_filters=args.line_filters,
                             patch_px=args.patch_px,
                             patch_context_px=args.patch_context_px, calibrate=args.calibrate)
    try:
        train_segmentation(args.data, args.out, settings, SelectionParams(outline_level=args.outline_level,
                                                                      proximity_radius_mm=radius),
                           negatives=args.negatives, negative_spacing_mm=args.negative_spacing, init=args.init,
                           sampling=NegativeSampling(per_epoch=args.negatives_per_epoch))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"calcnode train-seg: {exc}") from None
    return 0


def run_calibrate(args) -> int:
    from training.segmentation.negatives import load_negative, negative_paths
    from training.segmentation.train import recalibrate

    if args.max_fp_per_cm2 <= 0 or args.max_negative_fp_per_cm2 <= 0:
        raise SystemExit("calcnode calibrate-seg: --max-fp-per-cm2 and --max-negative-fp-per-cm2 must be > 0")
    try:
        # absent unless given (argparse.SUPPRESS): 'none' is a value of its own
        extra = {"outline_level": args.outline_level} if hasattr(args, "outline_level") else {}
        negatives = [load_negative(p, args.negative_spacing) for p in negative_paths(args.negatives)]
        model = recalibrate(args.model, args.data, args.out, args.max_fp_per_cm2, negatives=negatives,
                            max_negative_fp_per_cm2=args.max_negative_fp_per_cm2, **extra)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"calcnode calibrate-seg: {exc}") from None
    print(json.dumps({"model": str(args.out), "prediction_threshold": model.params.prediction_threshold,
                      "calibration": model.info["threshold_calibration"]}, indent=2))
    print(f"calibrate-seg: wrote {args.out}. {model.info.get('notice', '')}", file=sys.stderr)
    return 0


def _init_settings(init: str | None) -> tuple[int, float]:
    """Width and proximity radius (mm) of the model to fine-tune (the defaults without one)."""
    if init is None:
        return DEFAULT_WIDTH, DEFAULT_PROXIMITY_RADIUS_MM
    from analysis.segmentation.cnn import SegmentationModel
    try:
        model = SegmentationModel.load(init)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"calcnode train-seg: {exc}") from None
    return model.net.width, model.params.proximity_radius_mm


def _model_dirs(models: list[str], out: Path) -> list[Path]:
    """``out`` for one model; ``out/<file stem>`` per model for several (numbered when stems repeat)."""
    if len(models) == 1:
        return [out]
    stems = [Path(m).stem for m in models]
    return [out / (stem if stems.count(stem) == 1 else f"{k + 1}-{stem}") for k, stem in enumerate(stems)]


def _summary(report: dict) -> dict:
    summary = {k: report[k] for k in ("model", "images", "truth_objects", "region_cm2") if k in report}
    if "by_type" in report:
        summary["by_type"] = report["by_type"]
    for stage in ("hdog", "hdog_cnn", "hdog_cnn_whole"):
        if stage in report:
            summary[stage] = {k: report[stage][k] for k in ("operating_point", "best_at_1_fp_per_cm2", "iou")}
    if "negatives" in report:
        negatives = report["negatives"]
        summary["negatives"] = {"note": negatives["note"], "operating_point": negatives["operating_point"],
                                "views": negatives["views"],
                                "groups": {g: {k: v for k, v in row.items() if k != "curve"}
                                           for g, row in negatives["groups"].items()}}
    return summary


def run_evaluate(args) -> int:
    from training.segmentation.evaluate import evaluate_segmentation
    from training.segmentation.negatives import load_negative, negative_paths

    if not args.data and not args.negatives:
        raise SystemExit("calcnode evaluate-seg: give --data (images with truth and ROIs), --negatives, or both")
    try:
        negatives = [load_negative(p, args.negative_spacing) for p in negative_paths(args.negatives)]
        ceiling = json.loads(Path(args.ceiling).read_text()) if args.ceiling else None
        summaries = []
        for model, out in zip(args.model, _model_dirs(args.model, Path(args.out))):
            report = evaluate_segmentation(model, args.data, out, negatives=negatives, ceiling=ceiling)
            summaries.append(_summary(report))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"calcnode evaluate-seg: {exc}") from None
    if any(v.spacing_source == "assumed" for v in negatives):
        assumed = sorted({v.spacing_mm[0] for v in negatives if v.spacing_source == "assumed"})
        print(f"evaluate-seg: pixel spacing ASSUMED {', '.join(map(str, assumed))} mm for "
              f"{', '.join(v.name for v in negatives if v.spacing_source == 'assumed')} (no spacing in the file); "
              "every per-cm² figure of those views depends on it", file=sys.stderr)
    text = json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2)
    if len(summaries) > 1:
        write_text(Path(args.out) / "comparison.json", text + "\n")
    print(text)
    return 0


def run_ceiling(args) -> int:
    from training.segmentation.ceiling import ideal_observer_bound

    try:
        report = ideal_observer_bound(args.data, tuple(args.fp_per_cm2 or (0.5, 1.0, 2.0)))
    except ValueError as exc:
        raise SystemExit(f"calcnode seg-ceiling: {exc}") from None
    text = json.dumps(report, indent=2)
    if args.out:  # its folder may not exist yet (make evaluate-demo-seg runs it first)
        make_dirs(Path(args.out).parent)
        write_text(args.out, text + "\n")
    print(text)
    return 0
