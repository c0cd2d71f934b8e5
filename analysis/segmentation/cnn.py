"""Candidate selection by a regression CNN (HDoGReg step 3, docs/method.md §3.4).

The network predicts a *proximity map*: around every calcification pixel the
target is K(d) = (exp(a (1 - d/x)) - 1) / (exp(a) - 1) for d <= x, else 0, with
d the distance to the nearest calcification pixel, x = 0.7 mm (10 px at
0.07 mm) and a = 1. A candidate component from the HDoG stage is kept when more
than 30 % of its pixels have a prediction >= 10^-3.5.

HDoGReg's own network (an FPN with an Inception-v4 encoder on 512 px tiles) is
far too slow for two CPU cores. This is a compact fully convolutional network
with dilated 3x3 convolutions (receptive field 2.3 mm) trained on the same
target with the same decision rule, and it runs only where it can change the
answer: on crops around candidate components, merged where they overlap.

Outlines (calcnode's addition to HDoGReg, docs/segmentation.md): at the coarser DoG levels an HDoG
candidate is the whole blob-like region around its peak, often 20x the calcification it holds,
so HDoGReg's rule (30 % of the *candidate's* pixels) rejects faint calcifications that sit in
hazy tissue, and a kept candidate's centroid and outline are not the calcification's. With
``outline_level`` set, each candidate is first cut to its pixels whose prediction is >= that level
(the proximity the target has within ~2 px of a calcification); every 8-connected piece is an
object, and the same 30 % rule decides each object. ``outline_level = None`` is HDoGReg's rule on
whole candidates.

The network works at ``NET_SPACING_MM``; crops of images with another spacing
are resampled to it and the prediction is resampled back, so the physical
scale is the same for a 0.05 mm and a 0.094 mm image.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from analysis.extent import nonzero_extent

NET_SPACING_MM = 0.07
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class SelectionParams:
    """Parameters of the CNN selection step, lengths in mm."""

    proximity_radius_mm: float = 0.7   # x = 10 px at 0.07 mm
    proximity_a: float = 1.0
    # HDoGReg's 10^-3.5 belongs to its own network's output scale; a trained model carries the
    # threshold calibrated on its validation images (training/segmentation/train.py).
    prediction_threshold: float = 10 ** -3.5
    min_fraction: float = 0.30         # a component is kept when MORE than this fraction is >= threshold
    # Candidates are cut to their pixels with prediction >= this before the rule (None: HDoGReg's
    # whole candidates). 0.7 ~ the target K(d) at d = 2 px (0.14 mm) from a calcification pixel.
    outline_level: float | None = 0.7
    crop_margin_mm: float = 1.4        # context around a candidate: >= the receptive field radius (1.15 mm)
    # How the network's input is scaled: "local" (contrast to a 2 mm square around each pixel, the same
    # for a training patch and an inference crop of any size) or "crop" (median/MAD of the whole crop:
    # models trained before 2026-12-03, whose inference crops were scaled unlike their training
    # patches). See normalise_local.
    input_normalisation: str = "local"

    def __post_init__(self):
        # refused here, so every way in (train-seg, calibrate-seg, a model file) gets the same check
        if self.outline_level is not None and not 0 < float(self.outline_level) < 1:
            raise ValueError(f"outline level {self.outline_level} is not in (0, 1)")
        if not float(self.proximity_radius_mm) > 0:
            raise ValueError(f"proximity radius {self.proximity_radius_mm} mm is not > 0 mm")


def proximity_target(calc_mask: np.ndarray, spacing_mm: float, radius_mm: float = 0.7,
                     a: float = 1.0) -> np.ndarray:
    """The regression target for a calcification mask (float32 in [0, 1]).

    The maximum of K over calcification pixels is K at the distance to the
    nearest one, because K decreases with d; so one Euclidean distance
    transform gives it exactly.
    """
    calc_mask = np.asarray(calc_mask, bool)
    if not calc_mask.any():
        return np.zeros(calc_mask.shape, np.float32)
    d_mm = ndimage.distance_transform_edt(~calc_mask) * float(spacing_mm)
    k = (np.exp(a * (1.0 - d_mm / radius_mm)) - 1.0) / (np.exp(a) - 1.0)
    k[d_mm > radius_mm] = 0.0
    return k.astype(np.float32)


def normalise(crop: np.ndarray) -> np.ndarray:
    """Centre a crop on its median and scale by its robust spread (MAD).

    Makes the input independent of the detector's grey-level calibration and
    of the local density, so a calcification is judged by its contrast to its
    own surroundings.
    """
    crop = np.asarray(crop, np.float32)
    median = float(np.median(crop))
    mad = float(np.median(np.abs(crop - median))) * 1.4826
    return (crop - median) / max(mad, 1e-3)


LOCAL_WINDOW_MM = 2.0   # the "surroundings" of normalise_local: a 2 mm square (29 px at 0.07 mm)


def local_window_px(spacing_mm: float = NET_SPACING_MM) -> int:
    """The side of normalise_local's window in pixels (odd)."""
    return 2 * int(round(LOCAL_WINDOW_MM / spacing_mm / 2)) + 1


