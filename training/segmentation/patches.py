"""Training patches for the selection CNN: what it must learn to tell apart.

Per image, patches of ``PATCH_PX`` x ``PATCH_PX`` at the network's spacing (0.07 mm) centred on
* every true calcification in the analysed region (jittered, so it is not always central),
* every HDoG candidate that touches no true calcification (the hard negatives the CNN exists for),
* random points of the region and of a few random boxes of the breast (ordinary tissue, distractors
  outside the ROIs that the whole-breast mode will meet);
* on a view without calcifications (``--negatives``, :mod:`training.segmentation.negatives`: real
  tissue), EVERY HDoG candidate of the whole breast outside its marked lesions, and
  ``NEGATIVE_VIEW_RANDOM`` random breast points (:func:`negative_view_patches`).
Inputs are normalised exactly as at inference (:func:`analysis.segmentation.cnn.normalise_input`,
with the same image context around the patch that an inference crop has);
targets are the proximity map (:func:`analysis.segmentation.cnn.proximity_target`).

**Only what can be seen is taught** (``found``, ``calcnode train-seg --seen-only``): a simulated
particle that the ideal observer finds with probability < ``SEEN_PROBABILITY`` (at 1 FP/cm² of ROI,
:mod:`training.segmentation.ceiling`) is buried in the tissue's own noise. Taught as calcification,
it tells the network that a grain blob of grainy tissue is one, which is what real processed tissue
is full of (docs/segmentation.md, "Seen-only targets"). Such a particle gets no patch of its own,
and its proximity neighbourhood is left out of the loss (target ``IGNORE``), not taught as
background: it *is* a calcification, only not a visible one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from analysis.dicom_input import load_image
from analysis.segmentation import breast_mask, hdog_candidates
from analysis.segmentation.cnn import (NET_SPACING_MM, SelectionParams, local_context_px, normalise_input,
                                       proximity_target)

from ..datasets import DatasetImage, image_rois, load_truth, roi_region

PATCH_PX = 48                 # at NET_SPACING_MM: 3.4 mm (the receptive field is 2.3 mm)
# Larger patches (a network with a larger receptive field, train-seg --patch-px) are stored at half
# precision: 64 px float32 patches of the demonstration data would need ~2x the 24 GB this machine
# has while they are gathered; the loss is computed in float32 either way.
RANDOM_BOX_MM = 12.0          # side of the random breast boxes
RANDOM_BOXES = 3
MAX_POSITIVES = 300           # per image, so one busy image does not dominate
POSITIVE_REPEATS = 3          # each calcification three times, with different jitter
MAX_NEGATIVES = 80            # hard negatives per image: about 3:1 against calcifications overall
NEGATIVE_VIEW_RANDOM = 200    # random breast points per negative view (ordinary tissue)
KINDS = ("calcification", "hard_negative", "random", "negative_view")
SEEN_PROBABILITY = 0.5        # the ideal observer's "found" (as the cluster evaluation's visible particles) ...
SEEN_FP_PER_CM2 = 1.0         # ... when it may make this many false positives per cm² of ROI
IGNORE = -1.0                 # target value of pixels left out of the loss (train.dice_bce_loss)


@dataclass
class Patches:
    """Training patches. ``x`` is (n, P + 2C, P + 2C), normalised; ``y`` (n, P, P) the proximity
    target of x's central P x P (``IGNORE``: not in the loss). C is the context (``patches_at``'s
    ``context_px``, 0 unless asked for): the network's output is cut to the centre before the loss.
    Stored as float32, or float16 when the input is larger than ``PATCH_PX``."""

    x: np.ndarray
    y: np.ndarray
    kind: np.ndarray     # int8: KINDS[k]: 0 calcification, 1 hard negative, 2 random, 3 negative view

    @property
    def context_px(self) -> int:
        return (self.x.shape[-1] - self.y.shape[-1]) // 2

    @staticmethod
    def concat(parts: list["Patches"], patch_px: int = PATCH_PX, context_px: int = 0) -> "Patches":
        parts = [p for p in parts if len(p.x)]
        if not parts:
            outer = patch_px + 2 * context_px
            return Patches(np.zeros((0, outer, outer), storage_dtype(outer)),
                           np.zeros((0, patch_px, patch_px), storage_dtype(outer)), np.zeros(0, np.int8))
        return Patches(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                       np.concatenate([p.kind for p in parts]))


def storage_dtype(patch_px: int) -> type:
    """How patches of ``patch_px`` are stored (see ``PATCH_PX``)."""
    return np.float32 if patch_px <= PATCH_PX else np.float16


def _cut(array: np.ndarray, centre: tuple[float, float], size: int) -> np.ndarray | None:
    r0 = int(round(centre[0])) - size // 2
    c0 = int(round(centre[1])) - size // 2
    if r0 < 0 or c0 < 0 or r0 + size > array.shape[0] or c0 + size > array.shape[1]:
        return None
    return array[r0:r0 + size, c0:c0 + size]


def _random_boxes(breast: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    region = np.zeros(breast.shape, bool)
    side = int(RANDOM_BOX_MM / spacing)
    rows, cols = np.nonzero(breast[::8, ::8])
    if len(rows) == 0:
        return region
    for _ in range(RANDOM_BOXES):
        k = rng.integers(len(rows))
        r, c = rows[k] * 8, cols[k] * 8
        region[max(r - side // 2, 0):r + side // 2, max(c - side // 2, 0):c + side // 2] = True
    return region & breast


def image_patches(item: DatasetImage, seed: int, params: SelectionParams = SelectionParams(),
                  found: dict[int, float] | None = None, patch_px: int = PATCH_PX,
                  context_px: int = 0) -> Patches:
    """All training patches of one image (deterministic for ``seed``). ``found``: per truth label,
    the ideal observer's probability of finding the particle; those below ``SEEN_PROBABILITY`` are
    not taught (module docstring). Labels it lacks (particles outside every ROI) are taught."""
    rng = np.random.default_rng(seed)
    image = load_image(item.image_path)
    spacing = float(np.mean(image.pixel_spacing_mm))
    labels = load_truth(item.truth_path, image.shape)
    unseen_labels = [label for label, p in (found or {}).items() if p < SEEN_PROBABILITY]
    unseen = np.isin(labels, unseen_labels) if unseen_labels else None
    truth = labels > 0
    if unseen is not None:
        truth &= ~unseen
    rois, _ = image_rois(item, image.geometry)
    region = roi_region(rois, image.geometry)
    if region is None:  # no ROI object: the truth's neighbourhood stands in for one
        region = ndimage.binary_dilation(truth, iterations=int(3.0 / spacing)) if truth.any() else \
            np.zeros(image.shape, bool)
    breast = breast_mask(image.pixels, image.pixel_spacing_mm)
    sample_region = region | _random_boxes(breast, spacing, rng)
    if not sample_region.any():
        return Patches.concat([], patch_px, context_px)
    candidates = hdog_candidates(image.pixels, image.pixel_spacing_mm, sample_region)

    truth_labels, n_truth = ndimage.label(truth, structure=np.ones((3, 3), bool))
    centres: list[tuple[float, float, int]] = []
    if n_truth:
        com = ndimage.center_of_mass(truth, truth_labels, np.arange(1, n_truth + 1))
        inside = [c for c in com if sample_region[int(c[0]), int(c[1])]] * POSITIVE_REPEATS
        rng.shuffle(inside)
        jitter = rng.integers(-6, 7, size=(len(inside), 2)) * (NET_SPACING_MM / spacing)
        centres += [(r + j[0], c + j[1], 0) for (r, c), j in zip(inside[:MAX_POSITIVES], jitter)]
    if len(candidates):  # a candidate on an unseen particle is not a negative either
        touching = np.unique(candidates.labels[labels > 0])
        negatives = [(row["row"], row["col"], 1) for row in candidates.table
                     if row["label"] not in touching]
        rng.shuffle(negatives)
        centres += negatives[:MAX_NEGATIVES]
    rows, cols = np.nonzero(sample_region)
    picks = rng.choice(len(rows), size=min(len(rows), 40), replace=False)
    centres += [(rows[k], cols[k], 2) for k in picks]

    return patches_at(image.pixels, truth, spacing, centres, params, unseen, patch_px, context_px)


def patches_at(pixels: np.ndarray, truth: np.ndarray | None, spacing: float,
               centres: list[tuple[float, float, int]], params: SelectionParams = SelectionParams(),
               unseen: np.ndarray | None = None, patch_px: int = PATCH_PX,
               context_px: int = 0) -> Patches:
    """Input and target patches centred on ``centres`` ((row, col, kind), pixels) of one image:
    ``pixels`` in [0, 1], ``truth`` bool calcification mask (None: no calcification, target 0),
    ``spacing`` in mm; ``unseen`` (bool mask): particles whose proximity neighbourhood is left out
    of the loss (``IGNORE``) where no taught particle's reaches. Patches that would leave the image
    are skipped. ``patch_px``: the target's side at the network's spacing; ``context_px``: image
    around it that the input carries and the target does not (inputs are ``patch_px + 2 *
    context_px`` square), so that every target pixel's receptive field lies on the image, as it
    does in an inference crop (``Patches``)."""
    if truth is None:
        truth = np.zeros(pixels.shape, bool)
    native = int(round(patch_px * NET_SPACING_MM / spacing))
    outer = patch_px + 2 * context_px
    native_outer = int(round(outer * NET_SPACING_MM / spacing))
    margin = int(np.ceil(params.proximity_radius_mm / spacing)) + 1
    # the image around the patch that the input scaling reads (as at inference), at both spacings
    context = local_context_px() if params.input_normalisation == "local" else 0
    native_context = int(round(context * NET_SPACING_MM / spacing))
    xs, ys, kinds = [], [], []
    for r, c, kind in centres:
        crop = _cut(pixels, (r, c), native_outer + 2 * native_context)
        truth_crop = _cut(truth, (r, c), native + 2 * margin)
        if crop is None or truth_crop is None:
            continue
        target = proximity_target(truth_crop, spacing, params.proximity_radius_mm,
                                  params.proximity_a)[margin:-margin, margin:-margin]
        ignore = None
        if unseen is not None:
            near = proximity_target(_cut(unseen, (r, c), native + 2 * margin), spacing, params.proximity_radius_mm,
                                    params.proximity_a)[margin:-margin, margin:-margin]
            ignore = (near > 0) & (target <= 0)
        if native != patch_px:
            zoom = patch_px / native
            crop = ndimage.zoom(crop, zoom, order=1, grid_mode=True, mode="nearest")
            target = ndimage.zoom(target, zoom, order=1, grid_mode=True, mode="nearest")
            if ignore is not None:
                ignore = ndimage.zoom(ignore, zoom, order=0, grid_mode=True, mode="nearest")
        x = normalise_input(crop, params.input_normalisation)
        start_r, start_c = (x.shape[0] - outer) // 2, (x.shape[1] - outer) // 2
        x = x[start_r:start_r + outer, start_c:start_c + outer]
        if x.shape != (outer, outer) or target.shape != (patch_px, patch_px):
            continue
        y = np.clip(target, 0, 1).astype(np.float32)
        if ignore is not None and ignore.shape == y.shape:
            y[ignore] = IGNORE
        xs.append(x)
        ys.append(y)
        kinds.append(kind)
    if not xs:
        return Patches.concat([], patch_px, context_px)
    dtype = storage_dtype(outer)
    return Patches(np.stack(xs).astype(dtype, copy=False), np.stack(ys).astype(dtype, copy=False),
                   np.array(kinds, np.int8))


def negative_view_patches(view, seed: int, params: SelectionParams = SelectionParams(),
                          patch_px: int = PATCH_PX, context_px: int = 0) -> Patches:
    """All training patches of one view without calcifications (a
    :class:`training.segmentation.negatives.NegativeView`): every whole-breast HDoG candidate whose
    peak lies outside the view's excluded (lesion) region (kind 3), and ``NEGATIVE_VIEW_RANDOM``
    random breast points outside it (kind 2); every target is 0."""
    rng = np.random.default_rng(seed)
    spacing = float(np.mean(view.spacing_mm))
    free = breast_mask(view.pixels, view.spacing_mm)
    if view.excluded is not None:
        free &= ~view.excluded
    candidates = hdog_candidates(view.pixels, view.spacing_mm, free)
    centres = [(row["row"], row["col"], 3) for row in candidates.table
               if view.excluded is None or not view.excluded[int(round(row["row"])), int(round(row["col"]))]]
    rows, cols = np.nonzero(free)
    picks = rng.choice(len(rows), size=min(len(rows), NEGATIVE_VIEW_RANDOM), replace=False)
    centres += [(rows[k], cols[k], 2) for k in picks]
    return patches_at(view.pixels, None, spacing, centres, params, patch_px=patch_px, context_px=context_px)
