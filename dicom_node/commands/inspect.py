"""``calcnode info`` and ``calcnode rois``: look at inputs the way the node will read them.

Both print what the analysis would see and exit non-zero, with one line per
problem on stderr, when an input cannot be used. They never print patient
identity.
"""
from __future__ import annotations

import json
import sys

from analysis.dicom_input import InputError, load_image, read_geometry

from ..config import load_config


def register(subparsers) -> None:
    info = subparsers.add_parser("info", help="describe mammograms as the analysis reads them")
    info.add_argument("images", nargs="+", metavar="IMAGE")
    info.add_argument("--json", action="store_true", help="print one JSON array")
    info.set_defaults(func=run_info)

    rois = subparsers.add_parser("rois", help="list the regions of interest in GSPS or SEG files")
    rois.add_argument("files", nargs="+", metavar="FILE", help="GSPS or SEG objects")
    rois.add_argument("--image", action="append", default=[], metavar="IMAGE",
                      help="a referenced image: gives areas in mm^2 and checks the references "
                           "(repeatable)")
    rois.add_argument("--json", action="store_true", help="print one JSON array")
    rois.add_argument("--point-radius-mm", type=float, default=None,
                      help="radius of the region around a POINT annotation "
                           "(default: analysis.point_roi_radius_mm)")
    rois.set_defaults(func=run_rois)


def _error(command: str, exc: Exception) -> None:
    print(f"calcnode {command}: error: {exc}", file=sys.stderr)


def _image_summary(image) -> dict:
    g = image.geometry
    return {
        "sop_instance_uid": image.sop_instance_uid,
        "series_instance_uid": image.series_instance_uid,
        "study_instance_uid": image.study_instance_uid,
        "sop_class_uid": image.sop_class_uid,
        "presentation_intent": image.presentation_intent,
        "rows": g.rows,
        "columns": g.columns,
        "pixel_spacing_mm": list(g.pixel_spacing_mm) if g.pixel_spacing_mm else None,
        "pixel_spacing_source": g.spacing_source,
        "laterality": image.laterality,
        "view": image.view,
        "view_modifiers": list(image.view_modifiers),
        "bits_stored": image.bits_stored,
        "photometric_interpretation": image.photometric_interpretation,
        "inverted": image.inverted,
        "manufacturer": image.manufacturer,
        "transfer_syntax_uid": image.transfer_syntax_uid,
        "pixel_range": [float(image.pixels.min()), float(image.pixels.max())],
        "warnings": list(image.warnings),
    }


def run_info(args) -> int:
    default_spacing = load_config().analysis.default_pixel_spacing_mm or None
    summaries, failed = [], 0
    for path in args.images:
        try:
            summary = _image_summary(load_image(path, default_pixel_spacing_mm=default_spacing))
        except InputError as exc:
            _error("info", exc)
            failed += 1
            continue
        summary["file"] = path
        summaries.append(summary)
        if not args.json:
            spacing = summary["pixel_spacing_mm"]
            print(f"{path}: {summary['rows']}x{summary['columns']} {summary['bits_stored']}-bit "
                  f"{summary['photometric_interpretation']}, {summary['presentation_intent']}, "
                  f"{summary['laterality'] or '?'} {summary['view'] or '?'}, spacing "
                  f"{spacing[0]:.4g}x{spacing[1]:.4g} mm ({summary['pixel_spacing_source']})")
            for warning in summary["warnings"]:
                print(f"  warning: {warning}")
    if args.json:
        print(json.dumps(summaries, indent=2))
    return 1 if failed else 0


def run_rois(args) -> int:
    from analysis.dicom_input.rois import parse_rois

    radius = args.point_radius_mm or load_config().analysis.point_roi_radius_mm
    geometries = []
    for path in args.image:
        try:
            geometries.append(read_geometry(path))
        except InputError as exc:
            _error("rois", exc)
            return 1
    by_uid = {g.sop_instance_uid: g for g in geometries}
    out, failed = [], 0
    for path in args.files:
        try:
            rois, problems = parse_rois(path, images=geometries, point_radius_mm=radius)
        except InputError as exc:
            _error("rois", exc)
            failed += 1
            continue
        for problem in problems:
            _error("rois", problem)
        failed += len(problems)
        for roi in rois:
            item = roi.to_json(by_uid.get(roi.referenced_sop_instance_uid))
            out.append(item)
            if not args.json:
                area = item["area_mm2"]
                area_text = f"{area:.2f} mm^2" if area is not None else (
                    f"{item['area_px']:.1f} px^2" if item["area_px"] is not None else "area unknown")
                print(f"{path}: {item['roi_id']} {item['kind']} \"{item['label']}\" on "
                      f"{item['referenced_sop_instance_uid']}: {len(item['points_px'])} points, {area_text}")
    if args.json:
        print(json.dumps(out, indent=2))
    return 1 if failed else 0
