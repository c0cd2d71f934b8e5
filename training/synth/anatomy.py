"""Synthetic breast anatomy: outline, skin line, pectoral muscle, fibroglandular
texture, ducts and vessels, quantum noise and bright non-calcification distractors.

Pure numpy/scipy functions. Conventions:

* arrays are (rows, columns); lengths are in millimetres unless a name ends in ``_px``;
* the *canonical* orientation has the chest wall at column 0 and the nipple
  towards larger columns (a left breast as Hologic stores it); right breasts are
  mirrored by the caller at the very end;
* intensities are display units of a 12-bit MONOCHROME2 For Presentation image
  (0 = air, 4095 = white): dense tissue and calcifications bright.

The smooth anatomy is built on a grid of half the output resolution (a 0.07 mm
image gets a 0.14 mm anatomy grid) and upsampled once; fine detail (quantum
noise, calcifications) is added at full resolution by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from .config import TISSUE_MODELS
from .structures import crossings as _crossings
from .structures import draw_curves as _draw_curves
from .structures import sharp_structures

AIR_LEVEL = 60.0  # display value of the unexposed-to-breast background
FAT_LEVEL = (1050.0, 1350.0)  # display value of pure fat, drawn per breast
GLAND_GAIN = (800.0, 1200.0)  # added by fully glandular tissue
PECTORAL_LEVEL = (2500.0, 2900.0)
SKIN_GAIN = 180.0  # skin line, display units
SKIN_THICKNESS_MM = 1.5
SUBCUTANEOUS_FAT_MM = 6.0  # glandular tissue starts this far inside the skin
NOISE_SIGMA = (9.0, 15.0)  # quantum noise standard deviation at mid grey, display units


@dataclass
class Anatomy:
    """One synthetic breast, canonical orientation, full resolution.

    ``image``: float32 display units. ``breast``: bool mask inside the skin.
    ``pectoral``: bool mask of the pectoral muscle (empty on CC).
    ``density``: float32 local fibroglandular fraction in [0, 1], smoothed over
    ~5 mm (what "surrounding texture" means for cluster placement).
    ``depth_mm``: float32 distance inside the skin line, mm (0 outside).
    ``nipple_rc``: (row, column) of the nipple, pixels.
    """

    image: np.ndarray
    breast: np.ndarray
    pectoral: np.ndarray
    density: np.ndarray
    depth_mm: np.ndarray
    nipple_rc: tuple[float, float]
    noise_sigma: float
    distractors: list[dict]


# --------------------------------------------------------------------------- texture
def power_law_field(shape: tuple[int, int], spacing_mm: float, rng: np.random.Generator,
                    beta: float = 3.0, cutoff_mm: float = 60.0, anisotropy: float = 1.0) -> np.ndarray:
    """Gaussian random field with power spectrum P(f) ~ 1 / (f^2 + f0^2)^(beta/2).

    ``f`` in cycles/mm, ``f0 = 1 / cutoff_mm`` keeps the lowest frequencies finite.
    ``anisotropy`` > 1 stretches structures along the columns (towards the nipple),
    as fibrous tissue converges on it; the radial slope stays beta.
    Real mammograms have beta ~ 3 (Burgess 2001). Returns float32 with zero mean
    and unit standard deviation.
    """
    rows, cols = shape
    fy = sfft.fftfreq(rows, d=spacing_mm).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(cols, d=spacing_mm).astype(np.float32)[None, :] * np.float32(anisotropy)
    f2 = fy * fy + fx * fx + np.float32(1.0 / cutoff_mm) ** 2
    amplitude = f2 ** np.float32(-beta / 4.0)
    amplitude[0, 0] = 0.0
    spectrum = (rng.standard_normal(amplitude.shape, dtype=np.float32)
                + 1j * rng.standard_normal(amplitude.shape, dtype=np.float32)).astype(np.complex64)
    spectrum *= amplitude
    field = sfft.irfft2(spectrum, s=shape, workers=1).astype(np.float32)
    field -= field.mean()
    field /= max(float(field.std()), 1e-12)
    return field


def spectrum_slope(patch: np.ndarray, spacing_mm: float, f_range=(0.1, 1.0)) -> float:
    """Estimate beta of a square-ish patch: slope of log radial power vs log f.

    ``f_range`` in cycles/mm. Used by tests and the docs to check the texture.
    """
    p = patch.astype(np.float64) - patch.mean()
    win = np.outer(np.hanning(p.shape[0]), np.hanning(p.shape[1]))
    power = np.abs(np.fft.fft2(p * win)) ** 2
    fy = np.fft.fftfreq(p.shape[0], d=spacing_mm)[:, None]
    fx = np.fft.fftfreq(p.shape[1], d=spacing_mm)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    sel = (f >= f_range[0]) & (f <= f_range[1])
    bins = np.logspace(np.log10(f_range[0]), np.log10(f_range[1]), 15)
    idx = np.digitize(f[sel], bins)
    lf, lp = [], []
    for k in np.unique(idx):
        m = idx == k
        if m.sum() > 3:
            lf.append(np.log(f[sel][m].mean()))
            lp.append(np.log(power[sel][m].mean()))
    slope = np.polyfit(lf, lp, 1)[0]
    return float(-slope)


# --------------------------------------------------------------------------- outline
def breast_outline(shape: tuple[int, int], spacing_mm: float, view: str, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], np.ndarray]:
    """Breast and pectoral masks (bool) on a grid of ``shape`` with ``spacing_mm``.

    The outline is a super-ellipse anchored on the chest wall (column 0) with a
    low-frequency wobble; on MLO it is taller (clipped by the top edge, the
    axillary tail) and a pectoral muscle triangle with a slightly convex front
    edge covers the upper chest-wall corner. Returns (breast, pectoral, nipple (row, col),
    alpha) where alpha is the anti-aliased (0..1) breast coverage of each pixel.
    """
    rows, cols = shape
    h_mm, w_mm = rows * spacing_mm, cols * spacing_mm
    y = (np.arange(rows, dtype=np.float32) + 0.5)[:, None] * spacing_mm
    x = (np.arange(cols, dtype=np.float32) + 0.5)[None, :] * spacing_mm
    if view == "MLO":
        yc = h_mm * rng.uniform(0.50, 0.58)
        b = h_mm * rng.uniform(0.52, 0.60)
        a = w_mm * rng.uniform(0.62, 0.80)
    else:
        yc = h_mm * rng.uniform(0.46, 0.54)
        b = h_mm * rng.uniform(0.36, 0.45)
        a = w_mm * rng.uniform(0.55, 0.78)
    p = rng.uniform(1.9, 2.4)
    theta = np.arctan2((y - yc) / b, x / a)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        wobble = wobble + rng.normal(0, 0.025 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rho = (np.abs(x / a) ** p + np.abs((y - yc) / b) ** p) ** (1.0 / p)
    # anti-aliased edge: approximate signed distance (mm) to the outline, one pixel ramp
    alpha = np.clip(0.5 + (wobble - rho) * (min(a, b) / spacing_mm), 0.0, 1.0).astype(np.float32)
    breast = alpha >= 0.5
    # the nipple is where the outline crosses the row y = yc
    row = int(np.clip(round(yc / spacing_mm), 0, rows - 1))
    inside = np.nonzero(breast[row])[0]
    nipple = (float(row), float(inside.max()) if inside.size else cols / 2.0)
    pectoral = np.zeros(shape, dtype=bool)
    if view == "MLO":
        top = w_mm * rng.uniform(0.22, 0.36)  # where the muscle edge meets the top row
        left = h_mm * rng.uniform(0.40, 0.62)  # where it meets the chest wall
        bulge = rng.uniform(0.02, 0.08)
        # line from (0, top) to (left, 0); convex towards the nipple
        s = y / left + x / top
        t = np.clip(y / left, 0, 1)
        pectoral = s <= 1.0 + bulge * 4 * t * (1 - t)
        pectoral &= breast
    return breast, pectoral, nipple, alpha


def linear_structures(shape: tuple[int, int], spacing_mm: float, breast: np.ndarray,
                      nipple_rc: tuple[float, float], rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Ducts (faint, ~0.6 mm, converging on the nipple) and vessels (1-2 mm, long,
    meandering) as display-unit increments on a grid of ``shape`` at ``spacing_mm``.

    Returns (image, crossings): crossings lists (row, col) where two vessels cross
    (brighter than either: a classic false calcification candidate).
    """
    rows, cols = shape
    out = np.zeros(shape, dtype=np.float32)
    nr, nc = nipple_rc
    n_ducts = int(rng.integers(10, 20))
    starts = np.stack([nr + rng.normal(0, 8.0 / spacing_mm, n_ducts),
                       np.full(n_ducts, nc - 3.0 / spacing_mm)], axis=1)
    headings = np.pi + rng.normal(0, 0.45, n_ducts)
    lengths = rng.uniform(30, 90, n_ducts)
    ducts, _ = _draw_curves(shape, spacing_mm, rng, starts, headings, lengths, 0.10, 0.6, breast)
    sig = 0.6 / spacing_mm / 2.355
    out += ndi.gaussian_filter(ducts, sig) * np.float32(np.sqrt(2 * np.pi) * sig * rng.uniform(35, 60))
    # vessels enter from the chest-wall side and meander towards the nipple
    n_vessels = int(rng.integers(2, 5))
    r0 = rng.uniform(0.1, 0.9, n_vessels) * rows
    c0 = np.full(n_vessels, 1.0)
    for i in range(n_vessels):  # move each start inside the breast along its row
        inside = np.nonzero(breast[int(r0[i])])[0]
        c0[i] = inside.min() + 1 if inside.size else cols / 2
    vessels, paths = _draw_curves(shape, spacing_mm, rng, np.stack([r0, c0], axis=1),
                                  rng.normal(0, 0.5, n_vessels), rng.uniform(60, 160, n_vessels),
                                  0.05, 0.35, breast)
    width_mm = rng.uniform(1.0, 2.0)
    sig = width_mm / spacing_mm / 2.355
    out += ndi.gaussian_filter(vessels, sig) * np.float32(np.sqrt(2 * np.pi) * sig * rng.uniform(90, 160))
    crossings = _crossings(paths, width_mm / spacing_mm / 2)
    return out, crossings


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _upsample2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour 2x upsampling cropped to ``shape`` (masks)."""
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[: shape[0], : shape[1]]




def make_anatomy(shape: tuple[int, int], spacing_mm: float, view: str,
                 rng: np.random.Generator, with_distractors: bool = True,
                 tissue: str = "smooth") -> Anatomy:
    """A full synthetic breast in canonical orientation, ``shape`` pixels at ``spacing_mm``.

    Quantum noise and distractors included; calcifications are added afterwards by
    :mod:`training.synth.calcifications`. ``tissue="processed"`` adds Cooper's ligaments and
    thin vessels (:mod:`training.synth.structures`) and the vendor-like processing
    (:mod:`training.synth.processing`); they draw from a child stream spawned from ``rng``, so
    ``rng``'s own draws, and with them the outline, texture and distractors, are those of
    ``tissue="smooth"`` (today's images, unchanged).
    """
    if tissue not in TISSUE_MODELS:
        raise ValueError(f"tissue must be one of {TISSUE_MODELS}, not {tissue!r}")
    extra_rng = rng.spawn(1)[0] if tissue == "processed" else None
    rows, cols = shape
    hshape = ((rows + 1) // 2, (cols + 1) // 2)  # smooth anatomy on a half-resolution grid
    hsp = spacing_mm * 2.0
    breast_h, pect_h, nipple_h, alpha_h = breast_outline(hshape, hsp, view, rng)
    q = breast_h[::2, ::2]  # distance to the skin on a quarter grid is plenty (0.28 mm)
    # the image edges are not skin (the breast continues past the chest wall and,
    # on MLO, past the top edge), so the distance is to the mask's own zeros only
    depth_q = ndi.distance_transform_edt(q).astype(np.float32) * np.float32(2 * hsp)
    depth_h = ndi.zoom(depth_q, (hshape[0] / q.shape[0], hshape[1] / q.shape[1]), order=1,
                       grid_mode=True, mode="nearest")[: hshape[0], : hshape[1]] * breast_h
    xmm = (np.arange(hshape[1], dtype=np.float32) + 0.5)[None, :] * hsp
    density_level = rng.uniform(-1.2, 0.8)  # BI-RADS a..d through the glandular share
    field = power_law_field(hshape, hsp, rng, beta=3.0, anisotropy=1.6)
    envelope = _smoothstep((depth_h - SUBCUTANEOUS_FAT_MM) / 15.0) * _smoothstep(xmm / 12.0)
    gland = (envelope / (1.0 + np.exp(-(1.3 * field + density_level)))).astype(np.float32)
    fat = rng.uniform(*FAT_LEVEL)
    gain = rng.uniform(*GLAND_GAIN)
    periphery = 0.72 + 0.28 * _smoothstep(depth_h / 10.0)  # thickness roll-off (equalised)
    img = (AIR_LEVEL + alpha_h * (fat * periphery + gain * gland - AIR_LEVEL)).astype(np.float32)
    img += (SKIN_GAIN * np.exp(-depth_h / SKIN_THICKNESS_MM) * breast_h).astype(np.float32)
    if pect_h.any():
        level = rng.uniform(*PECTORAL_LEVEL)
        pfield = power_law_field(hshape, hsp, rng, beta=3.5)
        pect_soft = ndi.uniform_filter(pect_h.astype(np.float32), max(3, int(1.5 / hsp)))
        img = img * (1 - pect_soft) + (level + 120 * pfield) * pect_soft * breast_h
    lines, crossings_h = linear_structures(hshape, hsp, breast_h & ~pect_h, nipple_h, rng)
    img += lines
    image = ndi.zoom(img, (rows / hshape[0], cols / hshape[1]), order=1, grid_mode=True,
                     mode="nearest")[:rows, :cols]
    image = np.ascontiguousarray(image, dtype=np.float32)
    g4 = gland[::4, ::4]
    density_h = ndi.zoom(ndi.gaussian_filter(g4, 5.0 / (4 * hsp) / 2.0),
                         (hshape[0] / g4.shape[0], hshape[1] / g4.shape[1]), order=1,
                         grid_mode=True, mode="nearest")[: hshape[0], : hshape[1]]

    breast = _upsample2(breast_h, shape)
    pectoral = _upsample2(pect_h, shape)
    depth = _upsample2(depth_h, shape)
    density = _upsample2(density_h.astype(np.float32), shape)
    nipple = (nipple_h[0] * 2 + 0.5, nipple_h[1] * 2 + 0.5)
    distractors: list[dict] = [
        {"kind": "vessel_crossing", "row": r * 2 + 0.5, "col": c * 2 + 0.5, "diameter_mm": None}
        for r, c in crossings_h]
    if extra_rng is not None:
        sharp, crossings = sharp_structures(shape, spacing_mm, breast & ~pectoral, depth, nipple, extra_rng)
        image += sharp
        distractors += [{"kind": "vessel_crossing", "row": r, "col": c, "diameter_mm": None} for r, c in crossings]
    if with_distractors:
        distractors += add_point_distractors(image, breast & ~pectoral, depth, spacing_mm, view, rng)
    sigma = add_quantum_noise(image, spacing_mm, rng)
    if extra_rng is not None:
        from .processing import process_for_presentation

        process_for_presentation(image, breast, depth, spacing_mm, extra_rng)
    np.clip(image, 0, 4095, out=image)
    return Anatomy(image=image, breast=breast, pectoral=pectoral, density=density,
                   depth_mm=depth, nipple_rc=nipple, noise_sigma=sigma, distractors=distractors)


def add_quantum_noise(image: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> float:
    """Add signal-dependent, slightly correlated Gaussian noise in place.

    Standard deviation sigma0 * sqrt(0.5 + v / 4095) (brighter = more attenuation =
    fewer quanta), correlated by the detector's ~0.04 mm blur. Returns sigma0.
    """
    sigma0 = float(rng.uniform(*NOISE_SIGMA))
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    s = 0.04 / spacing_mm
    if s > 0.3:
        noise = ndi.gaussian_filter(noise, s, truncate=3.0)
        noise /= max(float(noise[:256, :256].std()), 1e-6)
    scale = np.sqrt(0.5 + np.clip(image, 0, 4095) / 4095.0).astype(np.float32)
    noise *= scale
    noise *= np.float32(sigma0)
    image += noise
    return sigma0


def _disc(image: np.ndarray, r: float, c: float, radius_px: float, amplitude: float,
          ring: bool = False) -> None:
    """Add a blurred disc (or a ring: rim brighter than the centre) in place."""
    R = int(np.ceil(radius_px + 3))
    r0, c0 = int(round(r)), int(round(c))
    rs = slice(max(r0 - R, 0), min(r0 + R + 1, image.shape[0]))
    cs = slice(max(c0 - R, 0), min(c0 + R + 1, image.shape[1]))
    yy, xx = np.mgrid[rs, cs]
    d = np.hypot(yy - r, xx - c)
    prof = np.clip(radius_px + 0.5 - d, 0, 1)
    if ring:
        prof = prof * (0.35 + 0.65 * np.clip(d / max(radius_px, 1e-6), 0, 1) ** 2)
    image[rs, cs] += amplitude * prof.astype(np.float32)


def add_point_distractors(image: np.ndarray, region: np.ndarray, depth_mm: np.ndarray,
                          spacing_mm: float, view: str, rng: np.random.Generator) -> list[dict]:
    """Bright things that are not calcifications a segmenter must reject, in place.

    * noise peaks / dust: 1-2 pixel spikes anywhere in the breast;
    * dermal (skin) calcifications: ring-like, 0.6-1.5 mm, within 3 mm of the skin;
    * a skin marker (metal BB, 1.5-2.5 mm, near saturation) in some images;
    * deodorant specks: a tight group of tiny very bright specks in the axilla (MLO).
    Returns one dict per object: kind, row, col, diameter_mm.
    """
    out: list[dict] = []
    def sample(where: np.ndarray, n: int) -> list[tuple[int, int]]:
        found = []
        for _ in range(200 * n):
            if len(found) == n:
                break
            r, c = int(rng.integers(where.shape[0])), int(rng.integers(where.shape[1]))
            if where[r, c]:
                found.append((r, c))
        return found

    for r, c in sample(region, int(rng.integers(5, 15))):
        amp = rng.uniform(60, 140)
        image[r, c] += amp
        if rng.random() < 0.4 and c + 1 < image.shape[1]:
            image[r, c + 1] += amp * 0.6
        out.append({"kind": "noise_peak", "row": float(r), "col": float(c), "diameter_mm": spacing_mm})
    near_skin = region & (depth_mm > 0.3) & (depth_mm < 3.0)
    if near_skin.any():
        spots = sample(near_skin, int(rng.integers(0, 4)) + 1)
        for r, c in spots[1:]:
            d = rng.uniform(0.6, 1.5)
            _disc(image, r, c, d / 2 / spacing_mm, rng.uniform(150, 300), ring=True)
            out.append({"kind": "skin_calcification", "row": float(r), "col": float(c), "diameter_mm": d})
        if rng.random() < 0.25 and spots:
            r, c = spots[0]
            d = rng.uniform(1.5, 2.5)
            _disc(image, r, c, d / 2 / spacing_mm, 3900 - 1000)
            out.append({"kind": "skin_marker", "row": float(r), "col": float(c), "diameter_mm": d})
    if view == "MLO" and rng.random() < 0.3:
        band = max(1, image.shape[0] // 5)
        top = sample(region[:band] & (depth_mm[:band] < 8), 1)
        if top:
            r, c = top[0]
            for _ in range(int(rng.integers(8, 25))):
                rr = r + rng.normal(0, 3.0 / spacing_mm)
                cc = c + rng.normal(0, 3.0 / spacing_mm)
                if 0 <= rr < image.shape[0] and 0 <= cc < image.shape[1]:
                    d = rng.uniform(0.1, 0.3)
                    _disc(image, rr, cc, d / 2 / spacing_mm, rng.uniform(400, 900))
                    out.append({"kind": "deodorant", "row": float(rr), "col": float(cc), "diameter_mm": d})
    return out
