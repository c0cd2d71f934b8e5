"""How detectable the simulator's calcifications are: an ideal-observer bound (``calcnode seg-ceiling``).

A FROC target such as "sensitivity >= 0.80 at <= 1 false positive per cm²" is only meaningful if
the data allow it. On a ``calcnode synth`` set the truth is complete: the calcification-free
background of every image can be drawn again from the image's own random stream
(:func:`training.synth.dataset.image_rng`), so each particle's signal is known exactly (image
minus background) and so are the statistics of the background it has to be found in.

For every particle inside an ROI this computes the detectability index d' of the **prewhitening
matched filter** that knows the particle's exact shape and position (the ideal linear observer
for a known signal in stationary Gaussian noise):

* the background's noise power spectrum (NPS) is estimated over the ROI's box (plus a margin)
  from Hann-tapered windows of the calcification-free background, high-passed at 1 mm (the slow
  density trend tells nothing about a 0.3 mm particle);
* the filter is ``h = F^-1(T / NPS)``, ``T`` the particle's own signal (the pixels within 0.42 mm
  of it that are nearer to it than to any other particle);
* ``d' = (h . t) / std(h . n)`` over the background windows ``n`` (empirical, so no Fourier
  normalisation constant can be wrong).

A searching observer must also reject the background's own peaks. Each particle's filter is
correlated with its ROI's background; the local maxima (0.35 mm neighbourhoods, the evaluation's
match radius) give the threshold ``z*`` that yields the allowed false positives per cm² of ROI. A
particle is then found with probability ``Phi(d' - z*)``, and the **bound** is the mean of that
over particles.

It is generous to any real detector: the filter is told each particle's shape and position, searches
with that one template (a detector that must try several shapes has more false positives at the same
threshold), and the threshold comes from the pure background. It is a bound
for linear detectors in Gaussian noise; the simulator's texture is close to that, but a
non-linear detector could in principle exploit what it is not. The same held-out set and the
same matching radius as ``calcnode evaluate-seg`` make the two comparable.

Background-inserted sets (``synth --background``) are measured too: their background is the real
view prepared again as the simulator prepared it (deterministic), so the bound covers the same
particles as ``evaluate-seg``, real-background insertions included. The Gaussian, stationary noise
model fits a real view less well than the simulator's tissue (its structures are not a stationary
texture): there the figure is the bound of the best *linear* observer with the ROI's own NPS, not
of every observer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage, stats
from scipy import signal as signal_fft

from analysis.dicom_input import read_geometry

from ..datasets import image_rois, load_truth, roi_region, scan_dataset
from .evaluate import MATCH_DISTANCE_MM, particle_kinds
from ..synth.config import SynthConfig
from ..synth.dataset import calcification_free_image
from ..synth.tissue_stats import noise_power_spectrum

WINDOW_MM = 2.24          # NPS / filter window (32 px at 0.07 mm): holds the largest particle's template
HIGHPASS_MM = 1.0         # the slow density trend is removed with a Gaussian of this sigma
TEMPLATE_RADIUS_MM = 0.42 # a particle's signal: its pixels and the blur within this distance
MARGIN_MM = 3.4           # background around an ROI's box that the NPS is estimated on


def _px(mm: float, spacing_mm: float) -> int:
    return max(1, int(round(mm / spacing_mm)))


def noise_windows(background: np.ndarray, window: int) -> np.ndarray:
    """Half-overlapping ``window`` x ``window`` tiles of ``background``, each minus its mean."""
    rows, cols = background.shape
    tiles = [background[r:r + window, c:c + window]
             for r in range(0, rows - window + 1, window // 2)
             for c in range(0, cols - window + 1, window // 2)]
    if not tiles:
        raise ValueError(f"background {background.shape} is smaller than one {window} px window")
    tiles = np.stack(tiles).astype(np.float64)
    return tiles - tiles.mean(axis=(1, 2), keepdims=True)


def prewhitened_filter(template: np.ndarray, nps: np.ndarray) -> np.ndarray:
    """The prewhitening matched filter ``F^-1(T / NPS)`` of ``template`` (same size as the NPS)."""
    return np.real(np.fft.ifft2(np.fft.fft2(template) / nps))


def detectability_index(kernel: np.ndarray, template: np.ndarray, windows: np.ndarray) -> float:
    """d': the filter's response to the signal over the spread of its response to the background."""
    noise = np.tensordot(windows, kernel, axes=([1, 2], [0, 1]))
    return float((kernel * template).sum() / noise.std())


def search_threshold(maxima: np.ndarray, area_cm2: float, fp_per_cm2: float) -> float:
    """The z above which the background's local maxima give ``fp_per_cm2`` per cm²."""
    allowed = int(np.floor(fp_per_cm2 * area_cm2))
    ranked = np.sort(np.asarray(maxima, float))[::-1]
    return float(ranked[allowed]) if allowed < len(ranked) else float(ranked[-1]) if len(ranked) else 0.0


