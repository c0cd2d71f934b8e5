"""``calcnode synth``: write a synthetic mammography data set (images, ROIs, truth).

Registered into the ``calcnode`` command by :func:`register`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training.synth.config import (CALCIFICATION_TYPES, DEFAULT_BACKGROUND_SPACING_MM, DEFAULT_DIFFICULTY,
                     DEFAULT_SIZE, DEFAULT_SPACING_MM, ROI_FORMATS, ROI_SHAPES, TISSUE_MODELS, SynthConfig,
                     parse_type_weights)

EPILOG = """\
difficulty: the best achievable ROC AUC (the Bayes-optimal score's, written per ROI as
bayes_score in labels.csv) is 1 - difficulty/2: 0 -> ~1.0, 0.4 (default) -> 0.80, 1 -> 0.5.

examples:
  calcnode synth --out data/synth --cases 50 --seed 1            # 200 full-size images
  calcnode synth --out /tmp/s --cases 4 --size 768x640 --roi-format seg
  calcnode synth --out /tmp/bg --cases 3 --background MG1_J2KI.dcm benign_1-130.dcm
  calcnode synth --preview docs/img/synth_example.png
See docs/simulator.md for the model and the output format. Synthetic data: not for clinical use.
"""


def _size(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 3328x2560 (rows x columns), not {text!r}")
    return rows, cols


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth", help="write a synthetic mammography data set (MG + GSPS/SEG + truth)",
        description="Write synthetic Hologic-like mammograms with amorphous calcification clusters, "
                    "radiologist-style ROIs, outcomes and per-particle truth.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="output folder (created; existing files of the same "
                   "cases are overwritten)")
    p.add_argument("--cases", type=int, default=10, help="patients (one study each; 4 images each "
                   "unless --views/--lateralities say otherwise) (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and options -> "
                   "identical files (default 0)")
    p.add_argument("--pixel-spacing", type=float, default=DEFAULT_SPACING_MM, metavar="MM",
                   help=f"Imager Pixel Spacing in mm (default {DEFAULT_SPACING_MM})")
    p.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="ROWSxCOLS",
                   help=f"image size (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})")
    p.add_argument("--difficulty", type=float, default=DEFAULT_DIFFICULTY,
                   help=f"0..1; Bayes-optimal AUC = 1 - difficulty/2 (default {DEFAULT_DIFFICULTY})")
    p.add_argument("--prevalence", type=float, default=0.3, help="fraction of actionable clusters (default 0.3)")
    p.add_argument("--types", default="amorphous", metavar="TYPE[:W],...",
                   help=f"calcification type mix, from {', '.join(CALCIFICATION_TYPES)} "
                        "(default amorphous); independent of the outcome")
    p.add_argument("--views", default="CC,MLO", help="views per breast (default CC,MLO)")
    p.add_argument("--lateralities", default="L,R", help="breasts per case (default L,R)")
    p.add_argument("--max-clusters", type=int, default=2, help="clusters per affected breast, at most (default 2)")
    p.add_argument("--negative-fraction", type=float, default=0.0,
                   help="fraction of cases with no cluster at all (default 0)")
    p.add_argument("--roi-format", choices=ROI_FORMATS, default="gsps", help="ROIs as GSPS (default) or SEG")
    p.add_argument("--roi-shape", choices=ROI_SHAPES, default="polyline",
                   help="GSPS graphic: polyline (default), circle, ellipse or mixed")
    p.add_argument("--background", nargs="+", default=[], metavar="DICOM|PNG",
                   help="insert clusters into these real mammograms (one image per case, cycled): DICOM, "
                        "or 16-bit PNG (view and laterality from names like *_L-CC.png; a "
                        "STEM_benign_lesion_mask.png beside it is kept free of clusters)")
    p.add_argument("--background-spacing", type=float, default=DEFAULT_BACKGROUND_SPACING_MM, metavar="MM",
                   help="pixel spacing to assume for a background whose header states none "
                        f"(default {DEFAULT_BACKGROUND_SPACING_MM}, digitised DDSM / NEMA WG04 film)")
    p.add_argument("--tissue", choices=TISSUE_MODELS, default="smooth",
                   help="smooth (default): the tissue the shipped models were trained on; processed: "
                        "vendor-like For Presentation tissue (fine grain, edge enhancement, Cooper's "
                        "ligaments, thin vessels, bright skin line), noise power spectrum matched to real "
                        "views (see docs/simulator.md: not yet the default)")
    p.add_argument("--no-distractors", action="store_true", help="leave out skin marks, noise peaks, deodorant")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--preview", type=Path, metavar="PNG",
                   help="write a picture of one generated case (full image + zoomed ROI) and stop "
                        "unless --out is given too")
    p.set_defaults(func=run)
    return p


def config_from_args(args) -> SynthConfig:
    rows, cols = args.size
    return SynthConfig(
        cases=args.cases, seed=args.seed, rows=rows, columns=cols, pixel_spacing_mm=args.pixel_spacing,
        difficulty=args.difficulty, prevalence=args.prevalence,
        type_weights=parse_type_weights(args.types),
        views=tuple(v.strip().upper() for v in args.views.split(",") if v.strip()),
        lateralities=tuple(v.strip().upper() for v in args.lateralities.split(",") if v.strip()),
        max_clusters=args.max_clusters, p_negative_case=args.negative_fraction,
        roi_format=args.roi_format, roi_shape=args.roi_shape,
        backgrounds=tuple(str(Path(b).resolve()) for b in args.background),
        background_spacing_mm=args.background_spacing, distractors=not args.no_distractors,
        tissue=args.tissue)


def run(args) -> int:
    if args.out is None and args.preview is None:
        print("calcnode synth: error: give --out DIR (and/or --preview PNG)", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"calcnode synth: error: {exc}", file=sys.stderr)
        return 2
    for b in config.backgrounds:
        if not os.path.isfile(b):
            print(f"calcnode synth: error: background {b} not found", file=sys.stderr)
            return 2
    if args.preview is not None:
        from training.synth.preview import render_preview

        path = render_preview(args.preview, seed=args.seed, rows=config.rows, columns=config.columns,
                              type_weights=config.type_weights, tissue=config.tissue)
        print(f"wrote {path}")
        if args.out is None:
            return 0
    from training.synth.dataset import generate_dataset

    summary = generate_dataset(config, args.out, workers=args.workers, progress=not args.quiet)
    print(f"wrote {summary['images']} images, {summary['rois']} ROIs ({summary['clusters']} clusters, "
          f"{summary['actionable_clusters']} actionable) to {args.out} in {summary['seconds']:.1f} s; "
          f"best achievable AUC {summary['expected_bayes_auc']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calcnode")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["synth", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
