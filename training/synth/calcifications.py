"""Individual calcification particles: shapes, physical contrast, rendering.

A particle is described in millimetres (:class:`Particle`) and rendered at the
image's pixel spacing with partial-volume averaging (the projected thickness is
evaluated on a 5 x 5 sub-pixel grid and averaged per pixel) followed by the
imaging system's blur (detector + focal spot, Gaussian sigma 0.04 mm); amorphous
particles get an extra "haze" blur (their margins are indistinct).

Contrast model (log-domain, what a For Presentation image approximately is):
a particle adds ``CALC_GAIN * mu * t(x, y)`` display units, where ``t`` is the
projected thickness in mm along the beam (a sphere, irregular blob or cylinder)
and ``mu`` its attenuation excess over breast tissue per mm. Dense punctate
calcifications have mu ~ 1/mm, amorphous ones (less mineralised, hazy) ~ 0.7/mm,
so at equal size amorphous particles have lower contrast and, being
smaller and blurrier, much lower peaks.

Coordinates: continuous pixel coordinates (x = column, y = row) with the top-left
corner of the top-left pixel at (0, 0), i.e. pixel (r, c) covers
[c, c+1) x [r, r+1) and its centre is (c + 0.5, r + 0.5) -- the convention of
DICOM GSPS PIXEL units.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

CALC_GAIN = 700.0  # display units per mm of excess attenuation (mu * t)
SYSTEM_BLUR_MM = 0.04  # sigma of detector + focal-spot blur
SUPERSAMPLE = 5

# per type: median size (mm), size range (mm), mu range (1/mm), thickness / size range,
# irregularity multiplier, haze sigma range (mm)
TYPE_PROPERTIES = {
    "amorphous": dict(median=0.25, lo=0.10, hi=0.50, mu=(0.55, 0.85), thick=(0.6, 1.0),
                      irregular=0.6, haze=(0.02, 0.05)),
    "punctate": dict(median=0.35, lo=0.15, hi=0.50, mu=(0.9, 1.2), thick=(0.7, 1.0),
                     irregular=0.25, haze=(0.0, 0.0)),
    "fine_pleomorphic": dict(median=0.30, lo=0.10, hi=0.60, mu=(0.8, 1.1), thick=(0.5, 0.9),
                             irregular=1.5, haze=(0.0, 0.0)),
    "fine_linear_branching": dict(median=0.18, lo=0.10, hi=0.35, mu=(1.0, 1.3), thick=(1.0, 1.0),
                        irregular=1.0, haze=(0.0, 0.0)),
}


@dataclass
class Particle:
    """One calcification. Lengths in mm, position in continuous pixel coordinates.

    ``diameter_mm``: blobs: equivalent-circle diameter of the projected shape;
    linear particles: the width. ``length_mm``: linear particles only (main branch).
    ``harmonics``: (k, amplitude, phase) of the boundary radius of a blob.
    ``segments``: linear particles, (x0, y0, x1, y1) in mm relative to the centre.
    """

    kind: str
    x: float = 0.0
    y: float = 0.0
    diameter_mm: float = 0.3
    thickness_mm: float = 0.3
    mu_per_mm: float = 1.0
    haze_mm: float = 0.0
    length_mm: float = 0.0
    harmonics: list = field(default_factory=list)
    segments: list = field(default_factory=list)

    @property
    def radius_mm(self) -> float:
        """Radius of a disc enclosing the particle (mm)."""
        if self.kind == "fine_linear_branching":
            reach = max((np.hypot(s[0], s[1]), np.hypot(s[2], s[3])) for s in self.segments)
            return float(max(reach)) + self.diameter_mm / 2
        amp = sum(abs(a) for _, a, _ in self.harmonics)
        return self.diameter_mm / 2 * (1 + amp)

    @property
    def peak_contrast(self) -> float:
        """Contrast (display units) at the thickest point before any blur."""
        return CALC_GAIN * self.mu_per_mm * self.thickness_mm


def make_particle(kind: str, rng: np.random.Generator, size_cv: float, irregularity: float) -> Particle:
    """Draw one particle of ``kind`` with the cluster's size variability (coefficient of
    variation of the diameter) and shape irregularity (boundary harmonic amplitude)."""
    props = TYPE_PROPERTIES[kind]
    sigma_log = np.sqrt(np.log1p(size_cv ** 2))
    d = float(np.clip(props["median"] * np.exp(rng.normal(0, sigma_log)), props["lo"], props["hi"]))
    p = Particle(kind=kind, diameter_mm=d, mu_per_mm=float(rng.uniform(*props["mu"])))
    p.haze_mm = float(rng.uniform(*props["haze"]))
    irr = irregularity * props["irregular"]
    if kind == "fine_linear_branching":
        length = float(rng.uniform(0.6, 2.5) * np.exp(rng.normal(0, sigma_log)))
        angle = rng.uniform(0, np.pi)
        u = np.array([np.cos(angle), np.sin(angle)]) * length / 2
        p.length_mm = length
        p.segments = [(-u[0], -u[1], u[0], u[1])]
        n_branches = int(rng.random() < 0.2 + irr) + int(rng.random() < irr / 2)
        for _ in range(n_branches):
            t = rng.uniform(-0.3, 0.4)
            bx, by = u[0] * t * 2, u[1] * t * 2
            ba = angle + rng.choice([-1, 1]) * rng.uniform(0.45, 0.9)
            bl = length * rng.uniform(0.3, 0.6)
            p.segments.append((bx, by, bx + np.cos(ba) * bl, by + np.sin(ba) * bl))
        p.thickness_mm = d  # cylinder: thickness = width
    else:
        p.harmonics = [(k, float(rng.normal(0, irr / k)), float(rng.uniform(0, 2 * np.pi)))
                       for k in (2, 3, 4, 5)]
        p.thickness_mm = d * float(rng.uniform(*props["thick"]))
    return p


def _thickness(p: Particle, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Projected thickness (mm) at offsets dx, dy (mm) from the particle centre."""
    if p.kind == "fine_linear_branching":
        t = np.zeros(dx.shape, dtype=np.float32)
        half = p.diameter_mm / 2
        for x0, y0, x1, y1 in p.segments:
            vx, vy = x1 - x0, y1 - y0
            L2 = vx * vx + vy * vy
            s = np.clip(((dx - x0) * vx + (dy - y0) * vy) / max(L2, 1e-12), 0, 1)
            d2 = (dx - x0 - s * vx) ** 2 + (dy - y0 - s * vy) ** 2
            t = np.maximum(t, p.thickness_mm * np.sqrt(np.clip(1 - d2 / half ** 2, 0, None)))
        return t
    rho = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    r = np.ones_like(rho)
    for k, a, ph in p.harmonics:
        r += a * np.cos(k * theta + ph)
    r = np.clip(r, 0.35, None)
    # normalise so the projected area equals that of a disc of diameter d
    grid = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    rg = np.ones_like(grid)
    for k, a, ph in p.harmonics:
        rg += a * np.cos(k * grid + ph)
    norm = np.sqrt(np.mean(np.clip(rg, 0.35, None) ** 2))
    R = (p.diameter_mm / 2) * r / norm
    return (p.thickness_mm * np.sqrt(np.clip(1 - (rho / R) ** 2, 0, None))).astype(np.float32)


