"""Real mammograms as backgrounds: read, rescale to 12 bits, orient, find the breast.

Any single-frame grey-scale DICOM image pydicom can decode is accepted (MG, or
digitised film stored as Secondary Capture like the NEMA WG04 and CBIS-DDSM
samples). Pixel spacing: Imager Pixel Spacing, else Pixel Spacing, else the
configured default (0.05 mm: the NEMA WG04 MG1 image states Spatial Resolution
0.05 mm and DDSM's Lumisys scanner sampled at 50 um; DDSM's Howtek and DBA
scanners used 43.5 and 42 um, so an error of up to ~15 % in scale is possible
for a CBIS-DDSM image whose scanner is unknown) -- the assumption is recorded in
the output's DerivationDescription and in labels.csv.

The image is returned as an :class:`~training.synth.anatomy.Anatomy` in canonical
orientation (chest wall at column 0) so clusters are placed exactly as on
synthetic anatomy; ``flipped`` says whether it must be mirrored back.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage as ndi

from .anatomy import Anatomy

REFERENCE_RANGE = 1000.0  # p95 - p5 of breast pixels in a typical synthetic image


@dataclass
class Background:
    anatomy: Anatomy
    spacing_mm: float
    spacing_source: str  # "ImagerPixelSpacing", "PixelSpacing" or "assumed"
    laterality: str
    view: str
    flipped: bool
    contrast_scale: float  # multiply calcification contrast by this on this image
    source_name: str
    source_sop_instance_uid: str


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def find_breast(image: np.ndarray) -> np.ndarray:
    """The breast (bool) of a grey-scale mammogram, dense tissue bright: pixels above
    0.5 x Otsu, the largest component, holes filled. Use a downsampled copy (every 4th
    pixel is plenty); burned-in markers outside the breast are dropped as small components."""
    mask = image > 0.5 * _otsu(image)
    lab, n = ndi.label(mask)
    if n:
        sizes = ndi.sum(mask, lab, range(1, n + 1))
        mask = lab == (1 + int(np.argmax(sizes)))
    return ndi.binary_fill_holes(mask)


def _view(ds) -> str:
    texts = [str(ds.get("ViewPosition", "")), " ".join(map(str, ds.get("PatientOrientation", []) or [])),
             str(ds.get("PatientName", "")), str(ds.get("SeriesDescription", ""))]
    seq = ds.get("ViewCodeSequence")
    if seq:
        texts.insert(0, str(seq[0].get("CodeMeaning", "")))
    for text in texts:
        t = text.upper()
        if "MLO" in t or "OBLIQUE" in t:
            return "MLO"
        if "CC" in t or "CRANIO" in t:
            return "CC"
    return "CC"


def load_background(path: str | Path, default_spacing_mm: float,
                    rng: np.random.Generator | None = None) -> Background:
    """Read ``path`` and prepare it as a canonical 12-bit background (``rng`` is unused:
    preparing a background is deterministic)."""
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    if stored.ndim != 2:
        raise ValueError(f"{path}: background must be a single-frame grey-scale image")
    img = stored.astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        img = img.max() - img
    spacing, source = None, "assumed"
    for kw in ("ImagerPixelSpacing", "PixelSpacing"):
        v = ds.get(kw)
        if v is not None and len(v) == 2 and float(v[0]) > 0:
            spacing, source = float(v[0]), kw
            break
    if spacing is None:
        spacing = float(default_spacing_mm)
    # rescale to 12 bits on robust percentiles of the whole image
    lo, hi = np.percentile(img[::4, ::4], [0.5, 99.95])
    img = (img - lo) * np.float32(3900.0 / max(hi - lo, 1e-6)) + np.float32(40.0)
    np.clip(img, 0, 4095, out=img)
    small = img[::4, ::4]
    mask = find_breast(small)
    cols = mask.shape[1]
    flipped = bool(mask[:, cols // 2:].sum() > mask[:, : cols // 2].sum())
    if flipped:
        img, mask = img[:, ::-1].copy(), mask[:, ::-1].copy()
    lat = str(ds.get("ImageLaterality", ds.get("Laterality", "")) or "")
    if lat not in ("L", "R"):
        lat = "R" if flipped else "L"  # stored with the chest wall on the right -> right breast
    view = _view(ds)
    rows_full, cols_full = img.shape
    up = lambda a, order: ndi.zoom(a, (rows_full / a.shape[0], cols_full / a.shape[1]), order=order,  # noqa: E731
                                   grid_mode=True, mode="nearest")[:rows_full, :cols_full]
    depth_small = ndi.distance_transform_edt(mask).astype(np.float32) * np.float32(4 * spacing)
    breast = up(mask.astype(np.uint8), 0) > 0
    depth = up(depth_small, 1)
    # "density": local mean brightness over ~5 mm, within the breast
    dens_small = ndi.gaussian_filter(np.where(mask, small if not flipped else small[:, ::-1], 0)
                                     .astype(np.float32), 2.5 / (4 * spacing))
    norm = ndi.gaussian_filter(mask.astype(np.float32), 2.5 / (4 * spacing))
    density = up(np.where(norm > 1e-3, dens_small / np.maximum(norm, 1e-3), 0).astype(np.float32), 1)
    pectoral = np.zeros_like(breast)
    if view == "MLO":  # keep clusters out of the pectoral muscle: upper chest-wall triangle
        yy = np.arange(rows_full)[:, None] / (0.45 * rows_full)
        xx = np.arange(cols_full)[None, :] / (0.35 * cols_full)
        pectoral = (yy + xx) < 1.0
    vals = img[::4, ::4][mask]  # img and mask are both in canonical orientation here
    p5, p95 = np.percentile(vals, [5, 95]) if vals.size else (0.0, REFERENCE_RANGE)
    contrast_scale = float(np.clip((p95 - p5) / REFERENCE_RANGE, 0.5, 2.0))
    # noise estimate: MAD of a Laplacian inside the breast
    lap = ndi.laplace(img[::2, ::2][: 512, : 512])
    noise = float(1.4826 * np.median(np.abs(lap - np.median(lap))) / np.sqrt(20))
    anatomy = Anatomy(image=np.ascontiguousarray(img, dtype=np.float32), breast=breast,
                      pectoral=pectoral, density=density, depth_mm=depth,
                      nipple_rc=_nipple(breast), noise_sigma=noise, distractors=[])
    return Background(anatomy, spacing, source, lat, view, flipped, contrast_scale,
                      Path(path).name, str(ds.get("SOPInstanceUID", "")))


def _nipple(breast: np.ndarray) -> tuple[float, float]:
    """The breast pixel furthest from the chest wall (column 0): (row, col)."""
    cols = np.nonzero(breast.any(axis=0))[0]
    if cols.size == 0:
        return breast.shape[0] / 2, breast.shape[1] / 2
    c = int(cols.max())
    rows = np.nonzero(breast[:, c])[0]
    return float(rows.mean()), float(c)
