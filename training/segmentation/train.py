"""Training the selection CNN (``calcnode train-seg``).

Images are split by patient into training and validation (so no patient is on both sides);
patches come from :mod:`training.segmentation.patches`; the loss is HDoGReg's soft Dice on the
continuous proximity target plus binary cross-entropy (the Dice term alone leaves the
background's output free to drift above the 10^-3.5 decision threshold). Training stops
when the validation loss has not improved for ``patience`` epochs and the best epoch's
weights are kept.

Views without calcifications (``negatives``: real tissue, :mod:`training.segmentation.negatives`)
add hard negatives: every HDoG candidate of each view's whole breast outside its marked lesions
(:func:`training.segmentation.patches.negative_view_patches`). There are far more of them than of
anything else (~7,500 on a real CC view, ~19,000 on an MLO), and most are easy, so each epoch draws
``NegativeSampling.per_epoch`` of them: half the ones the network currently scores highest
(its maximum output over the patch: the vessels, ligaments and skin line it calls calcification)
and half uniformly among the rest, so that every real texture keeps being seen (the hardest are
searched in a random pool of ``NegativeSampling.pool``: scoring all of them each epoch would cost
as much as the epoch). ``TrainSettings.patches_per_epoch`` draws a fresh random share of the data
sets' own patches each epoch; with both, the share of real tissue in an epoch is set exactly.

Training may start from an existing model's weights (``init``): the shipped model is fine-tuned
rather than trained again from scratch, which takes a third of the epochs on two shared cores. With a
larger ``TrainSettings.width`` than the model's, the model is first widened without changing its
function (:mod:`training.segmentation.widen`).

With ``TrainSettings.seen_only`` the simulated particles that the ideal observer cannot find are
not taught as calcifications (:mod:`training.segmentation.patches`, "only what can be seen is
taught"): their neighbourhoods are left out of the loss.

The decision threshold is then calibrated on the validation images' ROIs: HDoGReg's 10^-3.5
belongs to its own network's output scale (with this network nearly every candidate passes it),
so the model stores the most sensitive threshold that keeps false positives at or below
``CALIBRATION_FP_PER_CM2`` there.
"""
from __future__ import annotations

import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis.segmentation.cnn import DILATIONS, NET_SPACING_MM, ProximityNet, SegmentationModel, SelectionParams
from analysis.segmentation.models import NOT_FOR_CLINICAL_USE, NOT_FOR_CLINICAL_USE_REAL_NEGATIVES

from ..datasets import DatasetImage, scan_dataset
from ..model_files import save_segmentation_model
from .evaluate import (SUPPORT_THRESHOLDS, collect_matches, froc, negative_objects, negatives_curve,
                       sensitivity_at)
from .negatives import DEFAULT_NEGATIVE_SPACING_MM, NegativeView, load_negative, negative_paths
from .patches import (IGNORE, KINDS, PATCH_PX, SEEN_FP_PER_CM2, SEEN_PROBABILITY, Patches, image_patches,
                      negative_view_patches)
from .widen import deepen, widen, with_line_filters


CALIBRATION_FP_PER_CM2 = 1.0
# objects per cm² of breast on views without calcifications (issue 20's real-tissue target)
CALIBRATION_NEGATIVE_FP_PER_CM2 = 0.5