@dataclass
class RoiObserver:
    """The ideal observer on one ROI: per particle its truth label, type, d', and the z of the
    background's local maxima (inside the ROI) under the particle's own filter."""

    kinds: list[str]
    dprime: list[float]
    maxima: list[np.ndarray]
    area_cm2: float
    labels: list[int]

    def found(self, fp_per_cm2: float) -> np.ndarray:
        """Per particle, the probability of finding it when the ROI may hold ``fp_per_cm2``."""
        return np.array([stats.norm.cdf(d - search_threshold(m, self.area_cm2, fp_per_cm2))
                         for d, m in zip(self.dprime, self.maxima)])


def roi_observer(signal: np.ndarray, background: np.ndarray, truth: np.ndarray, roi: np.ndarray,
                 kind_of: dict[int, str], spacing_mm: float) -> RoiObserver:
    """The ideal observer inside one ROI (all arrays cropped to the ROI's box plus a margin).

    ``signal``: the calcifications alone (image minus background), ``background``: the
    calcification-free image, ``truth``: particle labels, ``roi``: bool, the ROI. Each particle is
    searched for with its own filter over the ROI's background, so the threshold is the one that
    filter needs.
    """
    window = _px(WINDOW_MM, spacing_mm) // 2 * 2
    flat = background - ndimage.gaussian_filter(background, HIGHPASS_MM / spacing_mm)
    windows = noise_windows(flat, window)
    nps = noise_power_spectrum(windows)
    distance, (ir, ic) = ndimage.distance_transform_edt(truth == 0, return_indices=True)
    owner = truth[ir, ic]
    reach = TEMPLATE_RADIUS_MM / spacing_mm
    neighbourhood = 2 * _px(MATCH_DISTANCE_MM, spacing_mm) + 1
    ids = [int(i) for i in np.unique(truth[roi]) if i > 0]
    centres = ndimage.center_of_mass(truth > 0, truth, ids) if ids else []
    kinds, dprime, maxima, labels = [], [], [], []
    for label, (r, c) in zip(ids, centres):
        r, c = int(round(r)), int(round(c))
        if not roi[r, c]:   # a particle counts where its centroid is (as in evaluate-seg)
            continue
        r0, c0 = r - window // 2, c - window // 2
        if r0 < 0 or c0 < 0 or r0 + window > truth.shape[0] or c0 + window > truth.shape[1]:
            continue
        box = (slice(r0, r0 + window), slice(c0, c0 + window))
        template = np.where((owner[box] == label) & (distance[box] <= reach), signal[box], 0.0)
        kernel = prewhitened_filter(template, nps)
        labels.append(label)
        kinds.append(kind_of.get(label, "unknown"))
        dprime.append(detectability_index(kernel, template, windows))
        z = signal_fft.fftconvolve(flat, kernel[::-1, ::-1], mode="same")  # correlation with the filter
        z = (z - z.mean()) / z.std()
        maxima.append(z[(z == ndimage.maximum_filter(z, neighbourhood)) & roi])
    return RoiObserver(kinds, dprime, maxima, float(roi.sum() * spacing_mm ** 2 / 100.0), labels)


def dataset_observers(root: str | Path) -> list[RoiObserver]:
    """The ideal observer on every ROI of one ``calcnode synth`` folder."""
    return [o for _, observers in image_observers(root) for o in observers]


def synth_config(root: str | Path) -> SynthConfig:
    """The configuration a ``calcnode synth`` folder was made with (what draws its backgrounds
    again); ValueError for a folder that is not one, or whose real background views are missing."""
    meta = Path(root) / "dataset.json"
    if not meta.is_file():
        raise ValueError(f"{root}: no dataset.json - the bound needs a calcnode synth folder")
    config = SynthConfig.from_json(json.loads(meta.read_text())["config"])
    missing = [b for b in config.backgrounds if not Path(b).is_file()]
    if missing:  # the set was inserted into real views that are not where it was made
        raise ValueError(f"{root}: the real views it was inserted into are not found ({', '.join(missing)})")
    return config


