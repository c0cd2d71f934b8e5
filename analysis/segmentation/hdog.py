"""HDoG candidate detection (HDoGReg step 2, docs/method.md §3.3) on crops, with parameters in mm.

The method, as HDoGReg's ``blob_detector_hdog`` + ``hessian_criterion`` (``hdogreg/image.py``)
computes it, with its published parameters (``pipeline_infer.sh``: min_sigma 1.18, max_sigma 3.1,
threshold 0.006, overlap 1.0, hessian_thr 1.4, all in pixels at 0.07 mm):

* sigmas ``s_i = s_0 * 1.6**i``, ``i = 0..k`` with ``k = int(log(s_max / s_0) / log(1.6)) + 1 = 3``;
  here ``s_0 = 0.0826 mm`` and ``s_max = 0.217 mm`` are converted with the image's spacing;
* ``DoG_i = (G(s_i) - G(s_{i+1})) * s_i / (s_{i+1} - s_i)`` for ``i = 0..k-1``, Gaussians as
  ``scipy.ndimage.gaussian_filter`` (reflect at the image border, truncated at 4 sigma);
* peaks: points of the (row, column, level) cube equal to the maximum of their 3x3x3
  neighbourhood (nearest-value padding) and above 0.006, as ``skimage.feature.peak_local_max``;
  HDoGReg's blob pruning with overlap 1.0 removes nothing, so there is none here;
* per level the Hessian of the DoG by ``np.gradient`` applied twice (central differences, so the
  second derivative spans 5 pixels), ``det = Hrr Hcc - Hcr Hrc``, ``tr = Hrr + Hcc``; a pixel is
  blob-like where ``tr < 0 and (det > 0 or |det| / (tr + 1e-20)^2 < 1.4)``. With ``tr < 0`` and
  ``det > 0`` the ratio is at most 1/4, so the rule is "bright, and not too saddle-shaped":
  ridges (one eigenvalue ~0) count as blob-like, saddles with a positive eigenvalue up to
  0.44 x the negative one too;
* blob-like pixels of each level are labelled with 4-connectivity; a peak at level ``i`` keeps
  the component of level ``i`` that contains it (a peak on a non-blob-like pixel keeps nothing);
  the candidate mask is the union over levels, labelled again with 4-connectivity.

A candidate is therefore a connected component of that union; the function returns those
that contain at least one peak inside ``region``. Everything else (peaks outside the region,
other candidates) only serves to make the returned ones identical to what the whole image gives.

Cropping is exact. The Gaussians of a crop equal the whole image's at pixels at least ``radius =
int(4 * s_max + 0.5)`` px from a crop edge inside the image; peaks need one more pixel and the
Hessian two more, so results are exact in the crop minus ``margin = radius + 2`` px (21 px at
0.07 mm, 29 px at 0.05 mm: 1.5 mm). Each crop is the bounding box of a part of the region grown by
that margin plus ``context_mm`` (5 mm); parts whose boxes overlap are merged when one box costs no
more than two. A candidate can still reach out of the exact zone (on dense tissue the union of
components chains over several mm): when a returned candidate overlaps or touches any component
(of any level) that touches the edge of the exact zone, the crop grows on that side (by margin +
context, then doubling) and only the new part is computed (DoGs and blob-like tests of the
previous crop are reused where exact), until no returned candidate does or the crop reaches the
image border. 5 mm of context makes a 15 mm ROI grow in about half the cases (1.6 crops on
average on NEMA's MG1). The test suite checks ROI results against whole-image results pixel for
pixel, including growth.

Speed: float32 throughout; the Gaussians are scipy's (they hold the GIL); the Hessian test runs
in 32-row blocks on two threads for crops over 1 Mpx (numpy releases the GIL), with np.gradient's
arithmetic reproduced exactly; peaks are tested only where DoG > threshold (a few % of pixels).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ._checks import image_array, require_finite, spacing_pair
from .breast_mask import breast_mask

_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
_BLOCK_ROWS = 32
_THREAD_MIN_PIXELS = 1_000_000

CANDIDATE_DTYPE = np.dtype([
    ("label", "<i4"),      # value in Candidates.labels
    ("row", "<f8"),        # centroid, image pixel coordinates
    ("col", "<f8"),
    ("area", "<i4"),       # pixels
    ("level", "<i2"),      # DoG level of the strongest peak (0 = finest)
    ("sigma_mm", "<f4"),   # s_level: the smaller sigma of that DoG pair
    ("dog", "<f4"),        # DoG value of the strongest peak
    ("peak_row", "<i4"),   # position of the strongest peak
    ("peak_col", "<i4"),
    ("n_peaks", "<i4"),    # peaks whose component makes up the candidate
])

PEAK_DTYPE = np.dtype([("label", "<i4"), ("row", "<i4"), ("col", "<i4"), ("level", "<i2"), ("dog", "<f4")])


@dataclass(frozen=True)
class PixelParams:
    """:class:`HDoGParams` converted to pixels for one spacing."""

    spacing_mm: tuple[float, float]
    sigmas: tuple[tuple[float, float], ...]   # (row, column) sigma in px of s_0 .. s_k
    dog_threshold: float
    hessian_threshold: float
    truncate: float
    radius: tuple[int, int]    # largest Gaussian kernel radius (px) per axis
    margin: tuple[int, int]    # radius + 2: width of the inexact border of a crop
    context: tuple[int, int]   # extra crop context (px) per axis

    @property
    def n_levels(self) -> int:
        return len(self.sigmas) - 1

    @property
    def aspect(self) -> float:
        """Row spacing / column spacing (1 for square pixels)."""
        return self.spacing_mm[0] / self.spacing_mm[1]


@dataclass(frozen=True)
class HDoGParams:
    """HDoG parameters; lengths in mm (defaults: HDoGReg's pixel values x 0.07 mm)."""

    min_sigma_mm: float = 1.18 * 0.07    # 0.0826 mm
    max_sigma_mm: float = 3.1 * 0.07     # 0.217 mm
    sigma_ratio: float = 1.6
    dog_threshold: float = 0.006         # on the [0, 1] image, scale-normalised DoG
    hessian_threshold: float = 1.4       # |det| / tr^2 below this counts as blob-like
    truncate: float = 4.0                # Gaussian kernels cut at this many sigmas (scipy default)
    context_mm: float = 5.0              # crop context beyond the filter margin (see below)

    def __post_init__(self):
        for name in ("min_sigma_mm", "max_sigma_mm", "sigma_ratio", "dog_threshold",
                     "hessian_threshold", "truncate", "context_mm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"HDoGParams.{name} must be a finite number, got {value!r}")
        if self.min_sigma_mm <= 0 or self.max_sigma_mm < self.min_sigma_mm:
            raise ValueError("HDoGParams: need 0 < min_sigma_mm <= max_sigma_mm")
        if self.sigma_ratio <= 1:
            raise ValueError("HDoGParams.sigma_ratio must be > 1")
        if self.truncate <= 0 or self.context_mm < 0 or self.hessian_threshold <= 0:
            raise ValueError("HDoGParams: truncate and hessian_threshold must be > 0, context_mm >= 0")

    @property
    def n_levels(self) -> int:
        """k: the number of DoG levels (3 with the defaults)."""
        return int(math.log(self.max_sigma_mm / self.min_sigma_mm) / math.log(self.sigma_ratio)) + 1

    @property
    def sigmas_mm(self) -> tuple[float, ...]:
        """s_0 .. s_k in mm (k + 1 values)."""
        return tuple(self.min_sigma_mm * self.sigma_ratio ** i for i in range(self.n_levels + 1))

    def to_pixels(self, spacing_mm) -> PixelParams:
        """The parameters in pixels for a (row, column) spacing in mm (or one number)."""
        spacing = spacing_pair(spacing_mm)
        # (s_0 / spacing) * ratio**i: the order of HDoGReg's sigma_list, so the kernels are identical
        sigmas = tuple(tuple(float((self.min_sigma_mm / sp) * self.sigma_ratio ** i) for sp in spacing)
                       for i in range(self.n_levels + 1))
        radius = tuple(int(self.truncate * sigmas[-1][axis] + 0.5) for axis in (0, 1))
        margin = tuple(r + 2 for r in radius)
        context = tuple(int(math.ceil(self.context_mm / sp)) for sp in spacing)
        return PixelParams(spacing_mm=spacing, sigmas=sigmas, dog_threshold=float(self.dog_threshold),
                           hessian_threshold=float(self.hessian_threshold), truncate=float(self.truncate),
                           radius=radius, margin=margin, context=context)


@dataclass(frozen=True, eq=False)
class Candidates:
    """HDoG candidates of one image.

    ``labels``: int32, the image's shape, 0 = background, 1..n = candidates (raster order).
    ``table``: structured array (:data:`CANDIDATE_DTYPE`), one row per label, sorted by label.
    ``peaks``: structured array (:data:`PEAK_DTYPE`): every peak whose component is part of a
    returned candidate, with that candidate's label.
    ``boxes``: the crops computed, (row0, row1, col0, col1), end-exclusive.
    """

    labels: np.ndarray
    table: np.ndarray
    params: HDoGParams
    spacing_mm: tuple[float, float]
    peaks: np.ndarray = field(default_factory=lambda: np.zeros(0, PEAK_DTYPE))
    boxes: tuple[tuple[int, int, int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.table)

    @property
    def mask(self) -> np.ndarray:
        return self.labels > 0

    @property
    def computed_pixels(self) -> int:
        """Pixels in the computed crops (overlaps counted twice)."""
        return sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in self.boxes)


# --------------------------------------------------------------------------- numerics

def _gradient(f: np.ndarray, axis: int) -> np.ndarray:
    """np.gradient(f, axis=axis) (unit spacing, edge_order=1), bit for bit, with fewer temporaries."""
    out = np.empty_like(f)
    n = f.shape[axis]

    def sl(start, stop):
        index = [slice(None)] * f.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    interior = out[sl(1, n - 1)]
    np.subtract(f[sl(2, n)], f[sl(0, n - 2)], out=interior)
    np.multiply(interior, 0.5, out=interior)  # == / 2.0 exactly
    np.subtract(f[sl(1, 2)], f[sl(0, 1)], out=out[sl(0, 1)])
    np.subtract(f[sl(n - 1, n)], f[sl(n - 2, n - 1)], out=out[sl(n - 1, n)])
    return out


def _blob_like_rows(dog: np.ndarray, a: int, b: int, c0: int, c1: int, threshold: float,
                    aspect: float, out: np.ndarray) -> None:
    """Blob-like test for rows [a, b), columns [c0, c1) of ``dog`` into ``out``; equal to
    HDoGReg's np.gradient-twice criterion computed on the whole of ``dog``."""
    rows, cols = dog.shape
    a0, b0 = max(a - 2, 0), min(b + 2, rows)
    d0, d1 = max(c0 - 2, 0), min(c1 + 2, cols)
    f = dog[a0:b0, d0:d1]
    g_r = _gradient(f, 0)
    g_c = _gradient(f, 1)
    keep = (slice(a - a0, b - a0), slice(c0 - d0, c1 - d0))
    h_rr = _gradient(g_r, 0)[keep]
    h_rc = _gradient(g_r, 1)[keep]
    h_cr = _gradient(g_c, 0)[keep]
    h_cc = _gradient(g_c, 1)[keep]
    if aspect != 1.0:  # derivatives per row spacing: scale the column derivatives
        h_cc *= np.float32(aspect * aspect)
        h_rc *= np.float32(aspect)
        h_cr *= np.float32(aspect)
    det = h_rr * h_cc
    det -= h_cr * h_rc
    trace = h_rr
    trace += h_cc
    concave = trace < 0
    np.greater(det, 0, out=out)
    trace += 1e-20
    np.square(trace, out=trace)
    np.abs(det, out=det)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(det, trace, out=det)
    out |= det < threshold
    out &= concave


def _blob_like(dog: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], threshold: float,
               aspect: float, pool: ThreadPoolExecutor | None) -> np.ndarray:
    out = np.empty((rows[1] - rows[0], cols[1] - cols[0]), bool)
    starts = range(rows[0], rows[1], _BLOCK_ROWS)

    def run(a):
        b = min(a + _BLOCK_ROWS, rows[1])
        _blob_like_rows(dog, a, b, cols[0], cols[1], threshold, aspect, out[a - rows[0]:b - rows[0]])

    if pool is None:
        for a in starts:
            run(a)
    else:
        list(pool.map(run, starts))
    return out


def _dogs(x: np.ndarray, pp: PixelParams) -> list[np.ndarray]:
    """DoG_0 .. DoG_{k-1} (float32), as HDoGReg: (G_i - G_{i+1}) * s_i / (s_{i+1} - s_i)."""
    def gauss(sigma):
        return ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=pp.truncate, output=np.float32)

    dogs = []
    current = gauss(pp.sigmas[0])
    for i in range(pp.n_levels):
        following = gauss(pp.sigmas[i + 1])
        s_i, s_next = pp.sigmas[i][0], pp.sigmas[i + 1][0]
        np.subtract(current, following, out=current)
        np.multiply(current, s_i, out=current)
        np.divide(current, s_next - s_i, out=current)
        dogs.append(current)
        current = following
    return dogs


