"""Plane geometry of ROI shapes in PIXEL coordinates: areas, masks, distances.

Coordinates are the DICOM GSPS *PIXEL* convention (see :mod:`.roi_types`): a
point is (column, row) = (x, y) in pixels and the centre of pixel (r, c) is at
(c + 0.5, r + 0.5). A mask holds the pixels whose centre lies inside the shape.
Pure numpy: no DICOM here.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Ellipse(NamedTuple):
    """An ellipse in PIXEL coordinates: centre (x, y), unit vector of the first
    semi-axis, and the two semi-axis lengths (pixels)."""

    centre: np.ndarray
    axis: np.ndarray
    a: float
    b: float


def shoelace_area(points: np.ndarray) -> float:
    """Area enclosed by a polygon (implicitly closed), in the squared units of its points."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def ellipse_from_points(kind: str, points: np.ndarray) -> Ellipse:
    """The ellipse of a CIRCLE (centre, rim point) or ELLIPSE (major, then minor endpoints)."""
    if kind == "circle":
        radius = float(np.linalg.norm(points[1] - points[0]))
        return Ellipse(points[0], np.array([1.0, 0.0]), radius, radius)
    major = points[1] - points[0]
    a = float(np.linalg.norm(major)) / 2.0
    b = float(np.linalg.norm(points[3] - points[2])) / 2.0
    axis = major / (2.0 * a) if a > 0 else np.array([1.0, 0.0])
    return Ellipse((points[0] + points[1]) / 2.0, axis, a, b)


def inside_ellipse(ellipse: Ellipse, x, y):
    """Whether points (x, y) (PIXEL coordinates, arrays or scalars) lie in the ellipse."""
    dx, dy = x - ellipse.centre[0], y - ellipse.centre[1]
    ux, uy = ellipse.axis
    along = dx * ux + dy * uy
    across = -dx * uy + dy * ux
    return (along / ellipse.a) ** 2 + (across / ellipse.b) ** 2 <= 1.0


def ellipse_mask(ellipse: Ellipse, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies in the ellipse; only its bounding box is evaluated."""
    ux, uy = ellipse.axis
    half_x = np.hypot(ellipse.a * ux, ellipse.b * uy)
    half_y = np.hypot(ellipse.a * uy, ellipse.b * ux)
    cx, cy = ellipse.centre
    # Pixel index i has its centre at i + 0.5.
    c0, c1 = max(int(np.ceil(cx - half_x - 0.5)), 0), min(int(np.floor(cx + half_x - 0.5)), shape[1] - 1)
    r0, r1 = max(int(np.ceil(cy - half_y - 0.5)), 0), min(int(np.floor(cy + half_y - 0.5)), shape[0] - 1)
    mask = np.zeros(shape, dtype=bool)
    if c0 > c1 or r0 > r1:
        return mask
    rows, cols = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    mask[r0:r1 + 1, c0:c1 + 1] = inside_ellipse(ellipse, cols + 0.5, rows + 0.5)
    return mask


def polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies in the polygon (even-odd rule; an open polyline is closed implicitly).

    A scanline fill at the pixel-centre rows y = r + 0.5: skimage.draw.polygon tests
    every pixel of the bounding box against every edge, which takes seconds for
    the thousands of vertices of a freehand outline on a mammogram. Centres exactly
    on an edge: left and top edges are in, right and bottom edges out.
    """
    rows, columns = shape
    mask = np.zeros(shape, dtype=bool)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = max(int(np.ceil(low.min() - 0.5)), 0)
    last = min(int(np.floor(high.max() - 0.5)), rows - 1)
    # Bound the (rows x edges) work arrays to a few million entries.
    block = max(1, 2_000_000 // len(points))
    for start in range(first, last + 1, block):
        r = np.arange(start, min(start + block, last + 1))
        y = r[:, None] + 0.5
        # Half-open in y, so a vertex is counted once and horizontal edges never.
        crosses = (low <= y) & (y < high)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(crosses, x0 + (y - y0) * (x1 - x0) / (y1 - y0), np.inf)
        x.sort(axis=1)
        pairs = crosses.sum(axis=1) // 2
        row_index = np.repeat(np.arange(len(r)), pairs)
        rank = np.concatenate([np.arange(n) for n in pairs]) if pairs.any() else np.zeros(0, int)
        # Pixel c is in a span [x_in, x_out) when x_in <= c + 0.5 < x_out.
        enter = np.clip(np.ceil(x[row_index, 2 * rank] - 0.5), 0, columns).astype(int)
        leave = np.clip(np.ceil(x[row_index, 2 * rank + 1] - 0.5), 0, columns).astype(int)
        runs = np.zeros((len(r), columns + 1), dtype=np.int32)
        np.add.at(runs, (row_index, enter), 1)
        np.add.at(runs, (row_index, leave), -1)
        mask[r] = np.cumsum(runs[:, :columns], axis=1) > 0
    return mask


def distance_to_outline(points: np.ndarray, xy: np.ndarray) -> float:
    """Shortest distance (pixels) from a point to the closed outline through ``points``."""
    start, end = points, np.roll(points, -1, axis=0)
    edge = end - start
    length2 = np.maximum(np.einsum("ij,ij->i", edge, edge), 1e-12)
    t = np.clip(np.einsum("ij,ij->i", xy - start, edge) / length2, 0.0, 1.0)
    nearest = start + t[:, None] * edge
    return float(np.min(np.linalg.norm(nearest - xy, axis=1)))


def clip_to_image(points: np.ndarray, rows: int, columns: int) -> tuple[np.ndarray | None, bool]:
    """Clip a polygon (implicitly closed, (column, row) PIXEL points) to the image area
    [0, columns] x [0, rows] (Sutherland-Hodgman against the four edges).

    Every pixel centre lies inside the image area, so the clipped polygon encloses exactly
    the pixels the original one does (the mask is unchanged); only the outline drawn in the
    results differs. Returns ``(polygon, clipped)``: ``polygon`` None when nothing of the
    shape lies in the image (fewer than 3 vertices or no area left), ``clipped`` True when a
    vertex was outside.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.all(np.isfinite(pts)):
        return None, True
    inside = ((pts[:, 0] >= 0) & (pts[:, 0] <= columns) & (pts[:, 1] >= 0) & (pts[:, 1] <= rows)).all()
    if inside:
        return pts, False
    # (axis, bound, keep the side where coordinate >= bound (True) or <= bound (False))
    for axis, bound, above in ((0, 0.0, True), (0, float(columns), False), (1, 0.0, True), (1, float(rows), False)):
        if len(pts) == 0:
            break
        out = []
        for k in range(len(pts)):
            cur, prev = pts[k], pts[k - 1]
            cur_in = cur[axis] >= bound if above else cur[axis] <= bound
            prev_in = prev[axis] >= bound if above else prev[axis] <= bound
            if cur_in != prev_in:  # the edge crosses the bound: add the crossing point
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = prev + t * (cur - prev)
                cross[axis] = bound
                out.append(cross)
            if cur_in:
                out.append(cur)
        pts = np.array(out, dtype=np.float64).reshape(-1, 2)
    if len(pts) >= 2:  # drop repeated vertices the clipping made
        keep = np.any(np.abs(pts - np.roll(pts, 1, axis=0)) > 1e-9, axis=1)
        pts = pts[keep]
    if len(pts) < 3 or shoelace_area(pts) <= 1e-9:
        return None, True
    pts[:, 0] = np.clip(pts[:, 0], 0.0, float(columns))  # rounding at the crossings
    pts[:, 1] = np.clip(pts[:, 1], 0.0, float(rows))
    return pts, True
