"""Region outlines as a radiologist draws them around a cluster: loose, smooth, not
the convex hull. Coordinates are continuous pixel coordinates (x = column, y = row,
pixel (r, c) centred at (c + 0.5, r + 0.5)), the DICOM GSPS PIXEL convention.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RoiShape:
    """``graphic_type`` POLYLINE (closed: last point == first), CIRCLE (centre, a point on
    the circle) or ELLIPSE (major-axis end points, then minor-axis end points).
    ``points``: (k, 2) float (x, y) pixel coordinates as written to Graphic Data."""

    graphic_type: str
    points: np.ndarray

    def polygon(self, n: int = 72) -> np.ndarray:
        """The outline as a closed polygon (k, 2) (x, y), for masks and containment tests."""
        if self.graphic_type == "POLYLINE":
            return self.points
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        if self.graphic_type == "CIRCLE":
            c, p = self.points
            r = float(np.hypot(*(p - c)))
            return np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], axis=1)
        a0, a1, b0, b1 = self.points
        c = (a0 + a1) / 2
        ua, ub = (a1 - a0) / 2, (b1 - b0) / 2
        return c + np.cos(t)[:, None] * ua + np.sin(t)[:, None] * ub

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Pixels whose centres lie inside the outline."""
        from skimage.draw import polygon as fill

        poly = self.polygon()
        m = np.zeros(shape, dtype=bool)
        rr, cc = fill(poly[:, 1] - 0.5, poly[:, 0] - 0.5, shape)
        m[rr, cc] = True
        return m


def _support(points: np.ndarray, radii: np.ndarray, centre: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Support function of the union of discs in each direction, from ``centre``."""
    u = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return ((points - centre) @ u.T + radii[:, None]).max(axis=0)


def draw_outline(points_xy: np.ndarray, radii_px: np.ndarray, spacing_mm: float,
                 rng: np.random.Generator, shape: str, image_shape: tuple[int, int]) -> RoiShape:
    """Outline around particles at ``points_xy`` (x, y pixels) with enclosing radii
    ``radii_px``. The margin is 1.5-4 mm plus 15 % of the cluster size, the outline
    wobbles smoothly, and every particle is at least 1 mm inside it. ``shape``:
    "polyline", "circle" or "ellipse". Polyline points are clipped to the image; a
    circle or ellipse whose defining points would fall outside it becomes a polyline.
    """
    rows, cols = image_shape
    lo = (points_xy - radii_px[:, None]).min(axis=0)
    hi = (points_xy + radii_px[:, None]).max(axis=0)
    centre = (lo + hi) / 2 + rng.normal(0, 0.5 / spacing_mm, 2)
    size_px = float(np.max(hi - lo))
    margin = rng.uniform(1.5, 4.0) / spacing_mm + 0.15 * size_px
    min_gap = 1.0 / spacing_mm
    def inside_image(p: np.ndarray) -> bool:
        return bool(np.all((p[..., 0] >= 0) & (p[..., 0] <= cols) & (p[..., 1] >= 0) & (p[..., 1] <= rows)))

    if shape == "circle":
        r = float(np.max(np.hypot(*(points_xy - centre).T) + radii_px)) + margin
        pts = None
        for a in np.arange(8) * np.pi / 4:  # a point on the circle that is inside the image
            cand = np.array([centre, centre + r * np.array([np.cos(a), np.sin(a)])])
            if inside_image(cand):
                pts = cand
                break
        if pts is None:
            return draw_outline(points_xy, radii_px, spacing_mm, rng, "polyline", image_shape)
    elif shape == "ellipse":
        d = points_xy - centre
        if len(d) > 1 and np.ptp(d, axis=0).max() > 0:
            _, _, vt = np.linalg.svd(d - d.mean(axis=0), full_matrices=False)
            ua = vt[0]
        else:
            ua = np.array([1.0, 0.0])
        ub = np.array([-ua[1], ua[0]])
        pa, pb = np.abs(d @ ua) + radii_px, np.abs(d @ ub) + radii_px
        A, B = pa.max() + margin, pb.max() + margin
        k = float(np.max(np.hypot(pa / A, pb / B)))  # box corners may stick out
        A, B = A * max(k, 1.0) * 1.01, B * max(k, 1.0) * 1.01
        if B > A:
            A, B, ua, ub = B, A, ub, ua
        pts = np.array([centre - A * ua, centre + A * ua, centre - B * ub, centre + B * ub])
        if not inside_image(pts):  # GSPS PIXEL data must lie within the image
            return draw_outline(points_xy, radii_px, spacing_mm, rng, "polyline", image_shape)
    else:
        n = int(rng.integers(24, 41))
        ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
        h = _support(points_xy, radii_px, centre, ang)
        wobble = np.zeros(n)
        for k in (1, 2, 3):
            wobble += rng.normal(0, 0.06 / k) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
        # blend towards a rounder shape (people draw ovals, not hulls)
        r = 0.6 * h + 0.4 * h.max()
        r = np.maximum(r * (1 + wobble) + margin, h + min_gap)
        pts = centre + np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1)
        pts = np.vstack([pts, pts[:1]])
    if shape == "polyline":  # circles and ellipses are kept whole (placement leaves room)
        pts[:, 0] = np.clip(pts[:, 0], 0.0, float(cols))
        pts[:, 1] = np.clip(pts[:, 1], 0.0, float(rows))
    graphic = {"polyline": "POLYLINE", "circle": "CIRCLE", "ellipse": "ELLIPSE"}[shape]
    return RoiShape(graphic, pts.astype(np.float64))


def points_inside(poly_xy: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """Which points (x, y) lie inside the closed polygon (x, y)."""
    from matplotlib.path import Path

    return Path(poly_xy).contains_points(points_xy)
