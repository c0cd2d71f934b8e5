"""Views without calcification truth ("negatives"): real or simulated mammograms on which every
object the segmentation keeps is a false one (``--negatives`` of ``train-seg`` and ``evaluate-seg``).

Accepted: DICOM mammograms (any MG image :func:`analysis.dicom_input.load_image` reads), and
grey-scale PNG views such as ``../shared/interop/real-tissue/*.png`` (16-bit files holding 12-bit
data). A PNG states no pixel spacing: the given one is assumed (0.07 mm by default, a Hologic-like
detector) and recorded as assumed. A ``STEM_benign_lesion_mask.png`` beside a PNG view marks a
lesion that is not calcification-free: it is mapped to the view's pixels exactly as the
simulator's background loader maps it (:func:`training.synth.backgrounds.stored_lesion_mask`),
grown by ``LESION_MARGIN_MM`` and left out: no training patch there, and neither its objects nor
its area count in the false objects per cm² of breast.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from analysis.dicom_input import load_image

from ..synth.backgrounds import LESION_MARGIN_MM, LESION_SUFFIX, stored_lesion_mask

DEFAULT_NEGATIVE_SPACING_MM = 0.07


@dataclass(frozen=True, eq=False)
class NegativeView:
    """One view without calcification truth, ready for segmentation.

    ``pixels``: float32 (rows, cols) in [0, 1], calcifications bright (as ``MammogramImage.pixels``);
    ``spacing_mm``: (row, column) in mm; ``spacing_source``: "header" or "assumed";
    ``excluded``: bool (rows, cols), the marked lesions grown by ``LESION_MARGIN_MM``, or None.
    """

    name: str            # the file's name (no folder: no patient data in reports)
    sha256: str          # of the file, so a report can tell a model's training views from others
    pixels: np.ndarray
    spacing_mm: tuple[float, float]
    spacing_source: str
    excluded: np.ndarray | None


def negative_paths(paths: list[str | Path]) -> list[Path]:
    """The view files of ``paths``: files as given, folders searched recursively for ``*.dcm`` and
    ``*.png`` (lesion masks left out, they belong to their view)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in (".dcm", ".png")
                           and not q.name.endswith(LESION_SUFFIX))
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such negative view or folder")
    return out


def png_pixels(path: str | Path) -> np.ndarray:
    """A grey-scale PNG scaled to [0, 1] by its data's bit depth: 12 bits when no value exceeds
    4095 (the real-tissue views are 12-bit data in 16-bit files), else 8 or 16 by the file's type."""
    from PIL import Image

    with Image.open(path) as im:
        stored = np.asarray(im)
    if stored.ndim != 2:
        raise ValueError(f"{path}: a negative view must be a single-channel grey-scale PNG")
    if stored.dtype == np.uint8:
        full = 255.0
    else:
        full = 4095.0 if int(stored.max(initial=0)) <= 4095 else 65535.0
    return np.clip(stored.astype(np.float32) / np.float32(full), 0.0, 1.0)


def load_negative(path: str | Path, spacing_mm: float = DEFAULT_NEGATIVE_SPACING_MM) -> NegativeView:
    """Read one negative view. ``spacing_mm`` (mm) is assumed where the file states none (a PNG
    always; a DICOM without Imager Pixel Spacing / Pixel Spacing)."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix.lower() == ".png":
        pixels = png_pixels(path)
        spacing, source = (float(spacing_mm), float(spacing_mm)), "assumed"
        lesion = stored_lesion_mask(path, pixels)
    else:
        image = load_image(path, default_pixel_spacing_mm=spacing_mm)
        pixels, spacing = image.pixels, tuple(map(float, image.pixel_spacing_mm))
        source = "assumed" if image.geometry.spacing_source == "default" else "header"
        lesion = None
    excluded = None
    if lesion is not None and lesion.any():
        grow = max(1, int(round(LESION_MARGIN_MM / float(np.mean(spacing)))))
        excluded = ndimage.binary_dilation(lesion, iterations=grow)
    return NegativeView(name=path.name, sha256=digest, pixels=pixels, spacing_mm=spacing,
                        spacing_source=source, excluded=excluded)
