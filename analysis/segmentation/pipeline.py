"""HDoGReg end to end: image (+ analysed region) -> labelled calcifications and their table.

``segment(pixels, spacing_mm, region, model)``: HDoG candidates whose peak lies in
``region`` (the ROIs; ``None`` = the whole breast), kept by the regression CNN
(:mod:`analysis.segmentation.cnn`), holes filled, labelled with 8-connectivity
(a calcification touching diagonally is one object, as a reader would see it).

Whole breast: an object counts when its centroid lies in the breast mask, the rule an ROI's
calcifications follow (docs/method.md §4.1). A candidate is found by a peak inside the mask but
kept whole, and on real processed views the bright band along the skin (the vendor's peripheral
enhancement, which the mask's 3.15 mm erosion is there to leave out) gave candidates with one foot
inside: most false objects of the real views' skin line had their centroid outside the mask
(docs/segmentation.md, "The skin line").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .breast_mask import breast_mask
from .cnn import SegmentationModel, Selection, nonzero_extent, select_candidates
from .hdog import Candidates, HDoGParams, hdog_candidates
from .settings import REGION_GROWTH_MM, WHOLE_BREAST_CENTROID_RULE

PARTICLE_DTYPE = np.dtype([
    ("label", "<i4"),
    ("row", "<f8"), ("col", "<f8"),   # centroid, pixel coordinates (row, column)
    ("area_px", "<i4"),
    ("area_mm2", "<f8"),
    ("max_intensity", "<f4"),          # on the [0, 1] image
])

_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The calcifications of one image.

    ``labels``: int32 (rows, cols), 0 = background, 1..n one per calcification.
    ``particles``: :data:`PARTICLE_DTYPE`, one row per label, sorted by label.
    ``candidates``: the HDoG stage's output (for evaluation and reports).
    ``selection``: the CNN step's scored objects (kept <=> score >= the model's prediction
    threshold; :class:`analysis.segmentation.cnn.Selection`), for evaluation.
    """

    labels: np.ndarray
    particles: np.ndarray
    candidates: Candidates
    selection: Selection

    def __len__(self) -> int:
        return len(self.particles)


def particle_table(labels: np.ndarray, pixels: np.ndarray, spacing_mm: tuple[float, float],
                   extent=False) -> np.ndarray:
    """One row per label of ``labels``: centroid, area in px and mm², peak intensity.
    ``extent``: the labels' :func:`nonzero_extent` when the caller has it (saves two passes
    over the image).

    Computed from the labelled pixels only (a calcification map is a few hundred pixels in a
    box that can reach 1 Mpx when two ROIs lie far apart): one pass to find them, then sums per
    label. Sums of pixel coordinates are exact in float64, so the centroids equal
    ``scipy.ndimage.center_of_mass``'s; a label without pixels gets a NaN centroid, area 0 and
    peak 0, as ``scipy.ndimage`` gives.
    """
    extent = nonzero_extent(labels) if extent is False else extent
    box = labels[extent] if extent is not None else labels[:0, :0]
    n = int(box.max(initial=0))  # labels are >= 0: all outside the extent are 0
    table = np.zeros(n, PARTICLE_DTYPE)
    if n == 0:
        return table
    rows, cols = np.nonzero(box)
    label_of = box[rows, cols]
    values = pixels[extent][rows, cols]
    areas, row_mean, col_mean = _centroids(label_of, rows, cols, n, extent)  # an absent label: NaN, as scipy
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, label_of, values)
    peak = peak[1:]
    peak[areas == 0] = 0.0
    table["label"] = np.arange(1, n + 1)
    table["row"], table["col"] = row_mean, col_mean
    table["area_px"] = areas
    table["area_mm2"] = areas * spacing_mm[0] * spacing_mm[1]
    table["max_intensity"] = peak
    return table


