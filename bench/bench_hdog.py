"""Breast mask and HDoG candidates on a real full-field mammogram: speed, memory, agreement.

Image: NEMA WG04 MG1_J2KI (4664 x 3064, 12-bit, JPEG 2000), re-labelled as MG as the tests do.
Spacing 0.05 mm: the file states Spatial Resolution (0018,1050) = .05 and no pixel spacing; it
is a DDSM film digitised by a Lumisys scanner at 50 um (the tests' rewrap_as_mg sets the same).
At 0.05 mm the HDoG sigmas are 1.65 .. 6.77 px (1.18 .. 4.83 px at 0.07 mm), so this image costs
about 1.4x what a 0.07 mm image of the same size would.

Each measured stage runs in its own fresh process (spawn), so its peak RSS is its own:
  breast_mask            breast_mask() on the full image
  hdog_whole_breast      hdog_candidates(region=None): breast mask + HDoG within it
  hdog_whole_image       hdog_candidates(region=everything)
  hdog_roi_15mm          one 15 mm x 15 mm ROI around the calcification in the mass (median of 7):
                         dense tissue where candidates chain far, so the crop grows (a hard case)
  hdog_roi_15mm_random   20 random 15 mm ROIs inside the breast mask (seeded): median, p90, max
  reference_float64      HDoGReg's code path written out plainly (below): whole-image float64
                         Gaussians, np.stack + peak_local_max, np.gradient Hessians for every
                         level, per-blob component painting; its _prune_blobs step is timed
                         apart (with overlap 1.0 it removes nothing)
  reference_float32      the same in float32 (the arithmetic of our implementation)
Agreement: our whole-image result against both references (pixels, components, peaks); the ROI
result against the whole-breast result (the candidates with a peak in the ROI).

    .venv/bin/python -m bench.bench_hdog
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from math import log
from pathlib import Path

import numpy as np

from bench.harness import peak_rss_mb, run_stage, write_results

ROOT = Path(__file__).resolve().parents[1]
MG1 = ROOT.parent / "shared" / "interop" / "mg" / "MG1_J2KI.dcm"
SPACING = (0.05, 0.05)
ROI_CENTRE = (1810, 1280)   # the bright calcification in the mass
ROI_MM = 15.0


# --------------------------------------------------------------------------- the reference

def reference_hdog(image, min_sigma, max_sigma, sigma_ratio=1.6, threshold=0.006, hessian_thr=1.4,
                   dtype=np.float64):
    """HDoGReg's blob_detector_hdog(..., hessian_thr=1.4) step by step (hdogreg/image.py),
    on the whole image; returns (candidate mask, peaks (row, col, level), prune seconds)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.feature.blob import _prune_blobs
    from skimage.measure import regionprops

    image = np.asarray(image, dtype)  # img_as_float: float64 in HDoGReg
    k = int(log(float(max_sigma) / min_sigma, sigma_ratio)) + 1
    sigma_list = np.array([min_sigma * (sigma_ratio ** i) for i in range(k + 1)])
    gaussian_images = [ndimage.gaussian_filter(image, s) for s in sigma_list]
    dog_images = [(gaussian_images[i] - gaussian_images[i + 1]) * sigma_list[i] / (sigma_list[i + 1] - sigma_list[i])
                  for i in range(k)]
    del gaussian_images
    image_cube = np.stack(dog_images, axis=-1)
    local_maxima = peak_local_max(image_cube, threshold_abs=threshold, footprint=np.ones((3,) * 3),
                                  threshold_rel=0.0, exclude_border=False)
    del image_cube
    lm = local_maxima.astype(np.float64)
    lm[:, -1] = sigma_list[local_maxima[:, -1]]
    start = time.perf_counter()
    blobs = _prune_blobs(lm.copy(), 1.0)  # overlap 1.0 (pipeline_infer.sh): removes nothing
    prune_seconds = time.perf_counter() - start
    assert len(blobs) == len(lm)

    out = np.zeros(image.shape, bool)
    for i in range(k):
        img_f = dog_images[i]
        x_grad = np.gradient(img_f)
        hes = np.empty((2, 2) + img_f.shape, dtype=img_f.dtype)
        for a, grad_a in enumerate(x_grad):
            for b, grad_ab in enumerate(np.gradient(grad_a)):
                hes[a, b] = grad_ab
        det = hes[0, 0] * hes[1, 1] - hes[1, 0] * hes[0, 1]
        trace = hes[0, 0] + hes[1, 1]
        negative = np.logical_and(det > 0, trace < 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            other = np.abs(det) / np.power(trace + 1e-20, 2)
        other = np.logical_and(other < hessian_thr, trace < 0)
        blob_mask = np.logical_or(negative, other)
        del hes, det, trace, negative, other, x_grad
        lbl, _ = ndimage.label(blob_mask)
        rprops = regionprops(lbl)
        s = sigma_list[i]
        for blob in blobs:
            if blob[2] == s:
                x, y = int(blob[0]), int(blob[1])
                lbl_id = lbl[x, y]
                if lbl_id == 0:
                    continue
                x1, y1, x2, y2 = rprops[lbl_id - 1].bbox
                out[x1:x2, y1:y2] = np.logical_or(out[x1:x2, y1:y2], lbl[x1:x2, y1:y2] == lbl_id)
    return out, local_maxima, prune_seconds


# --------------------------------------------------------------------------- one stage per process

def _roi_mask(shape, centre=ROI_CENTRE):
    half = int(round(ROI_MM / SPACING[0] / 2))
    region = np.zeros(shape, bool)
    region[centre[0] - half:centre[0] + half, centre[1] - half:centre[1] + half] = True
    return region


def _random_centres(breast: np.ndarray, n: int = 20, seed: int = 0) -> list[tuple[int, int]]:
    """ROI centres whose whole 15 mm square lies in the breast mask."""
    half = int(round(ROI_MM / SPACING[0] / 2))
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < n:
        r, c = int(rng.integers(half, breast.shape[0] - half)), int(rng.integers(half, breast.shape[1] - half))
        if breast[r - half:r + half, c - half:c + half].all():
            centres.append((r, c))
    return centres


def _stage(name: str, npy: str) -> dict:
    """Run one stage in this (fresh) process; report time, CPU time, peak RSS and results."""
    from analysis.segmentation import HDoGParams, breast_mask, hdog_candidates

    pixels = np.load(npy)
    baseline = peak_rss_mb()
    out: dict = {"baseline_rss_mb": round(baseline, 1)}

    def clock(fn, repeat=1):
        walls, cpus, result = [], [], None
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            result = fn()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        out["seconds"] = round(statistics.median(walls), 3)
        out["seconds_all"] = [round(w, 3) for w in walls]
        out["cpu_seconds"] = round(statistics.median(cpus), 3)
        return result

    if name == "breast_mask":
        mask = clock(lambda: breast_mask(pixels, SPACING), repeat=3)
        out["fraction_of_image"] = round(float(mask.mean()), 4)
    elif name == "hdog_whole_breast":
        found = clock(lambda: hdog_candidates(pixels, SPACING), repeat=2)
        out.update(candidates=len(found), computed_boxes=[list(b) for b in found.boxes])
        out["_labels"], out["_peaks"] = found.labels, found.peaks
    elif name == "hdog_whole_image":
        found = clock(lambda: hdog_candidates(pixels, SPACING, np.ones(pixels.shape, bool)), repeat=2)
        out.update(candidates=len(found), peaks=len(found.peaks))
        out["_labels"] = found.labels
    elif name == "hdog_roi_15mm":
        region = _roi_mask(pixels.shape)
        found = clock(lambda: hdog_candidates(pixels, SPACING, region), repeat=7)
        out.update(candidates=len(found), computed_boxes=[list(b) for b in found.boxes],
                   computed_pixels=found.computed_pixels)
        out["_labels"] = found.labels
    elif name == "hdog_roi_15mm_random":
        breast = breast_mask(pixels, SPACING)
        seconds, crops, found_pixels, centres = [], [], [], _random_centres(breast)
        for centre in centres:
            region = _roi_mask(pixels.shape, centre)
            start = time.perf_counter()
            found = hdog_candidates(pixels, SPACING, region)
            seconds.append(time.perf_counter() - start)
            crops.append(found.computed_pixels)
            found_pixels.append(np.flatnonzero(found.labels))
        out.update(rois=len(centres), seconds_median=round(statistics.median(seconds), 3),
                   seconds_p90=round(float(np.percentile(seconds, 90)), 3), seconds_max=round(max(seconds), 3),
                   computed_pixels_median=int(statistics.median(crops)),
                   roi_pixels=int(_roi_mask(pixels.shape).sum()))
        out["_centres"], out["_pixels"] = centres, found_pixels
    elif name.startswith("reference"):
        params = HDoGParams()
        dtype = np.float64 if name.endswith("64") else np.float32
        mask, peaks, prune = clock(lambda: reference_hdog(
            pixels, params.min_sigma_mm / SPACING[0], params.max_sigma_mm / SPACING[0], dtype=dtype))
        out["prune_blobs_seconds_not_included"] = round(prune, 3)
        out["peaks"] = len(peaks)
        out["_mask"] = mask
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["peak_rss_above_baseline_mb"] = round(out["peak_rss_mb"] - baseline, 1)
    return out


def _run(name: str, npy: str) -> dict:
    return run_stage(_stage, name, npy)


# --------------------------------------------------------------------------- agreement

def _agreement(ours_labels: np.ndarray, reference_mask: np.ndarray) -> dict:
    from scipy import ndimage

    ours = ours_labels > 0
    ref_labels, n_ref = ndimage.label(reference_mask)
    n_ours = int(ours_labels.max())
    both = int((ours & reference_mask).sum())
    # a component is identical when its pixel set is exactly a component of the other
    same = 0
    sizes_ref = np.bincount(ref_labels.ravel())
    sizes_ours = np.bincount(ours_labels.ravel())
    for label, box in enumerate(ndimage.find_objects(ours_labels), start=1):
        if box is None:
            continue
        theirs = np.unique(ref_labels[box][ours_labels[box] == label])
        if theirs.size == 1 and theirs[0] > 0 and sizes_ref[theirs[0]] == sizes_ours[label]:
            same += 1
    return {
        "identical_masks": bool(np.array_equal(ours, reference_mask)),
        "pixels_ours": int(ours.sum()), "pixels_reference": int(reference_mask.sum()),
        "pixels_differing": int((ours ^ reference_mask).sum()),
        "dice": round(2 * both / max(int(ours.sum()) + int(reference_mask.sum()), 1), 6),
        "candidates_ours": n_ours, "candidates_reference": int(n_ref),
        "candidates_identical": same,
        "candidates_identical_fraction": round(same / max(n_ours, n_ref, 1), 6),
    }


def main() -> None:
    import pydicom

    sys.path.insert(0, str(ROOT / "tests"))
    from dicom_factory import rewrap_as_mg

    from analysis.dicom_input import load_image
    from analysis.segmentation import HDoGParams, working_factors

    figures: dict = {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    if not MG1.exists():
        print(f"skipped: {MG1} not found (the interop fixtures ship in shared/ beside the repository)")
        return
    image = load_image(rewrap_as_mg(pydicom.dcmread(MG1)))
    assert image.pixel_spacing_mm == SPACING
    params = HDoGParams()
    pp = params.to_pixels(SPACING)
    figures.update(image="NEMA WG04 MG1_J2KI.dcm (DDSM film, re-labelled MG)", shape=list(image.shape),
                   spacing_mm=list(SPACING), spacing_note="Spatial Resolution (0018,1050) = .05; DDSM Lumisys 50 um",
                   sigmas_px=[round(s[0], 4) for s in pp.sigmas], crop_margin_px=pp.margin[0],
                   breast_mask_factor=working_factors(SPACING)[0], roi_mm=ROI_MM, roi_centre_px=list(ROI_CENTRE))

    with tempfile.TemporaryDirectory() as tmp:
        npy = str(Path(tmp) / "mg1.npy")
        np.save(npy, image.pixels)
        del image
        stages = {name: _run(name, npy) for name in (
            "breast_mask", "hdog_roi_15mm", "hdog_roi_15mm_random", "hdog_whole_breast", "hdog_whole_image",
            "reference_float32", "reference_float64")}

    for name, result in stages.items():
        figures[name] = {k: v for k, v in result.items() if not k.startswith("_")}
    ref = stages["reference_float64"]["seconds"]
    figures["speedup_whole_image_vs_reference_float64"] = round(ref / stages["hdog_whole_image"]["seconds"], 2)
    figures["speedup_whole_breast_vs_reference_float64"] = round(ref / stages["hdog_whole_breast"]["seconds"], 2)
    figures["memory_ratio_whole_image_vs_reference_float64"] = round(
        stages["reference_float64"]["peak_rss_above_baseline_mb"]
        / max(stages["hdog_whole_image"]["peak_rss_above_baseline_mb"], 1), 2)

    whole = stages["hdog_whole_image"]["_labels"]
    figures["agreement_whole_image_vs_reference_float32"] = _agreement(whole, stages["reference_float32"]["_mask"])
    figures["agreement_whole_image_vs_reference_float64"] = _agreement(whole, stages["reference_float64"]["_mask"])

    # ROI mode against the whole-breast run: the candidates with a peak in the ROI, pixel for pixel
    breast_labels, breast_peaks = stages["hdog_whole_breast"]["_labels"], stages["hdog_whole_breast"]["_peaks"]
    region = _roi_mask(breast_labels.shape)
    wanted = np.unique(breast_peaks["label"][region[breast_peaks["row"], breast_peaks["col"]]])
    roi_labels = stages["hdog_roi_15mm"]["_labels"]
    figures["agreement_roi_vs_whole_breast"] = {
        "candidates_expected": int(wanted.size), "candidates_roi": int(roi_labels.max()),
        "identical_masks": bool(np.array_equal(roi_labels > 0, np.isin(breast_labels, wanted))),
    }
    exact = 0
    for centre, pixels in zip(stages["hdog_roi_15mm_random"]["_centres"], stages["hdog_roi_15mm_random"]["_pixels"]):
        region = _roi_mask(breast_labels.shape, centre)
        wanted = np.unique(breast_peaks["label"][region[breast_peaks["row"], breast_peaks["col"]]])
        exact += bool(np.array_equal(pixels, np.flatnonzero(np.isin(breast_labels, wanted))))
    figures["agreement_random_rois_vs_whole_breast"] = {
        "rois": len(stages["hdog_roi_15mm_random"]["_centres"]), "identical": exact}
    figures["hdog_whole_breast_share_of_10s_budget"] = round(
        (stages["hdog_whole_breast"]["seconds"]) / 10.0, 3)
    write_results("bench_hdog", figures)


if __name__ == "__main__":
    main()
