"""Vendor-like For Presentation processing of the ``processed`` tissue model.

A real processed mammogram is not the smooth attenuation map the simulator's anatomy is:
the vendor's processing equalises thickness, enhances edges (a bright skin line, sharp
ligaments and vessels) and, with the quantum noise it amplifies, leaves a strong fine grain.
Measured on 256 x 256 breast patches of four real For Presentation views
(:mod:`training.synth.tissue_stats`, spacing assumed 0.07 mm), the noise power spectrum of
the real tissue is 20x (0.05-0.1 cycles/pixel) to 400x (0.4-0.5) that of the smooth model
at the same mean level; docs/simulator.md has the table.

:func:`process_for_presentation` applies, in place, to the calcification-free image (the
calcifications are added afterwards, their contrast multiplied by
:func:`calcification_contrast_scale`: the processing raises them with the noise at their scale):

1. a brighter skin line (the processed image's edge enhancement of the skin);
2. an unsharp mask (Gaussian of ``UNSHARP_SIGMA_MM``, gain ``UNSHARP_GAIN``): edges and thin
   structures gain contrast;
3. a fine-grain Gaussian field whose NPS (at the mean level :data:`~training.synth.tissue_stats.LEVEL`)
   follows :data:`FINE_GRAIN_NPS`, a table in cycles/mm; its amplitude follows the local
   level, so the spectrum after scaling a patch set to a common mean is the same at every
   brightness. The table is the real views' NPS minus what steps 1-2 and the sharp
   structures (:mod:`training.synth.structures`) already give, so the sum lands on the
   real spectrum.
"""
from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from .tissue_stats import LEVEL

SKIN_BOOST = 350.0        # display units added at the skin surface
SKIN_BOOST_MM = 0.8       # e-folding depth of that boost
UNSHARP_SIGMA_MM = 0.5
UNSHARP_GAIN = 1.0
# Fine-grain NPS at LEVEL, DU² · px² at 0.07 mm, against radial frequency in cycles/mm
# (interpolated in log-log, flat beyond the ends, rolled off below 0.5 cycles/mm so the
# grain adds no blotches larger than the ~2 mm the real spectrum was measured at).
FINE_GRAIN_NPS = ((0.71, 1.1e6), (1.07, 5.0e5), (1.79, 1.66e5), (2.5, 8.7e4), (3.57, 5.35e4),
                  (5.0, 3.63e4), (6.43, 3.2e4), (7.14, 3.2e4))
TABLE_SPACING_MM = 0.07

# The calcification band: a difference of Gaussians of these sigmas (mm) passes the scale of a
# calcification (0.1-0.5 mm) and rejects both the pixel-level aliasing and the tissue's slow trend.
CALC_BAND_SIGMAS_MM = (0.1, 0.4)
# That band's robust RMS inside the breast of the smooth tissue model (display units): mean of 16
# full-size views (8 seeds, CC and MLO; 12.6-22.3, SD 2.7), measured 2026-12-07 with
# calcification_band_rms. The simulator's calcification contrasts were set against this noise.
SMOOTH_BAND_RMS = 18.3
CONTRAST_SCALE_LIMITS = (0.5, 8.0)


def fine_grain_amplitude(shape: tuple[int, int], spacing_mm: float) -> np.ndarray:
    """sqrt(NPS) on the rfft grid of ``shape`` (float32), from :data:`FINE_GRAIN_NPS`.

    The table holds the NPS per pixel at 0.07 mm; at another spacing the same physical
    spectrum (per mm²) holds, so the per-pixel NPS scales with the pixel area.
    """
    fy = sfft.fftfreq(shape[0], d=spacing_mm).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(shape[1], d=spacing_mm).astype(np.float32)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    table_f = np.log([t[0] for t in FINE_GRAIN_NPS])
    table_p = np.log([t[1] for t in FINE_GRAIN_NPS])
    logp = np.interp(np.log(np.maximum(f, 1e-3)), table_f, table_p).astype(np.float32)
    nps = np.exp(logp) * np.float32((spacing_mm / TABLE_SPACING_MM) ** 2)
    nps *= (1.0 - np.exp(-(f / np.float32(0.5)) ** 2)).astype(np.float32)  # no grain coarser than ~2 mm
    return np.sqrt(nps)