def _peaks(dogs: list[np.ndarray], threshold: float, zone: tuple[int, int, int, int]) -> list[tuple]:
    """Per level (rows, cols, values) of the 3x3x3 maxima above ``threshold`` inside ``zone``
    (crop coordinates); neighbours beyond the crop edge take the edge value ('nearest')."""
    k = len(dogs)
    rows, cols = dogs[0].shape
    vr0, vr1, vc0, vc1 = zone
    found = []
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
    for i in range(k):
        r, c = np.nonzero(dogs[i][vr0:vr1, vc0:vc1] > threshold)
        r += vr0
        c += vc0
        values = dogs[i][r, c]
        for j in [i] + [j for j in (i - 1, i + 1) if 0 <= j < k]:
            for dr, dc in offsets:
                if j == i and dr == 0 and dc == 0:
                    continue
                neighbour = dogs[j][np.clip(r + dr, 0, rows - 1), np.clip(c + dc, 0, cols - 1)]
                ok = values >= neighbour
                if not ok.all():
                    r, c, values = r[ok], c[ok], values[ok]
        found.append((r, c, values))
    return found


# --------------------------------------------------------------------------- one crop

@dataclass
class _CropResult:
    box: tuple[int, int, int, int]          # the crop, image coordinates
    zone: tuple[int, int, int, int]         # exact zone, image coordinates
    wanted: np.ndarray                      # int32, zone-sized: the returned candidates, 1..n in raster order
    peaks: np.ndarray                       # PEAK_DTYPE, image coordinates, label 0
    grow: tuple[bool, bool, bool, bool]     # (top, bottom, left, right): must grow


