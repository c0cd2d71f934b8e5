"""Feature extraction speed on one synthetic ROI with 150 calcifications.

Synthetic ROI: 12-bit, 0.07 mm pixels, a textured background (smoothed noise plus a
slow gradient), 150 disc-like calcifications of 0.1-0.5 mm diameter (sub-pixel centres,
so the smallest are 1-2 pixels) in a 20 x 20 mm ROI inside a 28 x 28 mm image.

Figures: seconds per ROI and per calcification, by feature family (serial, one
process), the same ROI with a pool of 2 worker processes, peak memory, and two
references measured in the same run: the naive pyradiomics call on the uncropped
image (per object, a few objects), and a call on a full-field 2560 x 3328 image.

    .venv/bin/python -m bench.bench_features
"""
from __future__ import annotations

import os
import time

import numpy as np
from scipy import ndimage

from analysis.features.synthetic import synthetic_roi
from bench.common import peak_rss_mb, timed, write_results

SPACING = 0.07
BITS = 12


def main() -> None:
    from analysis.features import extract_roi_features, feature_pool
    from analysis.features.objects import padded_box, stored_values
    from analysis.features.pyrad import radiomics_rows

    figures: dict = {"cores": os.cpu_count(), "spacing_mm": SPACING, "bits_stored": BITS}
    pixels, roi, labels = synthetic_roi()
    figures["image_shape"] = list(pixels.shape)
    figures["n_calcifications"] = int(labels.max())

    # warm-up (imports, extractor construction) on a tiny ROI, not timed
    extract_roi_features(pixels[:200, :200], (SPACING, SPACING), BITS, None, labels[:200, :200])

    with timed(figures, "serial_seconds_per_roi"):
        feats = extract_roi_features(pixels, (SPACING, SPACING), BITS, roi, labels)
    n = feats.n_objects
    figures["n_objects_in_roi"] = n
    figures["unmeasurable_foreground"] = len(feats.foreground.unmeasurable)
    figures["unmeasurable_background"] = len(feats.background.unmeasurable)
    figures["serial_seconds_per_calcification"] = figures["serial_seconds_per_roi"] / n
    figures["serial_by_family_seconds"] = {k: round(v, 4) for k, v in feats.timings.items()}
    figures["serial_by_family_ms_per_calcification"] = {
        k: round(1000 * v / n, 3) for k, v in feats.timings.items() if k != "total"}

    with timed(figures, "pool2_startup_seconds"):
        pool = feature_pool(2)
        # force worker start-up (spawn + import + extractor) before timing
        list(pool.map(abs, [1, 2]))
        pool.submit(radiomics_rows, [], (SPACING, SPACING), 25.0, True).result()
    try:
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            pfeats = extract_roi_features(pixels, (SPACING, SPACING), BITS, roi, labels, executor=pool)
            runs.append(time.perf_counter() - t0)
        figures["pool2_seconds_per_roi"] = min(runs)
        figures["pool2_seconds_per_calcification"] = min(runs) / n
        figures["pool2_timings"] = {k: round(v, 4) for k, v in pfeats.timings.items()}
        same = all(np.array_equal(getattr(feats, s).values, getattr(pfeats, s).values, equal_nan=True)
                   for s in ("foreground", "regionprops", "background"))
        figures["pool2_identical_to_serial"] = bool(same)
    finally:
        pool.shutdown()

    # Reference 1: the naive per-object call on the uncropped ROI image (few objects).
    sel = list(feats.labels[:5])
    stored = stored_values(pixels, (slice(None), slice(None)), BITS)
    tasks = [(stored, labels == l) for l in sel]
    vals, _, secs = radiomics_rows(tasks, (SPACING, SPACING), 25.0, True)
    figures["reference_uncropped_roi_image_seconds_per_object"] = secs / len(sel)
    cropped = []
    for l in sel:
        box = padded_box(ndimage.find_objects((labels == l).astype(np.int32))[0], (1, 1), pixels.shape)
        cropped.append((stored_values(pixels, box, BITS), (labels == l)[box]))
    cvals, _, csecs = radiomics_rows(cropped, (SPACING, SPACING), 25.0, True)
    figures["cropped_seconds_per_object_same_objects"] = csecs / len(sel)
    figures["uncropped_over_cropped_ratio"] = secs / csecs
    figures["uncropped_equals_cropped"] = bool(np.allclose(vals, cvals, rtol=1e-9, equal_nan=True))

    # Reference 2: one call on a full-field mammogram-sized image (one object).
    big = np.full((3328, 2560), 1400, np.float32)
    big[:pixels.shape[0], :pixels.shape[1]] = stored
    bmask = np.zeros(big.shape, bool)
    bmask[:pixels.shape[0], :pixels.shape[1]] = labels == sel[0]
    _, _, bsecs = radiomics_rows([(big, bmask)], (SPACING, SPACING), 25.0, True)
    figures["reference_full_field_seconds_per_object"] = bsecs
    figures["full_field_over_cropped_ratio"] = bsecs / (csecs / len(sel))
    figures["reference_naive_full_field_seconds_per_roi_estimate"] = bsecs * n * 2
    figures["naive_full_field_over_pool2_ratio"] = (
        figures["reference_naive_full_field_seconds_per_roi_estimate"] / figures["pool2_seconds_per_roi"])
    figures["target_seconds_per_roi"] = 4.0
    figures["target_met_serial"] = figures["serial_seconds_per_roi"] <= 4.0
    figures["target_met_pool2"] = figures["pool2_seconds_per_roi"] <= 4.0
    figures["peak_rss_mb"] = peak_rss_mb()
    write_results("bench_features", figures)


if __name__ == "__main__":
    main()
