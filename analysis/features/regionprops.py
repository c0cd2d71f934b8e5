"""13 region properties per calcification (scikit-image), lengths in mm, areas in mm².

Computed on the object's crop with ``spacing=(row, col)`` so moments, axes and
orientation are physical.  scikit-image's perimeter supports only isotropic spacing:
it is computed in pixels (4-neighbourhood estimate) and scaled by sqrt(row * col
spacing), exact for square pixels.  Intensities are on the stored-value scale, the
same scale pyradiomics sees.
"""
from __future__ import annotations

import warnings

import numpy as np
from skimage.measure import perimeter as sk_perimeter
from skimage.measure import regionprops

REGIONPROP_NAMES = [
    "area_mm2",                 # pixel count x pixel area
    "perimeter_mm",             # skimage perimeter (4-neighbourhood)
    "convex_area_mm2",          # pixels of the convex hull image x pixel area
    "eccentricity",             # of the ellipse with the same second moments (0 = circle)
    "equivalent_diameter_mm",   # diameter of the circle of the same area
    "extent",                   # area / bounding-box area
    "major_axis_length_mm",     # of the same-moments ellipse
    "minor_axis_length_mm",
    "orientation_rad",          # angle between the row axis and the major axis, (-pi/2, pi/2]
    "solidity",                 # area / convex area
    "mean_intensity",           # stored-value scale
    "max_intensity",
    "min_intensity",
]


def region_properties(mask: np.ndarray, intensity: np.ndarray, spacing_mm) -> np.ndarray:
    """The 13 properties of one object given its boolean crop and stored-value crop."""
    sr, sc = float(spacing_mm[0]), float(spacing_mm[1])
    lab = mask.astype(np.uint8)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        p = regionprops(lab, intensity_image=intensity, spacing=(sr, sc))[0]
        perim = float(sk_perimeter(mask, neighborhood=4)) * float(np.sqrt(sr * sc))
        return np.array([
            float(p.area), perim, float(p.area_convex), float(p.eccentricity),
            float(p.equivalent_diameter_area), float(p.extent), float(p.axis_major_length),
            float(p.axis_minor_length), float(p.orientation), float(p.solidity),
            float(p.intensity_mean), float(p.intensity_max), float(p.intensity_min),
        ])