def item_observers(item, config: SynthConfig) -> list[RoiObserver]:
    """The ideal observer on every ROI of one image (a :class:`training.datasets.DatasetImage` with
    ROIs and truth) of the ``calcnode synth`` folder made with ``config``."""
    ds = pydicom.dcmread(item.image_path)
    pixels = ds.pixel_array.astype(np.float64)
    case = int(Path(item.image_path).parent.name.removeprefix("SYNTH")) - 1
    background = calcification_free_image(config, case, str(ds.ImageLaterality), str(ds.ViewPosition))
    signal = pixels - background
    geometry = read_geometry(ds)
    rois, _ = image_rois(item, geometry)
    region = roi_region(rois, geometry)
    if region is None:
        return []
    truth = load_truth(item.truth_path, pixels.shape).astype(np.int64)
    kind_of = particle_kinds(item.truth_path) or {}
    # an inserted real view keeps its own spacing
    spacing = float(np.mean(geometry.pixel_spacing_mm or (config.pixel_spacing_mm,) * 2))
    margin = _px(MARGIN_MM, spacing)
    labelled, _ = ndimage.label(region)
    observers = []
    for index, box in enumerate(ndimage.find_objects(labelled), 1):
        box = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
        observers.append(roi_observer(signal[box], background[box], truth[box], labelled[box] == index,
                                      kind_of, spacing))
    return observers


def image_observers(root: str | Path):
    """Yield ``(truth_path, [RoiObserver per ROI])`` for every image with ROIs of one ``calcnode
    synth`` folder (sorted by path, as :func:`training.datasets.scan_dataset`)."""
    config = synth_config(root)
    for item in scan_dataset(root, require_truth=True):
        if item.roi_paths:
            yield Path(item.truth_path), item_observers(item, config)


def particles_found(observers: list[RoiObserver], fp_per_cm2: float = 1.0) -> dict[int, float]:
    """Per truth label, the probability that the ideal observer finds the particle at
    ``fp_per_cm2`` (the best over the ROIs that hold it: ROIs may overlap)."""
    out: dict[int, float] = {}
    for o in observers:
        for label, p in zip(o.labels, o.found(fp_per_cm2)):
            out[label] = max(out.get(label, 0.0), float(p))
    return out


def ideal_observer_bound(data_dirs: list[str | Path], fp_per_cm2: tuple[float, ...] = (0.5, 1.0, 2.0)) -> dict:
    """Per type and overall: d' quartiles and the expected sensitivity of the ideal observer at each
    allowed false-positive rate (per cm² of ROI)."""
    observers, skipped = [], []
    for root in data_dirs:
        try:
            observers += dataset_observers(root)
        except ValueError as exc:
            skipped.append(str(exc))
    kinds = sorted({k for o in observers for k in o.kinds})
    if not kinds:
        raise ValueError("no particle inside an ROI in any usable folder" + (f" ({'; '.join(skipped)})" if skipped else ""))
    area = sum(o.area_cm2 for o in observers)
    report: dict = {"rois": len(observers), "region_cm2": round(area, 3), "skipped": skipped,
                    "matching_radius_mm": MATCH_DISTANCE_MM, "by_type": {}, "overall": {}}
    for kind in kinds:
        d = np.array([x for o in observers for k, x in zip(o.kinds, o.dprime) if k == kind])
        report["by_type"][kind] = {"particles": int(len(d)),
                                   "dprime_p25_p50_p75": np.round(np.percentile(d, [25, 50, 75]), 2).tolist()}
    for rate in fp_per_cm2:
        found = [(k, p) for o in observers for k, p in zip(o.kinds, o.found(rate))]
        for kind in kinds:
            report["by_type"][kind][f"sensitivity_at_{rate:g}_fp_per_cm2"] = round(
                float(np.mean([p for k, p in found if k == kind])), 3)
        report["overall"][f"sensitivity_at_{rate:g}_fp_per_cm2"] = round(float(np.mean([p for _, p in found])), 3)
    report["overall"]["particles"] = sum(len(o.kinds) for o in observers)
    return report