@dataclass
class _Reuse:
    """What a grown crop can take over from the previous one (all exact where it is taken)."""

    box: tuple[int, int, int, int]
    dogs: list[np.ndarray]                  # box-sized
    zone: tuple[int, int, int, int]
    blobs: list[np.ndarray | None]          # zone-sized per level, None when not computed


def _rects_outside(outer, inner) -> list[tuple[int, int, int, int]]:
    """Up to 4 rectangles covering ``outer`` minus ``inner`` (``inner`` inside ``outer``)."""
    o0, o1, o2, o3 = outer
    i0, i1, i2, i3 = inner
    rects = [(o0, i0, o2, o3), (i1, o1, o2, o3), (i0, i1, o2, i2), (i0, i1, i3, o3)]
    return [r for r in rects if r[1] > r[0] and r[3] > r[2]]


def _crop_dogs(pixels, box, pp: PixelParams, previous: _Reuse | None) -> list[np.ndarray]:
    """DoGs of ``box``: exact wherever they are used (the zone plus 2 px), reusing the previous
    crop's DoGs where they are exact (away from its open edges by the kernel radius) and
    computing the rest from rectangles with their full kernel context."""
    rows, cols = pixels.shape
    r0, r1, c0, c1 = box
    rr, rc = pp.radius
    exact = None
    if previous is not None:
        o0, o1, o2, o3 = previous.box
        exact = (o0 + rr if o0 > 0 else o0, o1 - rr if o1 < rows else o1,
                 o2 + rc if o2 > 0 else o2, o3 - rc if o3 < cols else o3)
        if exact[0] >= exact[1] or exact[2] >= exact[3]:
            exact = None
    if exact is None:
        x = np.asarray(pixels[r0:r1, c0:c1], dtype=np.float32)
        require_finite(x, offset=(r0, c0))
        return _dogs(x, pp)
    dogs = [np.empty((r1 - r0, c1 - c0), np.float32) for _ in range(pp.n_levels)]
    e0, e1, e2, e3 = exact
    for new, old in zip(dogs, previous.dogs):
        new[e0 - r0:e1 - r0, e2 - c0:e3 - c0] = old[e0 - o0:e1 - o0, e2 - o2:e3 - o2]
    for a0, a1, b0, b1 in _rects_outside(box, exact):
        q0, q1, q2, q3 = max(a0 - rr, 0), min(a1 + rr, rows), max(b0 - rc, 0), min(b1 + rc, cols)
        x = np.asarray(pixels[q0:q1, q2:q3], dtype=np.float32)
        require_finite(x, offset=(q0, q2))
        for new, part in zip(dogs, _dogs(x, pp)):
            new[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = part[a0 - q0:a1 - q0, b0 - q2:b1 - q2]
    return dogs


def _zone_blobs(dog, box, zone, previous_zone, previous_blob, pp: PixelParams, pool) -> np.ndarray:
    """Blob-like test over ``zone`` (image coordinates), reusing the previous zone's."""
    r0, c0 = box[0], box[2]
    z0, z1, z2, z3 = zone
    if previous_blob is None:
        return _blob_like(dog, (z0 - r0, z1 - r0), (z2 - c0, z3 - c0), pp.hessian_threshold, pp.aspect, pool)
    blob = np.empty((z1 - z0, z3 - z2), bool)
    p0, p1, p2, p3 = previous_zone
    blob[p0 - z0:p1 - z0, p2 - z2:p3 - z2] = previous_blob
    for a0, a1, b0, b1 in _rects_outside(zone, previous_zone):
        blob[a0 - z0:a1 - z0, b0 - z2:b1 - z2] = _blob_like(
            dog, (a0 - r0, a1 - r0), (b0 - c0, b1 - c0), pp.hessian_threshold, pp.aspect, pool)
    return blob


def _analyze_crop(pixels: np.ndarray, region: np.ndarray, box: tuple[int, int, int, int],
                  pp: PixelParams, pool: ThreadPoolExecutor | None,
                  previous: _Reuse | None = None) -> tuple[_CropResult, _Reuse]:
    rows, cols = pixels.shape
    r0, r1, c0, c1 = box
    open_sides = (r0 > 0, r1 < rows, c0 > 0, c1 < cols)
    mr, mc = pp.margin
    vr0, vr1 = (mr if open_sides[0] else 0), (r1 - r0 - mr if open_sides[1] else r1 - r0)
    vc0, vc1 = (mc if open_sides[2] else 0), (c1 - c0 - mc if open_sides[3] else c1 - c0)
    zone_image = (r0 + vr0, r0 + vr1, c0 + vc0, c0 + vc1)
    shape = (vr1 - vr0, vc1 - vc0)
    no_peaks = np.zeros(0, PEAK_DTYPE)

    dogs = _crop_dogs(pixels, box, pp, previous)
    reuse = _Reuse(box, dogs, zone_image, [None] * pp.n_levels)
    peaks = _peaks(dogs, pp.dog_threshold, (vr0, vr1, vc0, vc1))
    if not any(len(p[0]) for p in peaks):
        return _CropResult(box, zone_image, np.zeros(shape, np.int32), no_peaks, (False,) * 4), reuse

    level_labels, kept_peaks = [], []
    union = np.zeros(shape, bool)
    for i, (pr, pc, values) in enumerate(peaks):
        if len(pr) == 0 and not any(open_sides):
            # no peak: nothing of this level is kept here; its components matter only if they
            # may hold a peak outside the crop, which a crop touching no open side excludes
            kept_peaks.append((pr, pc, values, i))
            continue
        old = (previous.zone, previous.blobs[i]) if previous is not None else (None, None)
        blob = _zone_blobs(dogs[i], box, zone_image, old[0], old[1], pp, pool)
        reuse.blobs[i] = blob
        labels, n = ndimage.label(blob, _CROSS)
        ids = labels[pr - vr0, pc - vc0]
        hit = ids > 0
        lookup = np.zeros(n + 1, bool)
        lookup[ids[hit]] = True
        union |= lookup[labels]
        level_labels.append((labels, n))
        kept_peaks.append((pr[hit] - vr0, pc[hit] - vc0, values[hit], i))

    if not any(open_sides):  # the crop cannot grow: free the DoGs now
        dogs = reuse = None
    union_labels, _ = ndimage.label(union, _CROSS)
    region_zone = region[zone_image[0]:zone_image[1], zone_image[2]:zone_image[3]]
    wanted_ids = np.unique(np.concatenate(
        [union_labels[r[region_zone[r, c]], c[region_zone[r, c]]] for r, c, _, _ in kept_peaks]))
    if wanted_ids.size == 0:
        return _CropResult(box, zone_image, np.zeros(shape, np.int32), no_peaks, (False,) * 4), reuse
    lookup = np.zeros(int(union_labels.max()) + 1, np.int32)
    lookup[wanted_ids] = np.arange(1, wanted_ids.size + 1)  # label order is raster order
    wanted_labels = lookup[union_labels]
    wanted = wanted_labels > 0

    # Would the whole image add to a returned candidate? Only through a component (of any level)
    # that leaves the exact zone and overlaps or touches the candidate.
    grow = [False] * 4
    if any(open_sides):
        ring = wanted.copy()
        ring[1:] |= wanted[:-1]
        ring[:-1] |= wanted[1:]
        ring[:, 1:] |= wanted[:, :-1]
        ring[:, :-1] |= wanted[:, 1:]
        for labels, n in level_labels:
            touched = None
            for side, edge in enumerate((labels[0], labels[-1], labels[:, 0], labels[:, -1])):
                if not open_sides[side] or grow[side] or not edge.any():
                    continue
                if touched is None:
                    touched = labels[ring]
                on_edge = np.zeros(n + 1, bool)
                on_edge[edge] = True
                on_edge[0] = False
                if on_edge[touched].any():
                    grow[side] = True

    result_peaks = []
    for r, c, values, level in kept_peaks:
        inside = wanted[r, c]
        p = np.zeros(int(inside.sum()), PEAK_DTYPE)
        p["row"], p["col"] = r[inside] + zone_image[0], c[inside] + zone_image[2]
        p["level"], p["dog"] = level, values[inside]
        result_peaks.append(p)
    result = _CropResult(box, zone_image, wanted_labels, np.concatenate(result_peaks), tuple(grow))
    return result, reuse


def _grown(box, grow, step, shape):
    r0, r1, c0, c1 = box
    sr, sc = step
    return (max(r0 - sr, 0) if grow[0] else r0, min(r1 + sr, shape[0]) if grow[1] else r1,
            max(c0 - sc, 0) if grow[2] else c0, min(c1 + sc, shape[1]) if grow[3] else c1)


def _analyze_box(pixels, region, box, pp, pool) -> _CropResult:
    """Analyse a crop, growing it until its returned candidates are exact; a grown crop reuses
    the DoGs and blob-like tests of the previous one and computes only what is new."""
    step = (max(pp.margin[0] + pp.context[0], 16), max(pp.margin[1] + pp.context[1], 16))
    previous = None
    while True:
        result, previous = _analyze_crop(pixels, region, box, pp, pool, previous)
        if not any(result.grow):
            return result
        new = _grown(box, result.grow, step, pixels.shape)
        if new == box:  # cannot happen (only open sides grow), but never loop forever
            return result
        box = new
        step = (step[0] * 2, step[1] * 2)


# --------------------------------------------------------------------------- boxes

def _initial_boxes(region: np.ndarray, pp: PixelParams) -> list[tuple[int, int, int, int]]:
    """Bounding boxes of the region's parts grown by margin + context; merged where one box
    costs no more than two."""
    rows, cols = region.shape
    rr = np.flatnonzero(region.any(axis=1))
    if rr.size == 0:
        return []
    cc = np.flatnonzero(region[rr[0]:rr[-1] + 1].any(axis=0))
    r0, c0 = int(rr[0]), int(cc[0])
    labels, n = ndimage.label(region[r0:rr[-1] + 1, c0:cc[-1] + 1], _CROSS)
    objects = [None if o is None else (slice(o[0].start + r0, o[0].stop + r0), slice(o[1].start + c0, o[1].stop + c0))
               for o in ndimage.find_objects(labels)]
    if n > 256:  # a speckled region: one box around everything
        objects = [(slice(r0, int(rr[-1]) + 1), slice(c0, int(cc[-1]) + 1))]
    boxes = []
    for o in objects:
        if o is None:
            continue
        er, ec = pp.margin[0] + pp.context[0], pp.margin[1] + pp.context[1]
        boxes.append((max(o[0].start - er, 0), min(o[0].stop + er, rows),
                      max(o[1].start - ec, 0), min(o[1].stop + ec, cols)))

    def area(b):
        return (b[1] - b[0]) * (b[3] - b[2])

    merged = True
    while merged and len(boxes) > 1:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                both = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
                if area(both) <= area(a) + area(b):
                    boxes[i] = both
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes)