@dataclass
class Rendered:
    """A rendered particle: ``contribution`` (display units) and ``coverage`` (fraction
    of each pixel inside the particle) on the pixel window starting at (row0, col0)."""

    row0: int
    col0: int
    contribution: np.ndarray
    coverage: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        m = self.coverage >= 0.5
        if not m.any():  # a particle smaller than half a pixel still owns its best pixel
            m = self.coverage >= self.coverage.max()
            m &= self.coverage > 0
        return m


def render_particle(p: Particle, spacing_mm: float, gain: float = CALC_GAIN) -> Rendered:
    """Render ``p`` at ``spacing_mm`` (mm per pixel): partial volume on a 5x5 sub-pixel
    grid, then system blur (+ haze), in a window large enough for the blur tails."""
    s = SUPERSAMPLE
    sigma_px = np.hypot(SYSTEM_BLUR_MM, p.haze_mm) / spacing_mm
    half = int(np.ceil(p.radius_mm / spacing_mm + 3 * sigma_px + 2))
    r0 = int(np.floor(p.y)) - half
    c0 = int(np.floor(p.x)) - half
    n = 2 * half + 1
    sub = (np.arange(n * s, dtype=np.float32) + 0.5) / s  # sub-pixel centres in window pixels
    dy = ((r0 + sub) - p.y)[:, None] * spacing_mm
    dx = ((c0 + sub) - p.x)[None, :] * spacing_mm
    t = _thickness(p, dx, dy)
    pv = t.reshape(n, s, n, s).mean(axis=(1, 3))
    coverage = (t > 0).reshape(n, s, n, s).mean(axis=(1, 3)).astype(np.float32)
    contribution = ndi.gaussian_filter(pv * np.float32(gain * p.mu_per_mm), sigma_px, mode="constant")
    return Rendered(r0, c0, contribution.astype(np.float32), coverage)


def paste(image: np.ndarray, labels: np.ndarray | None, best_cov: np.ndarray | None,
          rendered: Rendered, label: int) -> tuple[int, int, int, int]:
    """Add ``rendered`` into ``image`` (and its mask into ``labels`` where it covers more of a
    pixel than any particle pasted before). Returns the clipped window (r0, r1, c0, c1)."""
    h, w = rendered.contribution.shape
    r0, c0 = rendered.row0, rendered.col0
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, image.shape[0]), min(c0 + w, image.shape[1])
    if rr1 <= rr0 or cc1 <= cc0:
        return rr0, rr0, cc0, cc0
    sr = slice(rr0 - r0, rr1 - r0)
    sc = slice(cc0 - c0, cc1 - c0)
    image[rr0:rr1, cc0:cc1] += rendered.contribution[sr, sc]
    if labels is not None:
        cov = rendered.coverage[sr, sc]
        mine = rendered.mask[sr, sc] & (cov > best_cov[rr0:rr1, cc0:cc1])
        labels[rr0:rr1, cc0:cc1][mine] = label
        best_cov[rr0:rr1, cc0:cc1][mine] = cov[mine]
    return rr0, rr1, cc0, cc1