def fine_grain(shape: tuple[int, int], spacing_mm: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary Gaussian field (float32, ``shape``) with NPS :data:`FINE_GRAIN_NPS` per pixel.

    Its variance is the integral of the NPS over frequency (cycles/pixel), i.e. the mean of
    the NPS over the DFT grid; the field is normalised to it.
    """
    amp = fine_grain_amplitude(shape, spacing_mm)
    spec = (rng.standard_normal(amp.shape, dtype=np.float32)
            + 1j * rng.standard_normal(amp.shape, dtype=np.float32)).astype(np.complex64)
    spec *= amp
    field = sfft.irfft2(spec, s=shape, workers=1).astype(np.float32)
    # rfft grid: every column but the first (and the Nyquist one) stands for two of the full grid
    weights = np.full(amp.shape[1], 2.0, dtype=np.float32)
    weights[0] = 1.0
    if shape[1] % 2 == 0:
        weights[-1] = 1.0
    variance = float((amp ** 2 * weights).sum() / (shape[0] * shape[1]))
    field *= np.float32(np.sqrt(variance) / max(float(field.std()), 1e-12))
    return field


def calcification_band_rms(image: np.ndarray, breast: np.ndarray, spacing_mm: float) -> float:
    """Robust RMS (1.4826 MAD, display units) of ``image`` in the calcification band
    (:data:`CALC_BAND_SIGMAS_MM`), over the breast at least 5 mm inside the skin (every 4th pixel).

    This is the noise a calcification has to stand out from, whatever made it: quantum noise on
    the smooth model, the grain a vendor's processing leaves on a real view.
    """
    small = breast[::4, ::4]
    inner = ndi.binary_erosion(small, iterations=max(1, int(round(5.0 / (4 * spacing_mm)))))
    if not inner.any():
        inner = small
    if not inner.any():
        return 0.0
    rows, cols = np.nonzero(inner)
    r0, r1 = rows.min() * 4, rows.max() * 4 + 4
    c0, c1 = cols.min() * 4, cols.max() * 4 + 4
    box = np.asarray(image[r0:r1, c0:c1], np.float32)
    fine, coarse = (s / spacing_mm for s in CALC_BAND_SIGMAS_MM)
    band = ndi.gaussian_filter(box, fine) - ndi.gaussian_filter(box, coarse)
    values = band[rows * 4 - r0, cols * 4 - c0]
    centre = float(np.median(values))
    return float(1.4826 * np.median(np.abs(values - centre)))


def calcification_contrast_scale(image: np.ndarray, breast: np.ndarray, spacing_mm: float) -> float:
    """How much a calcification's contrast must be multiplied on this calcification-free image so
    that it stands out from the image's noise as it would from the smooth model's: the ratio of the
    calcification-band RMS to :data:`SMOOTH_BAND_RMS`, within :data:`CONTRAST_SCALE_LIMITS`.

    Why: a vendor's processing (or a film's development) multiplies the calcification and the
    noise around it alike at the calcification's scale, so in a processed image both are larger
    than in the smooth model, by about the same factor. A calcification added unscaled to a real
    For Presentation view, or to the ``processed`` tissue, is buried in the grain (the ideal
    observer found 0.04 of them at 1 FP/cm², docs/simulator.md), where real calcifications stand
    well above it.
    """
    rms = calcification_band_rms(image, breast, spacing_mm)
    lo, hi = CONTRAST_SCALE_LIMITS
    return float(np.clip(rms / SMOOTH_BAND_RMS, lo, hi))


def process_for_presentation(image: np.ndarray, breast: np.ndarray, depth_mm: np.ndarray,
                             spacing_mm: float, rng: np.random.Generator) -> None:
    """Skin-line boost, unsharp mask and fine grain, in place on ``image`` (float32 display units).

    ``breast``: bool mask, ``depth_mm``: distance inside the skin (mm), both full resolution.
    """
    skin = np.exp(-depth_mm / np.float32(SKIN_BOOST_MM)).astype(np.float32)
    skin *= breast
    image += np.float32(SKIN_BOOST) * skin
    blurred = ndi.gaussian_filter(image, UNSHARP_SIGMA_MM / spacing_mm, truncate=3.0)
    image += np.float32(UNSHARP_GAIN) * (image - blurred)
    grain = fine_grain(image.shape, spacing_mm, rng)
    # the grain's amplitude follows the local level (a processed image's noise scales with it);
    # nothing is added outside the breast (air stays black, as on real views)
    level = np.clip(blurred, 0.0, 4095.0) * breast
    grain *= level
    grain *= np.float32(1.0 / LEVEL)
    image += grain
