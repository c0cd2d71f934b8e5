"""Curvilinear structures: the random-walk curves ducts and vessels are drawn with, and the sharp
structures of the ``processed`` tissue model: Cooper's ligaments and thin vessels.

On real For Presentation mammograms most false calcification candidates sit on thin bright
curvilinear structures (ligaments, vessel walls and crossings, the skin line) that the smooth
half-resolution anatomy of :mod:`training.synth.anatomy` lacks. These are drawn at full
resolution (their width, 0.2-0.8 mm, is a few pixels) with the same random-walk curves as
the ducts and vessels. Lengths and widths in mm, converted with the pixel spacing.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree


def draw_curves(shape: tuple[int, int], spacing_mm: float, rng: np.random.Generator,
                starts: np.ndarray, headings: np.ndarray, lengths_mm: np.ndarray,
                curl: float, branch_p: float, mask: np.ndarray) -> tuple[np.ndarray, list]:
    """Rasterise random smooth curves (random walks of the heading).

    ``starts`` (n, 2) in pixels (row, col); ``headings`` radians; step 0.5 pixel.
    Curves stop at the mask edge. Returns (float32 image with 1 where a curve
    passes, list of (root index, (k, 2) points), one per curve or branch).
    """
    out = np.zeros(shape, dtype=np.float32)
    paths: list[np.ndarray] = []
    step_px = 0.5
    queue = [(s, h, l, k) for k, (s, h, l) in enumerate(zip(starts, headings, lengths_mm))]
    guard = 0
    while queue and guard < 400:
        guard += 1
        (r0, c0), heading, length_mm, root = queue.pop()
        n = int(length_mm / spacing_mm / step_px)
        if n < 2:
            continue
        dh = np.cumsum(rng.normal(0.0, curl, n)) * 0.3
        dh = ndi.gaussian_filter1d(dh, 8.0, mode="nearest")
        angles = heading + dh
        rr = r0 + np.cumsum(np.sin(angles)) * step_px
        cc = c0 + np.cumsum(np.cos(angles)) * step_px
        ri = np.round(rr).astype(np.int64)
        ci = np.round(cc).astype(np.int64)
        ok = (ri >= 0) & (ri < shape[0]) & (ci >= 0) & (ci < shape[1])
        stop = np.argmin(ok) if not ok.all() else n
        ri, ci = ri[:stop], ci[:stop]
        if ri.size == 0:
            continue
        inside = mask[ri, ci]
        stop = np.argmin(inside) if not inside.all() else ri.size
        ri, ci = ri[:stop], ci[:stop]
        out[ri, ci] = 1.0
        paths.append((root, np.stack([rr[:stop], cc[:stop]], axis=1)))
        if branch_p > 0 and ri.size > 20 and rng.random() < branch_p:
            k = int(rng.integers(ri.size // 4, ri.size * 3 // 4))
            side = rng.choice([-1.0, 1.0])
            queue.append(((float(ri[k]), float(ci[k])), float(angles[k] + side * rng.uniform(0.3, 0.8)),
                          0.6 * (ri.size - k) * step_px * spacing_mm, root))
    return out, paths


def crossings(paths: list[tuple[int, np.ndarray]], radius_px: float) -> list[tuple[float, float]]:
    """Centres of places where curves of two different vessels come within ``radius_px``
    (a branch meeting its own parent is not a crossing)."""
    found: list[tuple[float, float]] = []
    for j, (root, pts) in enumerate(paths):
        others = [p for r, p in paths[:j] if r != root and len(p)]
        if not others or not len(pts):
            continue
        tree = cKDTree(np.concatenate(others))
        near = np.array([len(x) > 0 for x in tree.query_ball_point(pts, radius_px)])
        if near.any():
            lab, n = ndi.label(near)
            for k in range(1, n + 1):
                found.append(tuple(float(v) for v in pts[lab == k].mean(axis=0)))
    return found


LIGAMENTS_PER_100_CM2 = (60, 110)   # Cooper's ligaments drawn per 100 cm² of breast
LIGAMENT_WIDTH_MM = (0.2, 0.45)     # FWHM
LIGAMENT_GAIN = (50.0, 120.0)       # display units at the centre line
LIGAMENT_LENGTH_MM = (6.0, 30.0)
VESSELS = (3, 7)                    # extra thin vessels per breast
VESSEL_WIDTH_MM = (0.5, 1.0)
VESSEL_GAIN = (80.0, 160.0)


def _line_image(curves: np.ndarray, width_mm: float, spacing_mm: float, gain: float) -> np.ndarray:
    """Rasterised centre lines blurred to a Gaussian profile of FWHM ``width_mm`` peaking at ``gain``."""
    sig = max(width_mm / spacing_mm / 2.355, 0.5)
    return ndi.gaussian_filter(curves, sig, truncate=3.0) * np.float32(np.sqrt(2 * np.pi) * sig * gain)


def sharp_structures(shape: tuple[int, int], spacing_mm: float, breast: np.ndarray, depth_mm: np.ndarray,
                     nipple_rc: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Cooper's ligaments and thin vessels (display-unit increments, float32, ``shape``) and the
    (row, col) of vessel crossings (bright spots, recorded as ``vessel_crossing`` distractors).

    Ligaments: short arcs running roughly parallel to the skin (they tether the gland to it),
    mostly in the outer 25 mm; vessels: long, thin, meandering from the chest wall.
    """
    area_cm2 = float(breast.sum()) * spacing_mm ** 2 / 100.0
    n_lig = int(rng.integers(*LIGAMENTS_PER_100_CM2) * area_cm2 / 100.0)
    stride = 4
    zone = breast[::stride, ::stride] & (depth_mm[::stride, ::stride] > 1.5) & (depth_mm[::stride, ::stride] < 25.0)
    cells = np.argwhere(zone)
    out = np.zeros(shape, dtype=np.float32)
    if n_lig and len(cells):
        starts = (cells[rng.integers(len(cells), size=n_lig)] * stride).astype(float)
        # heading along the skin: perpendicular to the direction towards the nipple, +- 35 degrees
        nr, nc = nipple_rc
        radial = np.arctan2(starts[:, 0] - nr, starts[:, 1] - nc)
        headings = radial + np.pi / 2 * rng.choice([-1.0, 1.0], n_lig) + rng.normal(0, 0.6, n_lig)
        lines, _ = draw_curves(shape, spacing_mm, rng, starts, headings,
                                rng.uniform(*LIGAMENT_LENGTH_MM, n_lig), 0.25, 0.3, breast)
        out += _line_image(lines, rng.uniform(*LIGAMENT_WIDTH_MM), spacing_mm, rng.uniform(*LIGAMENT_GAIN))
    n_ves = int(rng.integers(*VESSELS))
    rows = shape[0]
    r0 = rng.uniform(0.1, 0.9, n_ves) * rows
    c0 = np.ones(n_ves)
    for i in range(n_ves):
        inside = np.nonzero(breast[int(r0[i])])[0]
        c0[i] = inside.min() + 1 if inside.size else shape[1] / 2
    vessels, paths = draw_curves(shape, spacing_mm, rng, np.stack([r0, c0], axis=1),
                                  rng.normal(0, 0.6, n_ves), rng.uniform(40, 140, n_ves), 0.08, 0.5, breast)
    width = rng.uniform(*VESSEL_WIDTH_MM)
    out += _line_image(vessels, width, spacing_mm, rng.uniform(*VESSEL_GAIN))
    return out, crossings(paths, width / spacing_mm / 2)
