"""``calcnode segment``: HDoGReg on one image, inside its ROIs or over the whole breast."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from analysis.dicom_input import load_image
from analysis.dicom_input.rois import parse_rois
from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL, NOT_FOR_CLINICAL_USE
from analysis.segmentation.spacing import coarse_spacing_reason
from common.durable import atomic_path

from ..config import load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment the calcifications of one mammogram",
        description="Segment microcalcifications (HDoG candidates kept by the regression CNN) "
                    "inside the ROIs of the given GSPS/SEG files, or over the whole breast "
                    "without --roi. " + NOT_FOR_CLINICAL_USE)
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--roi", action="append", default=[], metavar="FILE", help="GSPS or SEG (repeatable)")
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help="selection CNN weights (default: the shipped demonstration model)")
    parser.add_argument("--out", metavar="DIR", help="write labels.npz and overlay.png here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    from analysis.segmentation.cnn import SegmentationModel  # torch: only when segmenting
    from analysis.segmentation.pipeline import segment

    config = load_config()
    image = load_image(args.image, default_pixel_spacing_mm=config.analysis.default_pixel_spacing_mm or None)
    coarse = coarse_spacing_reason(image.pixel_spacing_mm) if image.pixel_spacing_mm is not None else None
    if coarse is not None:  # said, not segmented into a meaningless "no calcification"
        if args.json:
            print(json.dumps({"image": str(args.image), "sop_instance_uid": image.sop_instance_uid,
                              "pixel_spacing_mm": list(image.pixel_spacing_mm), "segmented": False,
                              "reason": coarse}, indent=2))
        print(f"calcnode segment: error: {args.image}: {coarse}", file=sys.stderr)
        return 1
    rois, problems = [], []
    for path in args.roi:
        found, errors = parse_rois(path, images=[image.geometry],
                                   point_radius_mm=config.analysis.point_roi_radius_mm)
        rois += found
        problems += errors
    for problem in problems:
        print(f"calcnode segment: error: {problem}", file=sys.stderr)
    if args.roi and not rois:
        return 1
    masks = [roi.rasterise(image.geometry) for roi in rois]
    region = np.logical_or.reduce(masks) if masks else None
    model = SegmentationModel.load(args.model or DEFAULT_SEGMENTATION_MODEL)
    result = segment(image.pixels, image.pixel_spacing_mm, region, model)
    # An ROI's calcifications: those whose centroid lies inside it (docs/method.md §4.1).
    centres = np.round(np.stack([result.particles["row"], result.particles["col"]], axis=1)).astype(int) \
        if len(result) else np.zeros((0, 2), int)
    per_roi = []
    for roi, mask in zip(rois, masks):
        inside = mask[centres[:, 0], centres[:, 1]] if len(centres) else np.zeros(0, bool)
        per_roi.append({"roi_id": roi.roi_id, "label": roi.label, "kind": roi.kind,
                        "calcifications": int(inside.sum()),
                        # the calcifications' area; "area_mm2" in `calcnode rois` is the ROI's own
                        "calcification_area_mm2": round(float(result.particles["area_mm2"][inside].sum()), 4)})
    summary = {
        "image": str(args.image),
        "sop_instance_uid": image.sop_instance_uid,
        "mode": "rois" if rois else "whole_breast",
        "pixel_spacing_mm": list(image.pixel_spacing_mm),
        "hdog_candidates": len(result.candidates),
        "calcifications": len(result),
        "rois": per_roi,
        "model": {"file": str(args.model or DEFAULT_SEGMENTATION_MODEL), "sha256": model.sha256,
                  "notice": model.info.get("notice", NOT_FOR_CLINICAL_USE)},
    }
    if args.out:
        out = Path(args.out)
        with atomic_path(out / "labels.npz") as tmp, open(tmp, "wb") as fh:  # a file object: no suffix added
            np.savez_compressed(fh, labels=result.labels, particles=result.particles,
                                sop_instance_uid=image.sop_instance_uid)
        write_overlay(image.pixels, result.labels, masks, out / "overlay.png")
        summary["files"] = [str(out / "labels.npz"), str(out / "overlay.png")]
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.image}: {summary['calcifications']} calcifications "
              f"({summary['hdog_candidates']} HDoG candidates), {summary['mode'].replace('_', ' ')}")
        for item in per_roi:
            print(f"  {item['roi_id']} {item['kind']} \"{item['label']}\": {item['calcifications']} calcifications")
        print(f"  model: {summary['model']['notice']}")
    return 1 if problems else 0


def write_overlay(pixels: np.ndarray, labels: np.ndarray, roi_masks: list[np.ndarray], path: Path) -> None:
    """A PNG for a person: the image (cropped to the ROIs when given), calcifications in red,
    ROI outlines in yellow."""
    from PIL import Image
    from scipy import ndimage

    box = (slice(None), slice(None))
    if roi_masks:
        union = np.logical_or.reduce(roi_masks)
        rows, cols = np.nonzero(union)
        pad = 40
        box = (slice(max(rows.min() - pad, 0), rows.max() + pad + 1),
               slice(max(cols.min() - pad, 0), cols.max() + pad + 1))
    view = pixels[box]
    lo, hi = np.percentile(view, [1, 99.5])
    grey = (np.clip((view - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    calc = labels[box] > 0
    edge = calc & ~ndimage.binary_erosion(calc)
    rgb[edge] = (255, 40, 40)
    for mask in roi_masks:
        m = mask[box]
        rgb[m & ~ndimage.binary_erosion(m, iterations=2)] = (255, 220, 0)
    image = Image.fromarray(rgb)
    if max(image.size) > 2048:
        image.thumbnail((2048, 2048))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
