"""How a mammogram's tissue looks to a detector: the noise power spectrum (NPS) of breast patches.

Used to compare the simulator's For Presentation images with real ones (docs/simulator.md,
"Tissue realism") and by the ideal-observer bound (:mod:`training.segmentation.ceiling`).

The measurement, the same for real and simulated views:

* square patches (256 x 256 by default) on a half-overlapping grid, each wholly inside the
  breast, at least ``skin_margin_mm`` from the skin line (the breast mask's edge) and outside
  any ``exclude`` mask (pectoral muscle, a lesion);
* the view's patch set is scaled to a common mean level (:data:`LEVEL`), so views stored
  with other gains compare (the fluctuations of a processed mammogram scale with its level);
* each patch minus its own mean, Hann-tapered, ``|DFT|²`` corrected for the taper's power
  and divided by the patch's pixel count: the NPS in (display units)² · pixel², whose
  integral over frequency (cycles/pixel) is the patch variance;
* the NPS averaged over rings of radial frequency, per band of :data:`BANDS`.

Frequencies are in cycles/pixel: at 0.07 mm (the assumed spacing of the real-tissue views)
0.5 cycles/pixel is 7.1 cycles/mm.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Radial frequency bands, cycles/pixel.
BANDS = ((0.05, 0.1), (0.1, 0.15), (0.15, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5))
LEVEL = 2048.0  # display units every patch set is scaled to before its NPS is taken
PATCH = 256
SKIN_MARGIN_MM = 8.0  # patches keep this far inside the skin line (the enhanced edge, the roll-off)


def noise_power_spectrum(windows: np.ndarray) -> np.ndarray:
    """The NPS (|DFT|², per window) from Hann-tapered windows, corrected for the taper's power.

    ``windows``: (n, N, N), each already minus its mean. Returns (N, N), FFT order.
    """
    n = windows.shape[-1]
    hann = np.outer(np.hanning(n), np.hanning(n))
    power = np.mean(np.abs(np.fft.fft2(windows * hann)) ** 2, axis=0) / np.mean(hann ** 2)
    return np.maximum(power, power.max() * 1e-9)


def patch_corners(breast: np.ndarray, spacing_mm: float, size: int = PATCH,
                  skin_margin_mm: float = SKIN_MARGIN_MM, exclude: np.ndarray | None = None,
                  max_patches: int | None = None) -> list[tuple[int, int]]:
    """Top-left corners of ``size`` x ``size`` patches on a half-overlapping grid that lie wholly
    inside ``breast``, at least ``skin_margin_mm`` from its edge and outside ``exclude``.

    The distance is to the mask's own zeros, so an image edge the breast runs into (the chest
    wall of a cropped view) is not a skin line. ``max_patches`` keeps that many, evenly spread
    over the list (deterministic).
    """
    step = 4  # the distance map on a 4x coarser grid is plenty for a margin of millimetres
    inside = ndi.distance_transform_edt(breast[::step, ::step]) * step * spacing_mm >= skin_margin_mm
    if exclude is not None:
        inside &= ~exclude[::step, ::step]
    # a patch is fine when no coarse cell it covers is outside: a minimum filter over its span
    span = size // step
    ok = ndi.minimum_filter(inside.astype(np.uint8), size=span, origin=-(span // 2), mode="constant", cval=0)
    rows, cols = breast.shape
    corners = [(r, c) for r in range(0, rows - size + 1, size // 2) for c in range(0, cols - size + 1, size // 2)
               if ok[r // step, c // step]]
    if max_patches is not None and len(corners) > max_patches:
        keep = np.linspace(0, len(corners) - 1, max_patches).round().astype(int)
        corners = [corners[k] for k in keep]
    return corners


def band_nps(patches: np.ndarray, bands=BANDS, level: float = LEVEL) -> dict[tuple[float, float], float]:
    """Mean radial NPS per band of a patch set ((n, N, N) array) scaled to mean ``level``.

    Returns {(f_lo, f_hi): NPS in DU² · px²} with f in cycles/pixel (a band holds
    f_lo <= f < f_hi; the last one includes its upper edge).
    """
    patches = np.asarray(patches, dtype=np.float64)
    if patches.ndim != 3 or not len(patches):
        raise ValueError("no patch to measure")
    scaled = patches * (level / patches.mean())
    windows = scaled - scaled.mean(axis=(1, 2), keepdims=True)
    n = windows.shape[-1]
    nps = noise_power_spectrum(windows) / (n * n)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    out = {}
    for k, (lo, hi) in enumerate(bands):
        sel = (f >= lo) & ((f <= hi) if k == len(bands) - 1 else (f < hi))
        out[(lo, hi)] = float(nps[sel].mean())
    return out


def view_nps(image: np.ndarray, breast: np.ndarray, spacing_mm: float, exclude: np.ndarray | None = None,
             max_patches: int | None = None, size: int = PATCH, bands=BANDS) -> tuple[dict, int]:
    """The band NPS of one view (:func:`band_nps` over :func:`patch_corners`) and the number of
    patches it used. Raises ValueError when no patch fits."""
    corners = patch_corners(breast, spacing_mm, size, exclude=exclude, max_patches=max_patches)
    if not corners:
        raise ValueError(f"no {size} x {size} patch fits inside the breast {SKIN_MARGIN_MM:g} mm from the skin")
    patches = np.stack([image[r:r + size, c:c + size] for r, c in corners])
    return band_nps(patches, bands), len(corners)


def mean_nps(per_view: list[dict]) -> dict:
    """Geometric mean over views, band by band (NPS ratios, not differences, are what matter)."""
    return {band: float(np.exp(np.mean([np.log(v[band]) for v in per_view]))) for band in per_view[0]}


def format_band(band: tuple[float, float]) -> str:
    return f"{band[0]:g}-{band[1]:g}"