def local_context_px(spacing_mm: float = NET_SPACING_MM) -> int:
    """The pixels normalise_local reads beyond a crop (two box filters of half-width w // 2 each)."""
    return 2 * (local_window_px(spacing_mm) // 2)


def normalise_local(x: np.ndarray, spacing_mm: float = NET_SPACING_MM) -> np.ndarray:
    """Local contrast: each pixel minus the mean of its 2 mm square, over the RMS of that high-pass
    in the same square (extreme values clipped at 4 robust SDs of the crop first, so a bright
    calcification does not hide its neighbours).

    Why: the median/MAD of a whole crop (:func:`normalise`) is dominated by the slow density trend,
    and so depends on the crop's size; training patches are 3.4 mm and inference crops are merged
    candidate boxes of any size, and the same network, fed 48 px patches at inference, found 0.54
    instead of 0.45 of the held-out calcifications. This scaling depends on the 2 mm around a pixel
    (and, through the clip level only, on the crop's spread): a crop read with :func:`local_context_px`
    more pixels on each side is scaled as a larger one would be. Box filters, not Gaussians: O(1) per
    pixel whatever the window.
    """
    x = np.asarray(x, np.float32)
    w = local_window_px(spacing_mm)
    high = x - ndimage.uniform_filter(x, w, mode="reflect")
    centre = float(np.median(high))
    spread = 1.4826 * float(np.median(np.abs(high - centre)))
    limit = 4.0 * max(spread, 1e-4)
    # the box filter's running sums can leave a mean square a hair below 0 where the image is flat
    # (the zero background of a real view): its square root was NaN, and so was the network's input
    mean_square = ndimage.uniform_filter(np.clip(high, -limit, limit) ** 2, w, mode="reflect")
    rms = np.sqrt(np.maximum(mean_square, 0.0))
    return high / np.maximum(rms, 1e-4)


def normalise_input(x: np.ndarray, method: str) -> np.ndarray:
    """The network's input from a crop at ``NET_SPACING_MM`` by ``method`` ("local" or "crop")."""
    if method == "local":
        return normalise_local(x)
    if method == "crop":
        return normalise(x)
    raise ValueError(f"unknown input normalisation {method!r}")


DILATIONS = (1, 2, 4, 8, 1)  # the shipped networks' layers (receptive field 33 px, 2.3 mm)


# The optional line filters (``ProximityNet(line_filters=n)``): oriented ridge detectors on the
# scaled input, fixed, not learned. Across the line a Gaussian's second derivative of sigma 0.07 mm
# (a fine linear calcification is 0.10-0.35 mm wide); along it a Gaussian of sigma 0.21 mm, so each
# filter sums a line over ~0.8 mm. Why: a faint thin line that a matched filter finds easily (the
# ideal observer of ``calcnode seg-ceiling`` finds 0.99 of the fine linear particles) gives 3x3
# layers of 8-16 channels only a weak per-pixel signal to build on; summed along its orientation it
# stands out by ~sqrt(its length in px) (docs/segmentation.md, "Line filters").
LINE_SIGMA_ACROSS_MM = 0.07
LINE_SIGMA_ALONG_MM = 0.21


def line_kernels(orientations: int, spacing_mm: float = NET_SPACING_MM) -> np.ndarray:
    """Oriented ridge filters: float32 (orientations, k, k), k = 2 ceil(3 sigma_along) + 1 px.

    Filter ``i`` answers most to a bright line at angle ``i * 180° / orientations`` from the
    column axis (counter-clockwise, rows pointing down: 0 is a horizontal line). Each is the
    negated second derivative across the line of an anisotropic Gaussian (sigmas
    ``LINE_SIGMA_ACROSS_MM`` across, ``LINE_SIGMA_ALONG_MM`` along), made zero-mean (a flat or
    linearly varying image gives 0) and of unit L2 norm (white noise of unit variance gives
    responses of unit variance).
    """
    if orientations < 1:
        raise ValueError(f"line filters need at least 1 orientation, got {orientations}")
    across = LINE_SIGMA_ACROSS_MM / spacing_mm
    along = LINE_SIGMA_ALONG_MM / spacing_mm
    half = int(np.ceil(3 * along))
    r, c = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    bank = []
    for i in range(orientations):
        angle = np.pi * i / orientations
        u = c * np.cos(angle) - r * np.sin(angle)   # along the line (rows point down)
        v = c * np.sin(angle) + r * np.cos(angle)   # across it
        g = np.exp(-u ** 2 / (2 * along ** 2) - v ** 2 / (2 * across ** 2))
        k = (1 / across ** 2 - v ** 2 / across ** 4) * g   # -d2g/dv2: positive on a bright ridge
        k -= k.mean()
        bank.append(k / np.linalg.norm(k))
    return np.stack(bank).astype(np.float32)


class ProximityNet(nn.Module):
    """Compact FCN: 3x3 convolutions with ``dilations`` (1, 2, 4, 8, 1) and a 1x1 head.

    Receptive field 33 px (2.3 mm at 0.07 mm) with the default layers; ~5 k parameters at width 8;
    "same" padding so the output has the input's size. The first two layers and the last have
    ``width`` channels, the others twice that. A longer ``dilations`` (e.g. (1, 2, 4, 8, 16, 1):
    65 px, 4.5 mm) sees farther: whether a thin line ends, as a fine linear calcification does
    within ~2.5 mm, or runs on, as a vessel does (docs/segmentation.md, "A larger receptive field").
    ``line_filters`` > 0: the first layer also sees that many fixed oriented line filters of the
    input (:func:`line_kernels`; a buffer in the weights, so the model file carries them), and the
    receptive field grows by their radius.
    """

    def __init__(self, width: int = 8, dilations: tuple[int, ...] = DILATIONS, line_filters: int = 0):
        super().__init__()
        dilations = tuple(int(d) for d in dilations)
        if len(dilations) < 3 or min(dilations) < 1:
            raise ValueError(f"dilations {dilations}: at least 3 layers, each dilation >= 1")
        line_filters = int(line_filters)
        if line_filters < 0:
            raise ValueError(f"line_filters must be >= 0, got {line_filters}")
        if line_filters:
            self.register_buffer("line_bank", torch.from_numpy(line_kernels(line_filters))[:, None])
        layers: list[nn.Module] = []
        channels = 1 + line_filters
        for k, dilation in enumerate(dilations):
            out = width if k < 2 or k == len(dilations) - 1 else width * 2
            layers += [nn.Conv2d(channels, out, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
            channels = out
        layers += [nn.Conv2d(channels, 1, 1)]
        self.body = nn.Sequential(*layers)
        self.width = width
        self.dilations = dilations
        self.line_filters = line_filters

    @property
    def receptive_field_px(self) -> int:
        """Side of the square of input pixels one output pixel depends on (at NET_SPACING_MM)."""
        bank = self.line_bank.shape[-1] - 1 if self.line_filters else 0
        return 1 + 2 * sum(self.dilations) + bank

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # logits; sigmoid gives the proximity
        if self.line_filters:
            lines = nn.functional.conv2d(x, self.line_bank, padding=self.line_bank.shape[-1] // 2)
            x = torch.cat([x, lines], dim=1)
        return self.body(x)


# Selection parameters that model files written before them lack, and the value that reproduces
# what those models did: loading fills them in, and the model's identity leaves them out, so an old
# model's results and identity (feature caches, bundles) stay as they were.
LEGACY_PARAMS = {
    "outline_level": None,              # before outlines: HDoGReg's whole candidates
    "input_normalisation": "crop",      # before local scaling: median/MAD of the whole crop
}


@dataclass
class SegmentationModel:
    """The trained selection network with everything needed to use and identify it."""

    net: ProximityNet
    params: SelectionParams = field(default_factory=SelectionParams)
    info: dict = field(default_factory=dict)  # how it was made: data, seeds, epochs, losses

    def to_bytes(self) -> bytes:
        """The model file: weights + params + info in torch's format (``load`` reads it back).

        Bytes, not a file: ``analysis`` writes no files of its own; the trainer writes them
        durably (``training.model_files.save_segmentation_model``)."""
        buffer = io.BytesIO()
        layout = {"dilations": list(self.net.dilations)} if self.net.dilations != DILATIONS else {}
        if self.net.line_filters:
            layout["line_filters"] = self.net.line_filters
        torch.save({"format": "calcnode-segmentation-cnn/1", "width": self.net.width, **layout,
                    "state_dict": self.net.state_dict(), "params": asdict(self.params),
                    # JSON text: weights_only loading accepts no other objects (and it reads anywhere)
                    "info_json": json.dumps(self.info, default=_plain)}, buffer)
        return buffer.getvalue()

    @classmethod
    def load(cls, path: str | Path) -> "SegmentationModel":
        try:
            blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt, foreign or truncated file
            raise ValueError(f"{path}: not a calcnode segmentation model ({type(exc).__name__})") from None
        if not isinstance(blob, dict) or blob.get("format") != "calcnode-segmentation-cnn/1":
            raise ValueError(f"{path}: not a calcnode segmentation model")
        # files of the default layout store no dilations (so they are byte-identical to those before)
        net = ProximityNet(width=int(blob["width"]), dilations=tuple(blob.get("dilations", DILATIONS)),
                           line_filters=int(blob.get("line_filters", 0)))
        net.load_state_dict(blob["state_dict"])
        net.eval()
        params = dict(blob["params"])
        for key, value in LEGACY_PARAMS.items():
            params.setdefault(key, value)
        return cls(net=net, params=SelectionParams(**params),
                   info=json.loads(blob["info_json"]))

    @property
    def sha256(self) -> str:
        buffer = io.BytesIO()
        torch.save(self.net.state_dict(), buffer)
        return hashlib.sha256(buffer.getvalue()).hexdigest()

    def describe(self) -> str:
        return json.dumps(self.info, sort_keys=True)


def _plain(value):
    """numpy scalars and arrays as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _resample(array: np.ndarray, factor: float, order: int) -> np.ndarray:
    if abs(factor - 1.0) < 0.02:
        return array
    return ndimage.zoom(array, factor, order=order, mode="nearest", grid_mode=True)


@torch.inference_mode()
def predict_crop(net: ProximityNet, crop: np.ndarray, spacing_mm: float, normalisation: str = "crop",
                 context: tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """Proximity prediction (float32 in [0, 1]) for one crop of an image with ``spacing_mm``.

    ``context`` (top, bottom, left, right, in the crop's pixels) is image around the part to predict
    that only the input normalisation reads: the prediction has the shape of the inner part.
    """
    factor = float(spacing_mm) / NET_SPACING_MM
    top, bottom, left, right = context
    inner_shape = (crop.shape[0] - top - bottom, crop.shape[1] - left - right)
    x = normalise_input(_resample(crop, factor, order=1), normalisation)
    if any(context):
        r0, c0 = int(round(top * factor)), int(round(left * factor))
        rows = max(int(round(inner_shape[0] * factor)), 1)
        cols = max(int(round(inner_shape[1] * factor)), 1)
        x = x[r0:r0 + rows, c0:c0 + cols]
    x = np.ascontiguousarray(x, np.float32)
    out = torch.sigmoid(net(torch.from_numpy(x)[None, None]))[0, 0].numpy()
    if out.shape != inner_shape:
        out = _resample(out, 1.0 / factor, order=1)
        if out.shape != inner_shape:  # rounding in zoom: pad or cut the last row/column
            fixed = np.zeros(inner_shape, np.float32)
            h, w = min(out.shape[0], inner_shape[0]), min(out.shape[1], inner_shape[1])
            fixed[:h, :w] = out[:h, :w]
            out = fixed
    return out.astype(np.float32)


def with_context(box: tuple[slice, slice], shape: tuple[int, int], context_px: int
                 ) -> tuple[tuple[slice, slice], tuple[int, int, int, int]]:
    """``box`` grown by ``context_px`` inside an image of ``shape``, and the context actually added
    (top, bottom, left, right)."""
    r0, r1 = max(box[0].start - context_px, 0), min(box[0].stop + context_px, shape[0])
    c0, c1 = max(box[1].start - context_px, 0), min(box[1].stop + context_px, shape[1])
    return ((slice(r0, r1), slice(c0, c1)),
            (box[0].start - r0, r1 - box[0].stop, box[1].start - c0, c1 - box[1].stop))


def candidate_crops(labels: np.ndarray, margin_px: int) -> list[tuple[tuple[slice, slice], list[int]]]:
    """Crops that cover every candidate component with ``margin_px`` of context.

    Candidate bounding boxes grown by the margin are merged where they overlap;
    each merged box is one forward pass and comes with the labels it is
    responsible for (those whose grown box lies in it). Merging keeps the total
    area close to the union of the grown candidates instead of the whole image.
    """
    extent = nonzero_extent(labels, margin_px)
    if extent is None:
        return []
    r_off, c_off = extent[0].start, extent[1].start
    sub = labels[extent]
    grown = np.zeros(sub.shape, bool)
    rows, cols = sub.shape
    anchors: dict[int, tuple[int, int]] = {}
    for index, box in enumerate(ndimage.find_objects(sub)):
        if box is None:
            continue
        r0, r1 = max(box[0].start - margin_px, 0), min(box[0].stop + margin_px, rows)
        c0, c1 = max(box[1].start - margin_px, 0), min(box[1].stop + margin_px, cols)
        grown[r0:r1, c0:c1] = True
        anchors[index + 1] = (box[0].start, box[1].start)
    merged, _ = ndimage.label(grown)
    members: dict[int, list[int]] = {}
    for label, (r, c) in anchors.items():
        members.setdefault(int(merged[r, c]), []).append(label)
    regions = ndimage.find_objects(merged)
    out = []
    for region, labels_in in sorted(members.items()):
        box = regions[region - 1]
        out.append(((slice(box[0].start + r_off, box[0].stop + r_off),
                     slice(box[1].start + c_off, box[1].stop + c_off)), sorted(labels_in)))
    return out


def support_scores(prediction: np.ndarray, labels: np.ndarray, members: list[int],
                   min_fraction: float) -> np.ndarray:
    """Per candidate, the largest threshold t for which MORE than ``min_fraction`` of its pixels
    have prediction >= t: the k-th largest prediction, k = floor(min_fraction * n) + 1.

    So "more than 30 % of the pixels >= t" holds exactly when the score is >= t, and one score per
    candidate serves every threshold (FROC sweeps, calibration).
    """
    inside = np.isin(labels, members)
    labs, vals = labels[inside], prediction[inside]
    order = np.lexsort((-vals, labs))               # by label, then prediction descending
    labs, vals = labs[order], vals[order]
    starts = np.searchsorted(labs, members)
    counts = np.searchsorted(labs, members, side="right") - starts
    k = np.floor(min_fraction * counts).astype(int)  # 0-based index of the k-th largest
    return vals[starts + np.minimum(k, counts - 1)]


def outline_objects(prediction: np.ndarray, labels: np.ndarray, members: list[int],
                    params: SelectionParams) -> tuple[np.ndarray, np.ndarray]:
    """The scored objects of some candidates, given the network's prediction on their crop.

    Parameters
    ----------
    prediction : float (rows, cols) in [0, 1], the proximity prediction.
    labels : int (rows, cols), candidate labels on the same crop.
    members : sorted candidate labels to judge (others in ``labels`` are ignored).

    Returns
    -------
    objects : int32 (rows, cols), 1..n. With ``params.outline_level`` None, one object per
        candidate (HDoGReg); else the 8-connected pieces of the candidates' pixels with
        prediction >= ``outline_level``.
    scores : float (n,), :func:`support_scores` of each object with ``params.min_fraction``.
    """
    mine = np.isin(labels, members)
    if params.outline_level is None:
        # one object per candidate, even where two candidates touch
        objects = np.where(mine, np.searchsorted(members, labels) + 1, 0).astype(np.int32)
        n = len(members)
    else:
        objects, n = ndimage.label(mine & (prediction >= params.outline_level), structure=_EIGHT)
        objects = objects.astype(np.int32, copy=False)
    if n == 0:
        return objects, np.zeros(0)
    return objects, support_scores(prediction, objects, list(range(1, n + 1)), params.min_fraction)


@dataclass(frozen=True, eq=False)
class Selection:
    """What the selection step decided for one image.

    ``objects``: int32 (rows, cols), the scored objects, 1..n (the candidates' outlined pieces, or
    the candidates themselves when ``outline_level`` is None); ``scores``: float per object,
    index = label - 1 (:func:`support_scores`); ``kept``: bool (rows, cols), the objects with
    score >= the model's threshold, holes filled.
    """

    objects: np.ndarray
    scores: np.ndarray
    kept: np.ndarray


def select_candidates(pixels: np.ndarray, spacing_mm: float, candidate_labels: np.ndarray,
                      model: SegmentationModel, predictions: dict | None = None) -> Selection:
    """Keep what the network supports (docs/method.md §3.4, with calcnode's outlines).

    Each candidate is cut to its pixels with prediction >= ``outline_level`` (8-connected pieces
    are the objects; with ``outline_level = None`` the objects are the whole candidates), and an
    object is kept when more than ``min_fraction`` (30 %) of its pixels have a prediction
    >= ``prediction_threshold``.

    Parameters
    ----------
    pixels : float32 (rows, cols), [0, 1], calcifications bright.
    spacing_mm : pixel spacing in mm (mean of row and column spacing).
    candidate_labels : int (rows, cols), 0 = background, one label per HDoG candidate.
    predictions : optional memo of the network's crop predictions, filled on the first call and
        reused by the next one with the same image, candidates and network (an evaluation that
        judges the same candidates under two rules runs the network once).
    """
    params = model.params
    labels = np.asarray(candidate_labels)
    objects = np.zeros(labels.shape, np.int32)
    kept = np.zeros(labels.shape, bool)
    scores: list[np.ndarray] = []
    if labels.max(initial=0) == 0:
        return Selection(objects, np.zeros(0), kept)
    margin = int(np.ceil(params.crop_margin_mm / spacing_mm))
    # image beyond each crop that the local input scaling reads, in the image's own pixels
    context_px = int(np.ceil(local_context_px() * NET_SPACING_MM / spacing_mm)) + 1 \
        if params.input_normalisation == "local" else 0
    filled_boxes = []
    n_objects = 0
    for box, members in candidate_crops(labels, margin):
        key = (box[0].start, box[0].stop, box[1].start, box[1].stop)
        prediction = predictions.get(key) if predictions is not None else None
        if prediction is None:
            outer, context = with_context(box, labels.shape, context_px)
            prediction = predict_crop(model.net, pixels[outer], spacing_mm, params.input_normalisation,
                                      context)
            if predictions is not None:
                predictions[key] = prediction
        pieces, score = outline_objects(prediction, labels[box], members, params)
        n = len(score)
        if n == 0:
            continue
        scores.append(score)
        inside = pieces > 0
        objects[box][inside] = pieces[inside] + n_objects
        n_objects += n
        keep = np.flatnonzero(score >= params.prediction_threshold) + 1
        if keep.size:
            kept[box] |= np.isin(pieces, keep)
            filled_boxes.append(box)
    # A hole of a kept object lies inside its box, so inside its crop.
    for box in filled_boxes:
        kept[box] = ndimage.binary_fill_holes(kept[box])
    return Selection(objects, np.concatenate(scores) if scores else np.zeros(0), kept)
