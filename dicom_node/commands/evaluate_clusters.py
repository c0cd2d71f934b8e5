"""``calcnode train-clusters`` and ``calcnode evaluate-clusters``: the calcification cluster model
of views without ROI (:mod:`analysis.clusters`, :mod:`training.clusters`, docs/clusters.md)."""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_REAL_SPACING_MM = 0.07   # training.clusters.views.REAL_SPACING_MM (kept light: no import here)


def _common(p) -> None:
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="a calcnode synth folder (MG images + truth/*_labels.npz, *_particles.csv); repeatable")
    p.add_argument("--negatives", nargs="+", default=[], metavar="DIR_OR_PNG",
                   help="real normal views: 16-bit PNGs or folders of them (a *_benign_lesion_mask.png "
                        "beside a view marks a region to ignore)")
    p.add_argument("--real-spacing", type=float, default=DEFAULT_REAL_SPACING_MM, metavar="MM",
                   help=f"pixel spacing assumed for the PNGs (default {DEFAULT_REAL_SPACING_MM})")
    p.add_argument("--seg-model", metavar="PT", help="selection CNN (default: the shipped demo-seg-cnn.pt)")
    p.add_argument("--candidates", metavar="JSON",
                   help="read the labelled candidates from this file (written by --save-candidates) "
                        "instead of segmenting --data/--negatives")
    p.add_argument("--save-candidates", metavar="JSON", help="also write the labelled candidates here")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train-clusters", help="train the calcification cluster model (views without ROI)",
        description="Segment simulated views (with truth) and real normal views over the whole breast, "
                    "collect the candidate clusters, label them (hit rule: the outline contains >= half "
                    "of a truth cluster's calcifications) and fit the cluster model (docs/clusters.md).")
    _common(train)
    train.add_argument("--out", required=True, metavar="MODEL", help="model file to write (JSON)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--name", default="calcnode-clusters-demo")
    train.add_argument("--version", default="1")
    train.add_argument("--target-fp", type=float, default=0.1, metavar="RATE",
                       help="false marks per training image at the operating threshold (default 0.1)")
    train.add_argument("--member-threshold", type=float, metavar="SCORE",
                       help="selection CNN support score at which a calcification counts as a cluster "
                            "member, in [0, 1] (default: the segmentation model's own threshold); stored "
                            "in the model (docs/clusters.md)")
    train.add_argument("--member-density", type=float, metavar="PER_CM2",
                       help="raise the member threshold per view until at most this many objects per cm² "
                            "of breast reach it (needs --member-threshold; stored in the model; "
                            "docs/clusters.md)")
    train.add_argument("--max-positive-area", type=float, default=500.0, metavar="MM2",
                       help="a hit whose outline is larger is left out of the fit (it does not localise "
                            "its cluster; default 500 mm², docs/clusters.md); 0: fit every hit")
    train.add_argument("--learner", choices=("lightgbm", "logistic"), default="lightgbm",
                       help="the scorer: gradient-boosted trees (default) or a logistic regression "
                            "(docs/clusters.md, \"The scorer\")")
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser(
        "evaluate-clusters", help="cluster-level FROC and false marks per image of the cluster model",
        description="Cluster sensitivity against false cluster marks per image on simulated views "
                    "(all, visible to the ideal observer, detectable by the segmentation, per calcification "
                    "type), false marks on views without clusters "
                    "and on real normal views; writes cluster_metrics.json and cluster_froc.png.")
    _common(evaluate)
    evaluate.add_argument("--model", metavar="PATH",
                          help="cluster model (default: the shipped demonstration model; 'rule' for the "
                               "rule-based confidence without a model)")
    evaluate.add_argument("--out", required=True, metavar="DIR")
    evaluate.set_defaults(func=run_evaluate)


def _gather(args, prog: str, member_threshold: float | None, member_density: float | None = None):
    from training.clusters.pipeline import gather, load_candidates, save_candidates

    if args.candidates:
        sim, real, saved = load_candidates(args.candidates)
        if saved != (member_threshold, member_density):
            print(f"calcnode {prog}: error: {args.candidates} holds members at selection threshold "
                  f"{_describe(*saved)}, not {_describe(member_threshold, member_density)}", file=sys.stderr)
            return None
    else:
        if not args.data and not args.negatives:
            print(f"calcnode {prog}: error: give --data DIR and/or --negatives, or --candidates JSON",
                  file=sys.stderr)
            return None
        for d in args.data:
            if not Path(d).is_dir():
                print(f"calcnode {prog}: error: {d}: no such data folder", file=sys.stderr)
                return None
        for n in args.negatives:
            if not Path(n).exists():
                print(f"calcnode {prog}: error: {n}: not found", file=sys.stderr)
                return None
        sim, real = gather(args.data, args.negatives, args.seg_model, args.real_spacing, not args.quiet,
                           member_threshold=member_threshold, member_density_per_cm2=member_density)
    if args.save_candidates:
        save_candidates(args.save_candidates, sim, real, member_threshold, member_density)
    return sim, real


def _describe(member_threshold: float | None, member_density: float | None = None) -> str:
    if member_threshold is None:
        return "the segmentation model's own"
    raised = "" if member_density is None else f" (raised per view to <= {member_density:g} per cm² of breast)"
    return f"{member_threshold:g}{raised}"


