"""The whole segmentation (breast mask + HDoG + selection CNN) on a real full-field mammogram.

Same image as bench_hdog (NEMA WG04 MG1_J2KI, 4664 x 3064 at 0.05 mm, re-labelled MG). Each stage
runs in a fresh process (spawn) so its peak RSS is its own:

  segment_whole_breast   segment(region=None): breast mask, HDoG in the breast, CNN on the crops
                         around every candidate
  segment_roi_15mm       20 random 15 mm x 15 mm ROIs inside the breast: median, p90, max
  cnn_whole_image_reference  the straightforward way to run the CNN: one forward pass over the
                         whole image (resampled to the network's 0.07 mm) - the reference the
                         crop-wise selection is compared with

Targets (issue 4): whole breast <= 10 s and <= 2 GB peak; one ROI <= 0.5 s, on 2 cores.
The network's compute does not depend on its weights: without the shipped model the bench uses
an untrained network of the same shape (and says so).

    .venv/bin/python -m bench.bench_segmentation [--model MODEL]

``--model``: a candidate model file instead of the shipped one (its layers, line filters and crop
margin decide the cost), measured before it is shipped; its figures go to
``results/bench_segmentation-<file stem>.json`` and leave the shipped model's results alone.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_hdog import MG1, ROI_MM, SPACING, _random_centres, _roi_mask
from bench.harness import peak_rss_mb, run_stage, write_results

ROOT = Path(__file__).resolve().parents[1]


def _model(path: str | None = None):
    from analysis.segmentation.cnn import ProximityNet, SegmentationModel
    from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL

    if path is not None:
        return SegmentationModel.load(path), f"candidate model {Path(path).name}"
    if DEFAULT_SEGMENTATION_MODEL.exists():
        return SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL), "shipped demonstration model"
    return SegmentationModel(ProximityNet().eval()), "untrained network of the shipped shape"


def _stage(name: str, npy: str, model_path: str | None = None) -> dict:
    import torch

    from analysis.segmentation import breast_mask, hdog_candidates
    from analysis.segmentation.cnn import NET_SPACING_MM, normalise_input, select_candidates
    from analysis.segmentation.pipeline import segment

    torch.set_num_threads(2)
    pixels = np.load(npy)
    model, model_note = _model(model_path)
    baseline = peak_rss_mb()
    out: dict = {"baseline_rss_mb": round(baseline, 1), "model": model_note}
    if name == "segment_whole_breast":
        start = time.perf_counter()
        result = segment(pixels, SPACING, None, model)
        out["seconds"] = round(time.perf_counter() - start, 3)
        # the split, measured again stage by stage on the same input
        t0 = time.perf_counter()
        candidates = hdog_candidates(pixels, SPACING, None)
        t1 = time.perf_counter()
        select_candidates(pixels, SPACING[0], candidates.labels, model)
        t2 = time.perf_counter()
        out.update(hdog_seconds=round(t1 - t0, 3), cnn_seconds=round(t2 - t1, 3),
                   candidates=len(result.candidates), calcifications=len(result))
    elif name == "segment_roi_15mm":
        breast = breast_mask(pixels, SPACING)
        seconds, counts = [], []
        for centre in _random_centres(breast):
            region = _roi_mask(pixels.shape, centre)
            start = time.perf_counter()
            result = segment(pixels, SPACING, region, model)
            seconds.append(time.perf_counter() - start)
            counts.append(len(result.candidates))
        out.update(rois=len(seconds), seconds_median=round(statistics.median(seconds), 3),
                   seconds_p90=round(float(np.percentile(seconds, 90)), 3),
                   seconds_max=round(max(seconds), 3), candidates_median=int(statistics.median(counts)))
    elif name == "cnn_whole_image_reference":
        from scipy import ndimage

        start = time.perf_counter()
        resampled = ndimage.zoom(pixels, SPACING[0] / NET_SPACING_MM, order=1, grid_mode=True, mode="nearest")
        with torch.inference_mode():
            model.net(torch.from_numpy(normalise_input(resampled, model.params.input_normalisation))[None, None])
        out["seconds"] = round(time.perf_counter() - start, 3)
        out["pixels_at_net_spacing"] = int(resampled.size)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["peak_rss_above_baseline_mb"] = round(out["peak_rss_mb"] - baseline, 1)
    return out


def _run(name: str, npy: str, model_path: str | None = None) -> dict:
    return run_stage(_stage, name, npy, model_path)


def main(argv: list[str] | None = None) -> None:
    import pydicom

    parser = argparse.ArgumentParser(prog="python -m bench.bench_segmentation")
    parser.add_argument("--model", metavar="MODEL", help="a candidate model file instead of the shipped one")
    args = parser.parse_args(argv)
    if args.model is not None:
        _model(args.model)  # a file that is not a model is refused before any stage runs

    sys.path.insert(0, str(ROOT / "tests"))
    from dicom_factory import rewrap_as_mg

    from analysis.dicom_input import load_image

    if not MG1.exists():
        print(f"bench_segmentation: {MG1} not found (the interop fixtures)", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mg1.dcm"
        rewrap_as_mg(pydicom.dcmread(MG1)).save_as(path, enforce_file_format=True)
        image = load_image(path)
        npy = str(Path(tmp) / "pixels.npy")
        np.save(npy, image.pixels)
        figures = {"image": "NEMA WG04 MG1_J2KI.dcm (re-labelled MG)", "shape": list(image.shape),
                   "spacing_mm": list(SPACING), "roi_mm": ROI_MM}
        for name in ("segment_whole_breast", "segment_roi_15mm", "cnn_whole_image_reference"):
            figures[name] = _run(name, npy, args.model)
    whole, reference = figures["segment_whole_breast"], figures["cnn_whole_image_reference"]
    figures["cnn_speedup_crops_vs_whole_image"] = round(reference["seconds"] / max(whole["cnn_seconds"], 1e-9), 2)
    figures["targets"] = {
        "whole_breast_seconds<=10": whole["seconds"] <= 10,
        "whole_breast_peak_rss_mb<=2048": whole["peak_rss_mb"] <= 2048,
        "roi_seconds_p90<=0.5": figures["segment_roi_15mm"]["seconds_p90"] <= 0.5,
    }
    write_results("bench_segmentation" if args.model is None else f"bench_segmentation-{Path(args.model).stem}",
                  figures)


if __name__ == "__main__":
    main()
