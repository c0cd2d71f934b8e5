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
import re
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage as ndi

from .anatomy import Anatomy
from .processing import calcification_contrast_scale

LESION_MARGIN_MM = 3.0  # a marked lesion is kept this far from any inserted particle


@dataclass
class Background:
    anatomy: Anatomy
    spacing_mm: float
    spacing_source: str  # "ImagerPixelSpacing", "PixelSpacing" or "assumed"
    laterality: str
    view: str
    flipped: bool
    contrast_scale: float  # multiply calcification contrast by this on this image (calcification_contrast_scale)
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


PNG_NAME = re.compile(r"(?:^|[^A-Z])([LR])[-_ ]?(CC|MLO)(?:[^A-Z]|$)", re.IGNORECASE)
LESION_SUFFIX = "_benign_lesion_mask.png"
# GMIC's model-input frame (nyukat/GMIC, src/data_loading/augmentations.py): the NYU sample's
# lesion masks are stored in it, not in the cropped view's pixels.
GMIC_FRAME = (2944, 1920)
GMIC_NOISE = 100  # max_crop_noise = max_crop_size_noise = 100 px in GMIC's run_model parameters


def _read_dicom(path: Path, default_spacing_mm: float) -> tuple:
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
    lat = str(ds.get("ImageLaterality", ds.get("Laterality", "")) or "")
    return img, spacing, source, lat, _view(ds), str(ds.get("SOPInstanceUID", ""))


def _read_png(path: Path, default_spacing_mm: float) -> tuple:
    """A grey-scale PNG (16-bit, MONOCHROME2: dense tissue bright). A PNG states no spacing:
    ``default_spacing_mm`` is used and recorded as assumed. Laterality and view come from a
    name like ``*_L-CC.png`` / ``*_R_MLO.png`` (else inferred / CC)."""
    from PIL import Image

    with Image.open(path) as im:
        img = np.asarray(im).astype(np.float32)
    if img.ndim != 2:
        raise ValueError(f"{path}: background must be a single-channel grey-scale PNG")
    m = PNG_NAME.search(path.stem)
    lat, view = (m.group(1).upper(), m.group(2).upper()) if m else ("", "CC")
    return img, float(default_spacing_mm), "assumed", lat, view, ""


def lesion_mask(path: str | Path, shape: tuple[int, int], view: str, flipped: bool) -> np.ndarray | None:
    """The ``STEM_benign_lesion_mask.png`` beside a PNG background as a bool array of ``shape`` in
    canonical orientation (chest wall at column 0), or None if there is none.

    A mask of the view's own size is taken as stored (mirrored with the image when ``flipped``). A mask in GMIC's 2944 x 1920 model-input
    frame (the NYU sample's) is mapped back: that frame faces right (right breasts mirrored),
    a view shorter than the frame sits at the top (MLO) or centred with GMIC's padding (CC:
    ``(2944 - rows + 400) // 2 - 200`` rows down), at column 0. A larger view was cropped
    around an unknown centre: refused.
    """
    path = Path(path)
    mask_path = path.with_name(path.stem + LESION_SUFFIX)
    if not mask_path.is_file():
        return None
    from PIL import Image

    with Image.open(mask_path) as im:
        mask = np.asarray(im) > 0
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape == shape:
        return mask[:, ::-1] if flipped else mask
    rows, cols = shape
    frame_rows, frame_cols = GMIC_FRAME
    if mask.shape != GMIC_FRAME or cols >= frame_cols + 2 * GMIC_NOISE:
        raise ValueError(f"{mask_path}: mask {mask.shape} matches neither the image {shape} nor GMIC's frame")
    if view == "CC" and rows < frame_rows + 4 * GMIC_NOISE:
        top = (frame_rows - rows + 4 * GMIC_NOISE) // 2 - 2 * GMIC_NOISE
    elif view == "MLO" and rows < frame_rows + 2 * GMIC_NOISE:
        top = 0
    else:
        raise ValueError(f"{mask_path}: the view is larger than GMIC's frame; the mask cannot be aligned")
    out = np.zeros(shape, dtype=bool)
    part = mask[top:top + rows, :cols]
    out[:part.shape[0], :part.shape[1]] = part
    return out


