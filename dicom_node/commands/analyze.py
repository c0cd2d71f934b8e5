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
    parser.add_argument("images", nargs="+", metavar="PATH",
                        help="files and folders of one or several studies, as a PACS exports them: MG images, "
                             "GSPS and SEG objects mixed, sorted by SOP class as the node sorts what it receives "
                             "(other objects are ignored with a warning)")
    parser.add_argument("--roi", action="extend", nargs="+", default=[], metavar="FILE",
                        help="GSPS or SEG objects kept elsewhere (one or more; repeatable)")
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


Groups = dict[str, list[str]]  # Study Instance UID ("" when unreadable) -> files


def sort_inputs(paths: list[str]) -> tuple[Groups, Groups, list[tuple[str, str]]]:
    """Files and folders of a study export, sorted the way the node's Storage SCP sorts what it
    receives and grouped by study: (MG images, ROI objects (GSPS / SEG), ignored (path, why)).

    Folders are searched recursively (hidden files left out). A file given by name that cannot be
    read as DICOM goes with the images of study "", so that the image reader says why in one line;
    one found in a folder is ignored (an export holds DICOMDIRs, READMEs, ...)."""
    from ..batch.inputs import folder_files
    from ..scp import KEPT_SOP_CLASSES, instance_kind

    images: Groups = {}
    rois: Groups = {}
    ignored: list[tuple[str, str]] = []
    for given in map(Path, paths):
        scanned = given.is_dir()
        for path in folder_files(given) if scanned else [given]:
            header = _header(path)
            if header is None:
                if scanned:
                    ignored.append((str(path), "not a readable DICOM file"))
                else:
                    images.setdefault("", []).append(str(path))
                continue
            sop_class, study_uid = header
            if sop_class not in KEPT_SOP_CLASSES:
                ignored.append((str(path), f"neither an MG image nor a GSPS/SEG (SOP class {sop_class})"))
            else:
                kind = images if instance_kind(sop_class) == "MG" else rois
                kind.setdefault(study_uid, []).append(str(path))
    return images, rois, ignored


def _header(path) -> tuple[str, str] | None:
    """(SOP Class UID, Study Instance UID) of a DICOM file, or None when it cannot be read as one."""
    from ..batch.inputs import read_header

    try:
        ds = read_header(Path(path))
        return str(ds.SOPClassUID), str(ds.StudyInstanceUID)
    except Exception:  # noqa: BLE001 - not DICOM, unreadable, or without those UIDs
        return None


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
    groups, found_rois, ignored = sort_inputs(args.images)
    for path, why in ignored:
        print(f"calcnode analyze: warning: ignored {path}: {why}", file=sys.stderr)
    roi_groups: Groups = {}
    for path in args.roi:  # ROI files kept elsewhere (first, as given): to their study, whatever they hold
        header = _header(path)
        roi_groups.setdefault(header[1] if header else "", []).append(path)
    for uid, paths in found_rois.items():
        study = roi_groups.setdefault(uid, [])
        study += [p for p in paths if p not in study]
    if not groups:
        print("calcnode analyze: error: no MG image among the given files", file=sys.stderr)
        return 1
    for uid, orphans in roi_groups.items():  # each study gets its own ROI objects (unreadable: every study)
        if uid and uid not in groups:
            for path in orphans:
                print(f"calcnode analyze: warning: ignored {path}: no MG image of its study was given", file=sys.stderr)
    try:
        for study_uid, paths in groups.items():
            try:
                study_rois = roi_groups.get(study_uid, []) + roi_groups.get("", [])
                found = study_analysis(paths, study_rois, seg_model, bundle, executor=executor,
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