def calibrate_threshold(model: SegmentationModel, items: list[DatasetImage],
                        max_fp_per_cm2: float = CALIBRATION_FP_PER_CM2,
                        negatives: list[NegativeView] = (),
                        max_negative_fp_per_cm2: float = CALIBRATION_NEGATIVE_FP_PER_CM2) -> tuple[float, dict]:
    """The prediction threshold for the model, from the FROC on ``items`` (images with ROIs): the
    most sensitive one with at most ``max_fp_per_cm2`` false positives per cm² of ROI and, when
    views without calcifications are given (``negatives``), at most ``max_negative_fp_per_cm2``
    objects per cm² of their breasts (whole breast, all views together).

    Why both: the ROI figure is what a radiologist's drawn region sees, the breast figure what a view
    without an ROI (cluster detection, the SEG) sees. On real processed tissue the second binds: a
    threshold at 1 FP/cm² of simulated ROIs kept 1.1-2.0 objects per cm² of a real normal breast
    (docs/segmentation.md)."""
    images = collect_matches([i for i in items if i.roi_paths], model, "calibration")
    if not images:
        return model.params.prediction_threshold, {"calibrated": False,
                                                   "reason": "no validation image with ROIs"}
    points = froc(images, "hdog_cnn", SUPPORT_THRESHOLDS)
    breast = None
    if negatives:
        views = [negative_objects(v, model) for v in negatives]
        curve = negatives_curve(views, SUPPORT_THRESHOLDS)  # point k and curve[k]: the same threshold
        points = [{**p, "fp_per_cm2_breast": c["fp_per_cm2_breast"]} for p, c in zip(points, curve)]
        points = [p for p in points if p["fp_per_cm2_breast"] <= max_negative_fp_per_cm2] or points[-1:]
        breast = {"views": [v.name for v in views], "breast_cm2": round(sum(v.breast_cm2 for v in views), 2),
                  "max_fp_per_cm2_breast": max_negative_fp_per_cm2, "curve": curve}
    best = sensitivity_at(points, max_fp_per_cm2)
    if best["threshold"] is None:  # never that few false positives: the strictest threshold
        best = min(points, key=lambda p: (p["fp_per_cm2"], -p["sensitivity"]))
    best = dict(best)
    at_breast = best.pop("fp_per_cm2_breast", None)
    result = {"calibrated": True, "max_fp_per_cm2": max_fp_per_cm2, "validation_images": len(images), **best}
    if breast is not None:
        result["negative_views"] = {**breast, "fp_per_cm2_breast": round(at_breast, 3)}
    return float(best["threshold"]), result


_KEEP = object()