def grow_region(region: np.ndarray, spacing_mm: tuple[float, float], grow_mm: float) -> np.ndarray:
    """``region`` grown by ``grow_mm``: every pixel within ``grow_mm`` (Euclidean, in mm, so an
    ellipse in pixels for unequal spacing) of a region pixel.

    A distance transform, not a dilation: with a 1 mm disk (31 x 31 px at 0.07 mm) scipy's
    binary dilation cost ~0.4 s per ROI image, the transform ~20 ms. It runs on each connected
    part's box grown by ``grow_mm``, not on the box of the whole region: two ROIs far apart on
    one image made a box of up to 1.1 Mpx around 50 kpx of ROI (84 ms). The union is exact: a
    pixel within ``grow_mm`` of a part lies in that part's grown box.
    """
    rr = int(np.ceil(grow_mm / spacing_mm[0]))
    rc = int(np.ceil(grow_mm / spacing_mm[1]))
    grown = region.copy()
    extent = nonzero_extent(region)
    if extent is None:
        return grown
    rows, cols = region.shape
    parts, _ = ndimage.label(region[extent], structure=_EIGHT)
    for part in ndimage.find_objects(parts):
        r0 = max(extent[0].start + part[0].start - rr, 0)
        r1 = min(extent[0].start + part[0].stop + rr, rows)
        c0 = max(extent[1].start + part[1].start - rc, 0)
        c1 = min(extent[1].start + part[1].stop + rc, cols)
        distance = ndimage.distance_transform_edt(~region[r0:r1, c0:c1], sampling=spacing_mm)
        grown[r0:r1, c0:c1] |= distance <= grow_mm * (1 + 1e-9)  # a pixel exactly grow_mm away is in
    return grown


def segment(pixels: np.ndarray, spacing_mm: tuple[float, float], region: np.ndarray | None,
            model: SegmentationModel, hdog_params: HDoGParams = HDoGParams(), *,
            predictions: dict | None = None, breast: np.ndarray | None = None) -> Segmentation:
    """Segment the calcifications of one image (docs/method.md §3).

    Parameters
    ----------
    pixels : float32 (rows, cols) in [0, 1], calcifications bright.
    spacing_mm : (row, column) pixel spacing in mm.
    region : bool (rows, cols) where calcifications are wanted (the ROIs), or None for the
        whole breast. A candidate counts when an HDoG peak of it lies in the region grown by
        ``REGION_GROWTH_MM`` (1 mm): an ROI's calcifications are those whose *centroid* is in it
        (docs/method.md §4.1), and a calcification at the edge can have its centroid inside and its peak
        just outside. It is kept whole.
    model : the trained selection network.
    hdog_params : the HDoG stage's parameters (mm). They, the network and the constants of
        :mod:`analysis.segmentation.settings` decide the objects: all are in the segmentation
        identity (:func:`analysis.classify.segmentation_identity`).
    predictions : optional memo of the network's crop predictions
        (:func:`analysis.segmentation.cnn.select_candidates`).
    breast : with ``region=None``, the image's :func:`~analysis.segmentation.breast_mask.breast_mask`
        when the caller has already computed it (it is not computed again); ignored otherwise.
    """
    whole_breast = region is None
    if region is not None:
        region = grow_region(np.asarray(region, bool), spacing_mm, REGION_GROWTH_MM)
    else:  # what hdog_candidates would compute for region=None; kept for the centroid rule
        region = np.asarray(breast, bool) if breast is not None else breast_mask(pixels, spacing_mm)
    candidates = hdog_candidates(pixels, spacing_mm, region, hdog_params)
    selection = select_candidates(pixels, float(np.mean(spacing_mm)), candidates.labels, model, predictions)
    if whole_breast and WHOLE_BREAST_CENTROID_RULE:
        selection = centred_in(selection, region)
    return _labelled(selection.kept, pixels, spacing_mm, candidates, selection)


def label_centroids(labels: np.ndarray, n: int, extent=False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label 1..n of ``labels``: its area in px and its centroid's row and column (image
    pixels, NaN for a label without pixels), from the labelled pixels only. ``extent``: the
    labels' :func:`nonzero_extent` when the caller has it."""
    extent = nonzero_extent(labels) if extent is False else extent
    if extent is None or n == 0:
        return np.zeros(n, np.int64), np.full(n, np.nan), np.full(n, np.nan)
    box = labels[extent]
    rows, cols = np.nonzero(box)
    return _centroids(box[rows, cols], rows, cols, n, extent)


