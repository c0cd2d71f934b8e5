"""The coarsest pixel spacing the method supports, and why (docs/method.md §1.1).

Every length of the method is in mm and converted with the image's spacing, but the conversion
only works while the smallest structure the method looks for still spans pixels. HDoG's finest
scale is ``HDoGParams.min_sigma_mm`` = 0.0826 mm (HDoGReg's 1.18 px at 0.07 mm); a Gaussian whose
sigma is under half a pixel is no longer sampled (it is the pixel itself plus a little of its
neighbours), so the finest DoG level loses its meaning. That sets the limit at
``min_sigma_mm / 0.5`` = 0.165 mm: detectors at 0.05-0.1 mm are well inside it; film digitised
at 0.2 mm (e.g. mini-MIAS) is not, and its calcifications of 0.1-0.3 mm span a pixel or less.
"""
from __future__ import annotations

from ._checks import spacing_pair
from .hdog import HDoGParams

#: the smallest HDoG sigma, in pixels, that is still sampled
MIN_SIGMA_PX = 0.5


def max_pixel_spacing_mm(params: HDoGParams = HDoGParams()) -> float:
    """The coarsest supported pixel spacing (mm) for ``params``: 0.165 mm with the defaults."""
    return params.min_sigma_mm / MIN_SIGMA_PX


def coarse_spacing_reason(spacing_mm, params: HDoGParams = HDoGParams()) -> str | None:
    """Why an image of this (row, column) spacing (mm) cannot be analysed, or None when it can.

    The sentence states the spacing, the supported limit and why; it becomes the reason of each
    ROI of such an image in the results (and the SR), and the message of ``calcnode segment``.
    """
    row, col = spacing_pair(spacing_mm)
    limit = max_pixel_spacing_mm(params)
    coarsest = max(row, col)
    if coarsest <= limit:
        return None
    stated = f"{row:g} mm" if row == col else f"{row:g} x {col:g} mm"
    return (f"pixel spacing {stated} is coarser than the {limit:.3g} mm the method supports: its finest "
            f"calcification scale (HDoG sigma {params.min_sigma_mm:.3g} mm) would be {params.min_sigma_mm / coarsest:.2f} "
            f"px, under the {MIN_SIGMA_PX:g} px a Gaussian needs to be sampled, and calcifications of 0.1-0.3 mm "
            f"would span {0.1 / coarsest:.1f}-{0.3 / coarsest:.1f} px; the image is not analysed "
            "(e.g. film digitised at 0.2 mm: digitise at 0.1 mm or finer)")
