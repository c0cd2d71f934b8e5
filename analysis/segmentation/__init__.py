"""Segmentation of microcalcifications (docs/method.md §3): breast mask and HDoG candidates.

Pure functions on arrays (float32 pixels in [0, 1], calcifications bright) with every length
parameter in mm, converted with the image's pixel spacing. The CNN selection step lives in
``analysis.segmentation.cnn`` (imported on its own: it needs torch).
"""
from .breast_mask import BreastMaskParams, breast_mask, working_factors
from .hdog import CANDIDATE_DTYPE, PEAK_DTYPE, Candidates, HDoGParams, PixelParams, hdog_candidates

__all__ = [
    "BreastMaskParams", "breast_mask", "working_factors",
    "CANDIDATE_DTYPE", "PEAK_DTYPE", "Candidates", "HDoGParams", "PixelParams", "hdog_candidates",
]
