"""``calcnode analyze``: the whole analysis of mammograms offline (segment, features, score).

Images are grouped by study (Study Instance UID) and each study is analysed with
:func:`analysis.study.study_analysis`. Output: one line per ROI (drawn or detected cluster), or
with ``--json`` one JSON object per ROI per line (image, roi id, calcification count, score,
decision, assessable, reason, detection confidence, model); a view without ROI where no cluster
was detected gets one line "no calcification cluster detected" (``cluster_detection`` in JSON). With ``--out DIR`` the DICOM results (SEG, TID 1500 SR, Mammography CAD SR,
GSPS) are written there by :func:`sr_templates.write_study_results`.

Input problems (an unusable image, an ROI object that cannot be read) are printed to stderr,
one line each, the rest is still analysed, and the exit code is 1. A not-assessable ROI is a
result, not an error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis.classify import DEFAULT_BUNDLE, NOT_FOR_CLINICAL_USE, BundleError, ClassifierBundle

from ..config import load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze", help="analyse mammograms offline: calcifications, score and decision per ROI",
        description="Segment the calcifications inside the ROIs of the given GSPS/SEG files (on an image "
                    "without ROI: detect its calcification clusters, each then analysed as an ROI), extract "
                    "their features and score each ROI with the model bundle. " + NOT_FOR_CLINICAL_USE)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="MG images (one or several studies)")
    parser.add_argument("--roi", action="extend", nargs="+", default=[], metavar="FILE",
                        help="GSPS or SEG objects (one or more; repeatable)")
    parser.add_argument("--model", metavar="MODEL",
                        help=f"classifier bundle folder (default: the shipped {DEFAULT_BUNDLE.name})")
    parser.add_argument("--seg-model", metavar="PT", help="segmentation CNN (default: the bundle's)")
    parser.add_argument("--no-roi", choices=("detect", "whole-breast", "skip"), default="detect",
                        help="an image without ROI: detect its calcification clusters and analyse each "
                             "(default), analyse the whole breast as one region (research only) or skip it")
    parser.add_argument("--json", action="store_true", help="one JSON object per ROI per line")
    parser.add_argument("--out", metavar="DIR", help="also write the DICOM results (SEG, SR, CAD SR, GSPS) here")
    parser.add_argument("--no-gsps", action="store_true", help="with --out: do not write the GSPS")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for the per-calcification radiomics (default 1)")
    parser.set_defaults(func=run)


def _group_by_study(paths: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    import pydicom

    groups: dict[str, list[str]] = {}
    unreadable = []
    for path in paths:
        try:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True,
                                      specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
        except Exception:
            uid = ""  # load_image says why, in the study analysis
            unreadable.append(path)
        groups.setdefault(uid, []).append(path)
    return groups, unreadable


def run(args) -> int:
    from analysis.study import study_analysis
    from sr_templates import write_study_results

    config = load_config()
    default_spacing = config.analysis.default_pixel_spacing_mm or None
    try:
        bundle = ClassifierBundle.load(args.model or DEFAULT_BUNDLE)
    except BundleError as exc:
        if args.model is None:
            raise BundleError(f"{exc}. The demonstration bundle is made by `make demo-classifier`",
                              reason=exc.reason) from None
        raise
    seg_model = None
    if args.seg_model:
        from analysis.segmentation.cnn import SegmentationModel

        try:
            seg_model = SegmentationModel.load(args.seg_model)
        except ValueError as exc:
            print(f"calcnode analyze: error: {exc}", file=sys.stderr)
            return 1
    executor = None
    if args.workers > 1:
        from analysis.features import feature_pool

        executor = feature_pool(args.workers)
    status = 0
    groups, _ = _group_by_study(args.images)
    try:
        for study_uid, paths in groups.items():
            try:
                found = study_analysis(paths, args.roi, seg_model, bundle, executor=executor,
                                       no_roi=args.no_roi.replace("-", "_"),
                                       point_radius_mm=config.analysis.point_roi_radius_mm,
                                       default_pixel_spacing_mm=default_spacing)
            except ValueError as exc:  # InputError included: nothing usable in this group
                print(f"calcnode analyze: error: {exc}", file=sys.stderr)
                status = 1
                continue
            for problem in found.problems:
                print(f"calcnode analyze: error: {problem}", file=sys.stderr)
                status = 1
            for warning in found.result.warnings:
                if not warning.startswith(("ROI not analysed: ", "image not analysed: ")):  # printed above
                    print(f"calcnode analyze: warning: {warning}", file=sys.stderr)
            for record in found.records():
                print(json.dumps(record) if args.json else _line(record), flush=True)
            if args.out and found.result.images:
                sources = [found.image_files[im.sop_instance_uid] for im in found.result.images]
                try:
                    written = write_study_results(found.result, sources, args.out, gsps=not args.no_gsps)
                except ValueError as exc:
                    print(f"calcnode analyze: error: results of study {study_uid} not written: {exc}",
                          file=sys.stderr)
                    status = 1
                    continue
                for path in written:
                    print(f"calcnode analyze: wrote {path}", file=sys.stderr)
    finally:
        if executor is not None:
            executor.shutdown()
    if bundle.not_for_clinical_use:
        print(f"calcnode analyze: model {bundle.describe()}", file=sys.stderr)
    return status


def _line(r: dict) -> str:
    name = Path(r["image"]).name if r["image"] else r["sop_instance_uid"]
    if r["roi_id"] is None:  # a view without ROI and without a detected cluster
        if r.get("cluster_detection") == "no_cluster_detected":
            return f"{name}: no calcification cluster detected"
        return f"{name}: cluster detection failed: {r['reason']}"
    what = f"{name} {r['roi_id']}"
    if r.get("roi_label"):
        what += f" \"{r['roi_label']}\""
    if r.get("detection_confidence") is not None:
        what += f" (detection confidence {r['detection_confidence']:.2f})"
    if r["status"] == "ok":
        return (f"{what}: {r['calcifications']} calcifications, score {r['score']:.3f} at threshold "
                f"{r['threshold']:.2f}: {r['decision']}")
    if r["status"] == "not_assessable":
        return f"{what}: not assessable: {r['reason']}"
    return f"{what}: analysis failed: {r['reason']}"