def run_train(args) -> int:
    if args.member_threshold is not None and not 0.0 <= args.member_threshold <= 1.0:
        print(f"calcnode train-clusters: error: --member-threshold {args.member_threshold:g} is not a support "
              "score in [0, 1]", file=sys.stderr)
        return 2
    if args.member_density is not None and (args.member_threshold is None or not args.member_density > 0):
        print("calcnode train-clusters: error: --member-density needs --member-threshold and a density > 0",
              file=sys.stderr)
        return 2
    gathered = _gather(args, "train-clusters", args.member_threshold, args.member_density)
    if gathered is None:
        return 2
    sim, real = gathered
    from training.clusters.pipeline import train

    data = "; ".join([*(str(d) for d in args.data), *(f"real {n}" for n in args.negatives)]) or str(args.candidates)
    try:
        model = train(sim, real, args.out, seed=args.seed, name=args.name, version=args.version,
                      training_data=f"{len(sim)} simulated + {len(real)} real normal views ({data})",
                      target_fp_per_image=args.target_fp, seg_model_path=getattr(args, "seg_model", None),
                      member_threshold=args.member_threshold, learner=args.learner,
                      member_density_per_cm2=args.member_density,
                      max_positive_area_mm2=args.max_positive_area if args.max_positive_area > 0 else None)
    except ValueError as exc:
        print(f"calcnode train-clusters: error: {exc}", file=sys.stderr)
        return 1
    oof = model.info["out_of_fold_at_threshold"]
    print(f"wrote {args.out}: {model.info['samples']} candidate clusters ({model.info['positives']} true), "
          f"threshold {model.threshold:.3f} (out of fold: {oof['found']}/{oof['clusters']} clusters, "
          f"{oof['visible_found']}/{oof['visible_clusters']} visible, {oof['false_marks_per_image']} "
          f"false marks/image), members at {_describe(model.member_threshold, model.member_density_per_cm2)} selection "
          f"threshold, {model.learner}; NOT FOR CLINICAL USE")
    return 0


def run_evaluate(args) -> int:
    from analysis.clusters import DEFAULT_CLUSTER_MODEL

    model = None if args.model == "rule" else (args.model or str(DEFAULT_CLUSTER_MODEL))
    if model is not None and not Path(model).is_file():
        print(f"calcnode evaluate-clusters: error: {model}: no such model file (use --model rule for the "
              "rule-based confidence)", file=sys.stderr)
        return 2
    from analysis.clusters import ClusterModel

    try:  # the members are searched for as the model was trained to find them
        loaded = ClusterModel.load(model) if model is not None else None
    except ValueError as exc:
        print(f"calcnode evaluate-clusters: error: {exc}", file=sys.stderr)
        return 2
    gathered = _gather(args, "evaluate-clusters", *((None, None) if loaded is None else
                                                      (loaded.member_threshold, loaded.member_density_per_cm2)))
    if gathered is None:
        return 2
    sim, real = gathered
    from training.clusters.pipeline import evaluate_folders

    report = evaluate_folders(sim, real, model, args.out)
    s = report["simulated"]
    op = s["operating_point"]
    at = s["at_fp_rate"]["all"]
    print(f"simulated: {s['images']} views, {s['truth_clusters']} clusters ({s['detectable_clusters']} detectable); "
          f"sensitivity {op['sensitivity']['all']['sensitivity']} at {op['fp_per_image']:.3f} false marks/image "
          f"(threshold {op['threshold']:.3f}); {at['sensitivity']:.3f} at <= 0.2 false marks/image")
    if s.get("visible_clusters") is not None:
        vis, vis_at = op["sensitivity"]["visible"], s["at_fp_rate"]["visible"]
        print(f"visible to the ideal observer: {s['visible_clusters']} clusters; sensitivity "
              f"{vis['sensitivity']} at the operating point, {vis_at['sensitivity']:.3f} at <= 0.2 false "
              "marks/image")
    if s.get("visible_by_the_all_calcifications_rule"):
        old = s["visible_by_the_all_calcifications_rule"]
        print(f"  (if a hit had to hold half of all a cluster's calcifications, not only of those the ideal "
              f"observer finds: {old['operating_point']['sensitivity']:.3f} at the operating point, "
              f"{old['at_fp_rate']['sensitivity']:.3f} at <= 0.2 false marks/image)")
    if s.get("kept_not_assessable"):
        k = s["kept_not_assessable"]
        print(f"kept at the operating point: {k['kept']} clusters, {k['not_assessable']} not assessable "
              f"(< 2 calcifications at the segmentation's operating point; {k['hits_not_assessable']} of "
              f"the {k['hits']} true ones)")
    if report["real"]["images"]:
        print(f"real: {report['real']['images']} views, "
              f"{report['real']['fp_per_image_at_operating_point']:.3f} false marks/view")
    print(f"wrote {Path(args.out) / 'cluster_metrics.json'} and {Path(args.out) / 'cluster_froc.png'}")
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="calcnode")
    register(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args()
    sys.exit(parsed.func(parsed) if getattr(parsed, "func", None) else 2)