def recalibrate(model_path: str | Path, data_dirs: list[str | Path], out: str | Path,
                max_fp_per_cm2: float = CALIBRATION_FP_PER_CM2,
                outline_level: float | None | object = _KEEP,
                negatives: list[NegativeView] = (),
                max_negative_fp_per_cm2: float = CALIBRATION_NEGATIVE_FP_PER_CM2) -> SegmentationModel:
    """The model of ``model_path`` with its threshold calibrated on ``data_dirs`` instead of its
    training run's validation split, written to ``out`` (``calcnode calibrate-seg``).

    ``outline_level``, when given, replaces the model's outline level (a float in (0, 1), or None
    for HDoGReg's whole candidates) before the threshold is calibrated: the level decides which
    pieces are scored, so the threshold belongs to it. The weights are the same either way.

    Why: the validation split is drawn from the training data, so each retraining calibrates on
    other images, and on a held-out set the same 1 FP/cm² came out anywhere from 0.8 to 1.3
    (docs/segmentation.md). A fixed calibration set (the Makefile's seg-val, seeds never trained
    or tested on) puts every model's operating point on the same footing. With ``negatives`` (views
    without calcifications) the threshold must also keep at most ``max_negative_fp_per_cm2`` objects
    per cm² of their breasts (:func:`calibrate_threshold`). The weights are unchanged; the previous
    calibration stays in the model's info.
    """
    model = SegmentationModel.load(model_path)
    previous_params = model.params
    if outline_level is not _KEEP:  # SelectionParams refuses a level outside (0, 1)
        model = SegmentationModel(net=model.net, params=replace(model.params, outline_level=outline_level),
                                  info=model.info)
    items = [i for d in data_dirs for i in scan_dataset(d, require_truth=True)]
    if not any(i.roi_paths for i in items):
        raise ValueError(f"no image with ROIs and truth in {', '.join(map(str, data_dirs))}")
    threshold, calibration = calibrate_threshold(model, items, max_fp_per_cm2, negatives, max_negative_fp_per_cm2)
    previous = model.info.get("threshold_calibration")
    info = {**model.info,
            "threshold_calibration": {**calibration, "data": [str(d) for d in data_dirs],
                                      "outline_level": model.params.outline_level,
                                      "previous": {"threshold": previous_params.prediction_threshold,
                                                   "outline_level": previous_params.outline_level,
                                                   "calibration": previous}}}
    calibrated = SegmentationModel(net=model.net, params=replace(model.params, prediction_threshold=threshold),
                                   info=info)
    save_segmentation_model(calibrated, out)
    return calibrated


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    validation_fraction: float = 0.15
    max_epochs: int = 40
    patience: int = 6           # epochs without validation improvement before stopping
    lr_patience: int = 2        # epochs without improvement before the learning rate is halved
    batch_size: int = 64
    learning_rate: float = 2e-3
    width: int = 8              # with ``init``: the model's own width, or a larger one to widen it to
    workers: int = 2
    patches_per_epoch: int | None = None  # the data sets' patches per epoch: None = all
    seen_only: bool = False     # teach only the particles the ideal observer finds (patches.py)
    # the network's layers (None: the init's, or DILATIONS); with ``init``, layers inserted before its
    # last one (widen.deepen). A larger receptive field needs larger patches (``patch_px``) to see it.
    dilations: tuple[int, ...] | None = None
    # fixed oriented line filters on the input (ProximityNet.line_filters; None: the init's, or none);
    # with ``init`` and none there, they are added without changing its output (widen.with_line_filters)
    line_filters: int | None = None
    patch_px: int = PATCH_PX    # side of the training patches' target at 0.07 mm (patches.py)
    # image around each patch that the network sees and the loss does not (px at 0.07 mm): with the
    # receptive field's radius every pixel in the loss has its whole field on the image, as in an
    # inference crop; with 0 the outer pixels' fields reach into the layers' zero padding
    patch_context_px: int = 0
    # calibrate the threshold on the training run's own validation split (minutes); without, the
    # model carries SelectionParams' default threshold until ``calcnode calibrate-seg`` sets one
    calibrate: bool = True


@dataclass(frozen=True)
class NegativeSampling:
    """How the negative views' patches enter each epoch (see the module docstring)."""

    per_epoch: int = 4000          # patches of negative views per epoch (all of them when fewer)
    hardest_fraction: float = 0.5  # of those, the ones the current network scores highest ...
    pool: int = 12000              # ... among this many drawn at random (scoring all costs too much)