def _centroids(label: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int, extent: tuple[slice, slice]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area (px) and centroid (image row, column; NaN when absent) of labels 1..n, from their pixels'
    ``label`` and box coordinates ``rows``, ``cols`` inside ``extent``."""
    area = np.bincount(label, minlength=n + 1)[1:n + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        row = np.bincount(label, weights=rows, minlength=n + 1)[1:n + 1] / area + extent[0].start
        col = np.bincount(label, weights=cols, minlength=n + 1)[1:n + 1] / area + extent[1].start
    return area, row, col


def centred_in(selection: Selection, region: np.ndarray) -> Selection:
    """``selection`` without the objects whose centroid (rounded to a pixel) lies outside
    ``region`` (bool, the image's shape): labels renumbered 1..m in their order, scores with them,
    and the kept pixels of the dropped objects (their filled holes included) removed.
    """
    objects, scores = selection.objects, np.asarray(selection.scores)
    n = len(scores)
    extent = nonzero_extent(objects)
    area, centre_r, centre_c = label_centroids(objects, n, extent)
    present = area > 0
    inside = np.ones(n, bool)
    inside[present] = region[np.round(centre_r[present]).astype(int), np.round(centre_c[present]).astype(int)]
    if inside.all():
        return selection
    box = objects[extent]
    lut = np.zeros(n + 1, objects.dtype)
    lut[1:][inside] = np.arange(1, int(inside.sum()) + 1, dtype=objects.dtype)
    renumbered = np.zeros_like(objects)
    renumbered[extent] = lut[box]
    # a kept piece goes with the objects it holds: one holding only dropped objects goes whole
    # (with its filled holes), a piece that also holds a counted object loses the dropped pixels only
    kept = selection.kept.copy()
    kept_box = kept[extent]
    dropped = (box > 0) & ~(lut[box] > 0)
    pieces, _ = ndimage.label(kept_box, structure=_EIGHT)
    holds_counted = np.unique(pieces[(lut[box] > 0) & kept_box])
    only_dropped = np.setdiff1d(np.unique(pieces[dropped & kept_box]), holds_counted)
    kept_box &= ~(np.isin(pieces, only_dropped[only_dropped > 0]) | dropped)
    return Selection(objects=renumbered, scores=scores[inside], kept=kept)


def _labelled(kept: np.ndarray, pixels: np.ndarray, spacing_mm: tuple[float, float], candidates: Candidates,
              selection: Selection) -> Segmentation:
    """The :class:`Segmentation` whose calcifications are the 8-connected pieces of ``kept``."""
    labels = np.zeros(kept.shape, np.int32)
    extent = nonzero_extent(kept)
    if extent is not None:
        labels[extent] = ndimage.label(kept[extent], structure=_EIGHT)[0]
    return Segmentation(labels=labels, particles=particle_table(labels, pixels, spacing_mm, extent),
                        candidates=candidates, selection=selection)


def at_threshold(segmentation: Segmentation, pixels: np.ndarray, spacing_mm: tuple[float, float],
                 threshold: float) -> Segmentation:
    """The calcifications the same image would have with the selection CNN's prediction threshold
    set to ``threshold`` (a support score in [0, 1]) instead of the model's own.

    No network runs again: the selection's scored objects (``segmentation.selection``) are kept
    when their score is >= ``threshold``, holes filled, labelled with 8-connectivity, as
    :func:`segment` does. Used by the cluster detector, whose members may be searched for at
    another threshold than the operating point the SEG and the classifier use (docs/clusters.md
    "Members at their own threshold"). ``candidates`` and ``selection`` are
    shared with ``segmentation``.
    """
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"a selection threshold is a support score in [0, 1], got {threshold!r}")
    selection = segmentation.selection
    keep = np.flatnonzero(np.asarray(selection.scores) >= threshold) + 1
    objects = selection.objects
    kept = np.zeros(objects.shape, bool)
    extent = nonzero_extent(objects)
    if extent is not None and keep.size:
        kept[extent] = np.isin(objects[extent], keep)
        # fill each kept piece's holes in its own box, as the selection fills them in its crops
        pieces, _ = ndimage.label(kept[extent], structure=_EIGHT)
        for box in ndimage.find_objects(pieces):
            r, c = (slice(extent[0].start + box[0].start, extent[0].start + box[0].stop),
                    slice(extent[1].start + box[1].start, extent[1].start + box[1].stop))
            kept[r, c] = ndimage.binary_fill_holes(kept[r, c])
    return _labelled(kept, pixels, spacing_mm, segmentation.candidates, selection)