# --------------------------------------------------------------------------- public

def _empty(shape, params, spacing, boxes=()) -> Candidates:
    return Candidates(labels=np.zeros(shape, np.int32), table=np.zeros(0, CANDIDATE_DTYPE), params=params,
                      spacing_mm=spacing, peaks=np.zeros(0, PEAK_DTYPE), boxes=tuple(boxes))


def hdog_candidates(pixels, spacing_mm, region=None, params: HDoGParams = HDoGParams(), *,
                    threads: int | None = None) -> Candidates:
    """HDoG candidates (docs/method.md §3.3) whose component holds a peak inside ``region``.

    Parameters
    ----------
    pixels : 2D array, the image scaled to [0, 1] by its bit depth, calcifications bright
        (``MammogramImage.pixels``); the DoG threshold 0.006 is in those units.
    spacing_mm : float or (row, column) pixel spacing in mm.
    region : bool array of the image's shape, where candidates are wanted (ROIs); only the
        bounding boxes of its parts plus the filters' margin and ``params.context_mm`` are
        computed. ``None``: the whole breast, ``breast_mask(pixels, spacing_mm)``.
    params : :class:`HDoGParams` (mm).
    threads : threads for the Hessian test on large crops (default: min(2, CPUs)).

    Returns :class:`Candidates`; the candidates are exactly those of the whole image whose
    component holds a peak inside ``region``, whole (they may extend beyond it).

    Raises ValueError for a non-2D or smaller than 3 x 3 image, integer pixels (not scaled to
    [0, 1]), a region of another shape, NaN/inf pixels inside the computed crops, or an unusable
    spacing.
    """
    image = image_array(pixels)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"pixels have dtype {image.dtype}: HDoG needs the image scaled to [0, 1] floats "
                         "(MammogramImage.pixels), its DoG threshold is in those units")
    spacing = spacing_pair(spacing_mm)
    if not isinstance(params, HDoGParams):
        raise ValueError(f"params must be HDoGParams, got {type(params).__name__}")
    pp = params.to_pixels(spacing)
    if region is None:
        region = breast_mask(image, spacing)
    else:
        region = np.asarray(region)
        if region.shape != image.shape:
            raise ValueError(f"region has shape {region.shape}, the image {image.shape}: "
                             "it must be a bool mask of the image's shape")
        if region.dtype != bool:
            region = region != 0
    boxes = _initial_boxes(region, pp)
    if not boxes:
        return _empty(image.shape, params, spacing)
    workers = min(2, os.cpu_count() or 1) if threads is None else max(1, int(threads))
    big = max((b[1] - b[0]) * (b[3] - b[2]) for b in boxes) >= _THREAD_MIN_PIXELS
    pool = ThreadPoolExecutor(workers) if workers > 1 and big else None
    try:
        results = [_analyze_box(image, region, box, pp, pool) for box in boxes]
    finally:
        if pool is not None:
            pool.shutdown()
    used = tuple(r.box for r in results)
    results = [r for r in results if r.peaks.size]
    if not results:
        return _empty(image.shape, params, spacing, used)

    if len(results) == 1:  # one crop: its labels are already in the image's raster order
        b0, b1, b2, b3 = results[0].zone
        sub_labels = results[0].wanted
        n = int(sub_labels.max())
    else:  # paint the candidates of every crop (identical where crops overlap) and label them
        b0, b1 = min(r.zone[0] for r in results), max(r.zone[1] for r in results)
        b2, b3 = min(r.zone[2] for r in results), max(r.zone[3] for r in results)
        painted = np.zeros((b1 - b0, b3 - b2), bool)
        for r in results:
            z0, z1, z2, z3 = r.zone
            painted[z0 - b0:z1 - b0, z2 - b2:z3 - b2] |= r.wanted > 0
        sub_labels, n = ndimage.label(painted, _CROSS)
        sub_labels = sub_labels.astype(np.int32, copy=False)
    labels = np.zeros(image.shape, np.int32)
    labels[b0:b1, b2:b3] = sub_labels

    # Table: geometry from the pixels, peak from the peak list.
    rr, cc = np.nonzero(sub_labels)
    ll = sub_labels[rr, cc]
    area = np.bincount(ll, minlength=n + 1)[1:]
    table = np.zeros(n, CANDIDATE_DTYPE)
    table["label"] = np.arange(1, n + 1)
    table["area"] = area
    # sums of image coordinates in raster order: the same floats whatever the crop
    table["row"] = np.bincount(ll, weights=rr + b0, minlength=n + 1)[1:] / area
    table["col"] = np.bincount(ll, weights=cc + b2, minlength=n + 1)[1:] / area

    peaks = np.concatenate([r.peaks for r in results])
    _, first = np.unique(np.stack([peaks["row"], peaks["col"], peaks["level"]]), axis=1, return_index=True)
    peaks = peaks[np.sort(first)]
    peaks["label"] = labels[peaks["row"], peaks["col"]]
    peaks = peaks[np.lexsort((peaks["col"], peaks["row"], peaks["level"], -peaks["dog"], peaks["label"]))]
    starts = np.flatnonzero(np.r_[True, peaks["label"][1:] != peaks["label"][:-1]])
    best = peaks[starts]
    index = best["label"] - 1
    table["level"][index] = best["level"]
    table["dog"][index] = best["dog"]
    table["peak_row"][index] = best["row"]
    table["peak_col"][index] = best["col"]
    table["sigma_mm"][index] = np.asarray(params.sigmas_mm, np.float32)[best["level"]]
    table["n_peaks"] = np.bincount(peaks["label"], minlength=n + 1)[1:]
    return Candidates(labels=labels, table=table, params=params, spacing_mm=spacing,
                      peaks=peaks, boxes=used)
