"""A synthetic calcification cluster for tests and benchmarks (not a simulator of mammograms).

A textured background (smoothed noise, a slow gradient, pixel noise) on the 12-bit scale,
``n_calcs`` non-overlapping disc-shaped calcifications of 0.1-0.5 mm diameter with random
sub-pixel centres (so the smallest cover 1-2 pixels), inside a square ROI.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def synthetic_roi(n_calcs: int = 150, size_mm: float = 28.0, roi_mm: float = 20.0,
                  spacing: float = 0.07, seed: int = 0, diameter_mm=(0.1, 0.5)):
    """(pixels float32 in [0, 1] (12-bit /4095), roi_mask bool, labels int32 1..n_calcs)."""
    rng = np.random.default_rng(seed)
    n = int(round(size_mm / spacing))
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n)), 4.0)
    noise /= noise.std()
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    img = 1400 + 120 * noise + 300 * (xx / n) + 40 * rng.standard_normal((n, n))
    margin = (size_mm - roi_mm) / 2 / spacing
    lo, hi = margin, n - margin
    roi = (yy >= lo) & (yy < hi) & (xx >= lo) & (xx < hi)
    labels = np.zeros((n, n), np.int32)
    centres: list[tuple[float, float, float]] = []
    tries = 0
    while len(centres) < n_calcs:
        tries += 1
        if tries > 200 * n_calcs:
            raise ValueError(f"cannot place {n_calcs} calcifications in {roi_mm} mm")
        r_px = rng.uniform(*diameter_mm) / 2 / spacing
        cy, cx = rng.uniform(lo + 3, hi - 3, size=2)
        if any((cy - y) ** 2 + (cx - x) ** 2 < (r_px + rr + 3) ** 2 for y, x, rr in centres):
            continue
        y0, y1 = int(cy - r_px - 4), int(cy + r_px + 5)
        x0, x1 = int(cx - r_px - 4), int(cx + r_px + 5)
        ly, lx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        d2 = (ly - cy) ** 2 + (lx - cx) ** 2
        disc = d2 <= max(r_px, 0.5) ** 2
        if not disc.any():
            continue
        centres.append((cy, cx, r_px))
        labels[y0:y1, x0:x1][disc] = len(centres)
        prof = np.exp(-d2 / (2 * max(r_px, 0.7) ** 2))
        img[y0:y1, x0:x1] += rng.uniform(300, 900) * prof * disc + 150 * prof
    pixels = (np.clip(np.rint(img), 0, 4095) / 4095.0).astype(np.float32)
    return pixels, roi, labels