def crop_margin_mm(net: ProximityNet) -> float:
    """Context around a candidate's box that gives its pixels their whole receptive field, in mm:
    the field's radius plus 4 px (1.12 + 0.28 = 1.4 mm for the default layers, the value models
    have always carried)."""
    return round((net.receptive_field_px // 2 + 4) * NET_SPACING_MM, 2)


def split_by_patient(items: list[DatasetImage], fraction: float, seed: int):
    patients = sorted({i.patient_id for i in items})
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    n_val = max(1, int(round(fraction * len(patients)))) if len(patients) > 1 else 0
    val = set(patients[:n_val])
    return [i for i in items if i.patient_id not in val], [i for i in items if i.patient_id in val]


def _patches_job(args) -> tuple[Patches, tuple[int, int] | None]:
    """One image's patches, and with a synth configuration (seen-only targets) how many of its
    particles inside ROIs the ideal observer finds and how many it was asked about."""
    item, seed, params, config, patch_px, context_px = args
    found = None
    if config is not None and item.roi_paths:
        from .ceiling import item_observers, particles_found
        found = particles_found(item_observers(item, config), SEEN_FP_PER_CM2)
    counts = (sum(p >= SEEN_PROBABILITY for p in found.values()), len(found)) if found is not None else None
    return image_patches(item, seed, params, found, patch_px, context_px), counts


def _negative_job(args) -> Patches:
    path, spacing_mm, seed, params, patch_px, context_px = args
    return negative_view_patches(load_negative(path, spacing_mm), seed, params, patch_px, context_px)


def collect_negative_patches(paths: list[Path], spacing_mm: float, seed: int, workers: int,
                             params: SelectionParams = SelectionParams(), patch_px: int = PATCH_PX,
                             context_px: int = 0) -> Patches:
    jobs = [(path, spacing_mm, seed * 100019 + k, params, patch_px, context_px) for k, path in enumerate(paths)]
    parts: list[Patches] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for path, part in zip(paths, pool.map(_negative_job, jobs)):
            parts.append(part)
            print(f"negatives: {path.name}: {len(part.x)} patches", file=sys.stderr, flush=True)
    return Patches.concat(parts, patch_px, context_px)


def centre(logits: torch.Tensor, context_px: int) -> torch.Tensor:
    """The network's output without the ``context_px`` border that patches carry as context only
    (:class:`training.segmentation.patches.Patches`)."""
    if not context_px:
        return logits
    return logits[..., context_px:logits.shape[-2] - context_px, context_px:logits.shape[-1] - context_px]


def _patch_scores(net: nn.Module, x: np.ndarray, context_px: int = 0, batch: int = 512) -> np.ndarray:
    """The network's maximum output (probability) over each patch (its target's part)."""
    net.eval()
    out = np.empty(len(x), np.float32)
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            logits = centre(net(torch.from_numpy(x[start:start + batch])[:, None].float()), context_px)
            out[start:start + batch] = torch.sigmoid(logits).amax(dim=(1, 2, 3)).numpy()
    return out


def draw_negatives(net: nn.Module, x: np.ndarray, sampling: NegativeSampling,
                   rng: np.random.Generator, context_px: int = 0) -> np.ndarray:
    """Indices into ``x`` (the negative-view patches) for one epoch: of ``sampling.per_epoch``,
    the ``hardest_fraction`` that ``net`` scores highest (maximum output over the patch) among a
    random pool of ``sampling.pool``, the rest uniformly among the others; every patch when there
    are at most ``per_epoch``."""
    n = len(x)
    if n <= sampling.per_epoch:
        return np.arange(n)
    pool = np.sort(rng.choice(n, size=min(n, sampling.pool), replace=False))
    n_hard = int(round(sampling.per_epoch * sampling.hardest_fraction))
    scores = _patch_scores(net, x[pool], context_px)
    hard = pool[np.argsort(-scores, kind="stable")[:n_hard]]
    rest = np.setdiff1d(np.arange(n), hard)
    return np.concatenate([hard, rng.choice(rest, size=sampling.per_epoch - len(hard), replace=False)])


def collect_patches(items: list[DatasetImage], seed: int, workers: int, label: str,
                    params: SelectionParams = SelectionParams(), configs: dict | None = None,
                    seen: list | None = None, patch_px: int = PATCH_PX, context_px: int = 0) -> Patches:
    """The patches of ``items``. ``configs`` (seen-only targets): per item index, the synth
    configuration of its folder (None: every particle taught); ``seen`` collects per image the
    (particles found, particles asked) of the ideal observer."""
    jobs = [(item, seed * 100003 + k, params, (configs or {}).get(k), patch_px, context_px)
            for k, item in enumerate(items)]
    parts: list[Patches] = []
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for k, (part, counts) in enumerate(pool.map(_patches_job, jobs), 1):
            parts.append(part)
            if seen is not None and counts is not None:
                seen.append(counts)
            print(f"\r{label}: patches from {k}/{len(items)} images "
                  f"({sum(len(p.x) for p in parts)} patches, {time.monotonic() - started:.0f} s)",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return Patches.concat(parts, patch_px, context_px)


def synth_configs(items: list[DatasetImage], roots: dict[str, str]) -> dict[int, object]:
    """Per item index, the ``calcnode synth`` configuration of its folder (``roots``: image path ->
    data folder), for seen-only targets; folders that are not synth sets are left out (their
    particles are all taught) and named on stderr."""
    from .ceiling import synth_config

    by_root: dict[str, object] = {}
    for root in sorted(set(roots.values())):
        try:
            by_root[root] = synth_config(root)
        except ValueError as exc:
            print(f"train-seg: every particle taught in {root}: {exc}", file=sys.stderr)
    return {k: by_root[roots[str(i.image_path)]] for k, i in enumerate(items) if roots[str(i.image_path)] in by_root}


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice plus binary cross-entropy over the pixels whose target is not ``IGNORE``."""
    valid = target != IGNORE
    if bool(valid.all()):
        prob = torch.sigmoid(logits)
        intersection = (prob * target).sum()
        dice = 1 - (2 * intersection + 1.0) / (prob.sum() + target.sum() + 1.0)
        return dice + nn.functional.binary_cross_entropy_with_logits(logits, target)
    weight = valid.to(logits.dtype)
    target = target.clamp(min=0)
    prob = torch.sigmoid(logits) * weight
    intersection = (prob * target).sum()
    dice = 1 - (2 * intersection + 1.0) / (prob.sum() + target.sum() + 1.0)
    bce = (nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum()
    return dice + bce / weight.sum().clamp(min=1.0)


def _augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator):
    k = int(rng.integers(4))
    if k:
        x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (2, 3))
    if rng.random() < 0.5:
        x, y = torch.flip(x, (3,)), torch.flip(y, (3,))
    return x, y


def _evaluate(net: nn.Module, data: Patches, batch: int) -> float:
    context = data.context_px
    net.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(data.x), batch):
            x = torch.from_numpy(data.x[start:start + batch])[:, None].float()
            y = torch.from_numpy(data.y[start:start + batch])[:, None].float()
            total += float(dice_bce_loss(centre(net(x), context), y)) * len(x)
            count += len(x)
    return total / max(count, 1)


def train_segmentation(data_dirs: list[str | Path], out: str | Path,
                       settings: TrainSettings = TrainSettings(),
                       params: SelectionParams = SelectionParams(), *,
                       negatives: list[str | Path] = (),
                       negative_spacing_mm: float = DEFAULT_NEGATIVE_SPACING_MM,
                       sampling: NegativeSampling = NegativeSampling(),
                       init: str | Path | None = None) -> SegmentationModel:
    """Train the selection CNN on ``data_dirs`` (images + ROIs + truth) and the views without
    calcifications ``negatives`` (files or folders; ``negative_spacing_mm`` assumed where a view
    states no spacing); start from the weights of the model file ``init`` when given. Writes the
    model to ``out`` and returns it."""
    torch.manual_seed(settings.seed)
    torch.set_num_threads(2)
    base = SegmentationModel.load(init) if init is not None else None
    # the init's identity now: training changes base.net in place when it is not widened
    base_sha256 = base.sha256 if base is not None else None
    base_dilations = base.net.dilations if base is not None else None
    if base is not None:  # refused before the patches are made (minutes on a large set)
        if base.params.input_normalisation != params.input_normalisation:
            raise ValueError(f"{init}: input scaling {base.params.input_normalisation!r}, "
                             f"training uses {params.input_normalisation!r}")
        if settings.width < base.net.width:
            raise ValueError(f"{init}: a width-{base.net.width} network cannot be fine-tuned at "
                             f"width {settings.width}")
    # built before the patches (minutes on a large set), so layers it cannot have are refused first
    if base is not None and settings.line_filters is not None \
            and settings.line_filters != base.net.line_filters and base.net.line_filters:
        raise ValueError(f"{init}: a network with {base.net.line_filters} line filters cannot be "
                         f"fine-tuned with {settings.line_filters}")
    if base is None:
        net = ProximityNet(width=settings.width, dilations=settings.dilations or DILATIONS,
                           line_filters=settings.line_filters or 0)
    else:
        # more layers or a larger width: more room, starting from the model's own function
        net = base.net
        if settings.dilations is not None and tuple(settings.dilations) != net.dilations:
            net = deepen(net, settings.dilations, seed=settings.seed)
        if settings.width > net.width:
            net = widen(net, settings.width, seed=settings.seed)
        if settings.line_filters and not net.line_filters:
            net = with_line_filters(net, settings.line_filters, seed=settings.seed)
    # a crop must give every output pixel its whole receptive field (1.4 mm for the default layers)
    params = replace(params, crop_margin_mm=crop_margin_mm(net))
    scanned = [(i, str(d)) for d in data_dirs for i in scan_dataset(d, require_truth=True)]
    items = [i for i, _ in scanned]
    roots = {str(i.image_path): d for i, d in scanned}  # image -> its data folder (seen-only targets)
    if len(items) < 2:
        raise ValueError(f"need at least 2 images with truth (*_labels.npz) in {', '.join(map(str, data_dirs))}; "
                         f"found {len(items)}")
    train_items, val_items = split_by_patient(items, settings.validation_fraction, settings.seed)
    print(f"train-seg: {len(items)} images ({len(train_items)} training, {len(val_items)} validation, "
          f"split by patient)", file=sys.stderr)
    seen: list[tuple[int, int]] = []
    train = collect_patches(train_items, settings.seed, settings.workers, "training", params,
                            synth_configs(train_items, roots) if settings.seen_only else None, seen,
                            settings.patch_px, settings.patch_context_px)
    val = collect_patches(val_items, settings.seed + 1, settings.workers, "validation", params,
                          synth_configs(val_items, roots) if settings.seen_only else None, seen,
                          settings.patch_px, settings.patch_context_px)
    if len(train.x) == 0 or len(val.x) == 0:
        raise ValueError("no training or validation patches could be made: are there calcifications "
                         "in the truth files?")
    negative_files = negative_paths(list(negatives))
    neg = collect_negative_patches(negative_files, negative_spacing_mm, settings.seed + 2,
                                   settings.workers, params, settings.patch_px, settings.patch_context_px)
    negative_views = [{"name": view.name, "sha256": view.sha256, "spacing_mm": list(view.spacing_mm),
                       "spacing_source": view.spacing_source,
                       "excluded_lesion": view.excluded is not None}
                      for view in (load_negative(p, negative_spacing_mm) for p in negative_files)]

    optimiser = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    # Halving the rate on a plateau lets the net settle on the faint (amorphous) particles that
    # a constant rate keeps jumping over: the validation loss was still falling at epoch 25.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5,
                                                           patience=settings.lr_patience)
    rng = np.random.default_rng(settings.seed)
    best_loss, best_state, best_epoch, history = np.inf, None, 0, []
    started = time.monotonic()
    for epoch in range(1, settings.max_epochs + 1):
        # negative views: this epoch's draw (the hardest for the network as it is now, and others)
        drawn = draw_negatives(net, neg.x, sampling, rng, settings.patch_context_px) if len(neg.x) \
            else np.zeros(0, int)
        # the data sets' patches: all, or a fresh random share each epoch (fine-tuning)
        own_patches = rng.permutation(len(train.x))[:settings.patches_per_epoch or len(train.x)]
        net.train()
        order = rng.permutation(len(own_patches) + len(drawn))  # >= len(own_patches): a negative view's
        epoch_loss = 0.0
        for start in range(0, len(order), settings.batch_size):
            index = np.sort(order[start:start + settings.batch_size])
            own = np.sort(own_patches[index[index < len(own_patches)]])
            other = np.sort(drawn[index[index >= len(own_patches)] - len(own_patches)])
            x = torch.from_numpy(np.concatenate([train.x[own], neg.x[other]]))[:, None].float()
            y = torch.from_numpy(np.concatenate([train.y[own], neg.y[other]]))[:, None].float()
            x, y = _augment(x, y, rng)
            optimiser.zero_grad()
            loss = dice_bce_loss(centre(net(x), settings.patch_context_px), y)
            loss.backward()
            optimiser.step()
            epoch_loss += loss.item() * len(index)
        train_loss = epoch_loss / max(len(order), 1)
        val_loss = _evaluate(net, val, 256)
        scheduler.step(val_loss)
        improved = val_loss < best_loss - 1e-4
        if improved:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        history.append({"epoch": epoch, "train_loss": round(train_loss, 5), "val_loss": round(val_loss, 5),
                        "learning_rate": optimiser.param_groups[0]["lr"]})
        print(f"epoch {epoch:2d}/{settings.max_epochs}: train {train_loss:.4f}  validation {val_loss:.4f}"
              f"{'  (best)' if improved else ''}  {time.monotonic() - started:.0f} s", file=sys.stderr)
        if epoch - best_epoch >= settings.patience:
            print(f"early stop: no validation improvement for {settings.patience} epochs", file=sys.stderr)
            break
    net.load_state_dict(best_state)
    net.eval()
    if settings.calibrate:
        threshold, calibration = calibrate_threshold(SegmentationModel(net=net, params=params), val_items)
        params = replace(params, prediction_threshold=threshold)
        print(f"calibrated prediction threshold {threshold:.4g} on the validation ROIs "
              f"({calibration})", file=sys.stderr)
    else:
        calibration = {"calibrated": False, "reason": "train-seg --no-calibration: set the threshold "
                                                      "with calcnode calibrate-seg"}
    notice = NOT_FOR_CLINICAL_USE_REAL_NEGATIVES if negative_views else NOT_FOR_CLINICAL_USE
    info = {
        "model": "calcnode HDoGReg selection CNN",
        "notice": notice,
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": [str(d) for d in data_dirs],
        "images": {"training": len(train_items), "validation": len(val_items)},
        "patches": {"training": int(len(train.x)), "validation": int(len(val.x)),
                    "training_by_kind": {k: int((train.kind == i).sum()) for i, k in enumerate(KINDS)},
                    "negative_views": {k: int((neg.kind == i).sum()) for i, k in enumerate(KINDS)
                                       if (neg.kind == i).any()}},
        "negative_views": negative_views,
        "seen_only": ({"seen_probability": SEEN_PROBABILITY, "observer_fp_per_cm2": SEEN_FP_PER_CM2,
                       "particles_asked": int(sum(n for _, n in seen)),
                       "particles_taught": int(sum(f for f, _ in seen))} if settings.seen_only else None),
        "negative_sampling": asdict(sampling) if negative_views else None,
        "init": ({"model": str(init), "sha256": base_sha256, "width": base.net.width,
                  "widened_to": net.width if net.width != base.net.width else None,
                  **({"deepened_from": list(base_dilations), "deepened_to": list(net.dilations)}
                     if net.dilations != base_dilations else {}),
                  **({"line_filters_added": net.line_filters}
                     if net.line_filters != base.net.line_filters else {})}
                 if init is not None else None),
        "settings": asdict(settings),
        "best_epoch": best_epoch,
        "best_validation_loss": round(float(best_loss), 5),
        "threshold_calibration": calibration,
        "history": history,
        "seconds": round(time.monotonic() - started, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    model = SegmentationModel(net=net, params=params, info=info)
    digest = save_segmentation_model(model, out)
    print(f"train-seg: wrote {out} (sha256 {digest[:16]}..., best epoch {best_epoch}, "
          f"validation loss {best_loss:.4f}). {notice}", file=sys.stderr)
    return model