def _rescale_12bit(img: np.ndarray) -> np.ndarray:
    """``img`` (float32) rescaled to 12 bits on robust percentiles of the whole image (every 4th
    pixel: the same percentiles for the full view and its 4x subsample)."""
    lo, hi = np.percentile(img[::4, ::4], [0.5, 99.95])
    img = (img - lo) * np.float32(3900.0 / max(hi - lo, 1e-6)) + np.float32(40.0)
    return np.clip(img, 0, 4095, out=img)


def chest_wall_right(breast: np.ndarray) -> bool:
    """Whether a view is stored with the chest wall on the right (more breast in the right half):
    such a view is mirrored to canonical orientation."""
    cols = breast.shape[1]
    return bool(breast[:, cols // 2:].sum() > breast[:, : cols // 2].sum())


def stored_lesion_mask(path: str | Path, image: np.ndarray) -> np.ndarray | None:
    """The lesion mask of the PNG view ``path`` in the view's *stored* orientation (what
    ``image``, its pixels as read, shows), or None if it has none.

    The same mapping as the background loader's (:func:`lesion_mask`: the view's own size, or
    GMIC's model-input frame), mirrored back when the view is stored with the chest wall on the
    right. Which side that is is decided as :func:`load_background` decides it (:func:`find_breast`
    on the 12-bit rescaled view, every 4th pixel)."""
    path = Path(path)
    m = PNG_NAME.search(path.stem)
    view = m.group(2).upper() if m else "CC"
    flipped = chest_wall_right(find_breast(_rescale_12bit(np.array(image, np.float32))[::4, ::4]))
    mask = lesion_mask(path, image.shape, view, flipped)
    if mask is None:
        return None
    return np.ascontiguousarray(mask[:, ::-1]) if flipped else mask


def load_background(path: str | Path, default_spacing_mm: float,
                    rng: np.random.Generator | None = None) -> Background:
    """Read ``path`` (DICOM, or a grey-scale PNG) and prepare it as a canonical 12-bit background
    (``rng`` is unused: preparing a background is deterministic).

    A PNG's ``STEM_benign_lesion_mask.png`` (:func:`lesion_mask`), dilated by
    ``LESION_MARGIN_MM``, is kept free of clusters: it joins the ``pectoral`` mask, the region
    cluster placement keeps every cluster out of.
    """
    path = Path(path)
    is_png = path.suffix.lower() == ".png"
    img, spacing, source, lat, view, sop_uid = (_read_png if is_png else _read_dicom)(path, default_spacing_mm)
    img = _rescale_12bit(img)
    small = img[::4, ::4]
    mask = find_breast(small)
    flipped = chest_wall_right(mask)
    if flipped:
        img, mask = img[:, ::-1].copy(), mask[:, ::-1].copy()
    if lat not in ("L", "R"):
        lat = "R" if flipped else "L"  # stored with the chest wall on the right -> right breast
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
    lesion = lesion_mask(path, (rows_full, cols_full), view, flipped) if is_png else None
    if lesion is not None:
        pectoral = pectoral | ndi.binary_dilation(lesion, iterations=max(1, int(LESION_MARGIN_MM / spacing)))
    # calcifications stand out from this image's grain as from the smooth model's noise
    contrast_scale = calcification_contrast_scale(img, breast, spacing)
    # noise estimate: MAD of a Laplacian inside the breast
    lap = ndi.laplace(img[::2, ::2][: 512, : 512])
    noise = float(1.4826 * np.median(np.abs(lap - np.median(lap))) / np.sqrt(20))
    anatomy = Anatomy(image=np.ascontiguousarray(img, dtype=np.float32), breast=breast,
                      pectoral=pectoral, density=density, depth_mm=depth,
                      nipple_rc=_nipple(breast), noise_sigma=noise, distractors=[])
    return Background(anatomy, spacing, source, lat, view, flipped, contrast_scale, path.name, sop_uid)


def _nipple(breast: np.ndarray) -> tuple[float, float]:
    """The breast pixel furthest from the chest wall (column 0): (row, col)."""
    cols = np.nonzero(breast.any(axis=0))[0]
    if cols.size == 0:
        return breast.shape[0] / 2, breast.shape[1] / 2
    c = int(cols.max())
    rows = np.nonzero(breast[:, c])[0]
    return float(rows.mean()), float(c)
