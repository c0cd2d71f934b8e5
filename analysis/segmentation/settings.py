"""The segmentation settings besides the CNN: what, with given weights, decides the objects.

:func:`analysis.segmentation.pipeline.segment` returns objects that depend on the selection
CNN (weights and :class:`~analysis.segmentation.cnn.SelectionParams`) and on the values here:
the HDoG parameters (passed to ``segment``), how far an ROI is grown before candidates are
looked for in it (``REGION_GROWTH_MM``), the breast mask parameters (the whole-breast path,
no ROI, segments inside ``breast_mask`` with its defaults) and whether, there, an object must have
its centroid in the mask (``WHOLE_BREAST_CENTROID_RULE``). :func:`segmentation_settings` gives
them as plain JSON values, for the segmentation identity (:func:`analysis.classify.segmentation_identity`),
the classifier bundle's manifest and the training feature cache key. No torch here: the
training process's main loop and the manifest code use it without loading a network.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from .breast_mask import BreastMaskParams
from .hdog import HDoGParams

#: An ROI is grown by this much (mm) before HDoG candidates are looked for in it (see ``segment``).
REGION_GROWTH_MM = 1.0
#: Whole breast (no ROI): an object counts only when its centroid lies in the breast mask
#: (``segment``; docs/segmentation.md "The skin line"). Segmentations made before it lack it.
WHOLE_BREAST_CENTROID_RULE = True


def params_dict(params) -> dict[str, Any]:
    """A parameter dataclass's fields as JSON values: numbers as floats (so ``1`` and ``1.0``,
    the same setting, give the same identity), booleans as booleans."""
    return {f.name: (value if isinstance(value, bool) else float(value))
            for f in fields(params) for value in [getattr(params, f.name)]}


def segmentation_settings(hdog_params: HDoGParams = HDoGParams()) -> dict[str, Any]:
    """``{"hdog": ..., "region_growth_mm": ..., "breast_mask": ...}``: the settings besides the
    CNN that ``segment`` runs with, given its HDoG parameters (lengths in mm, areas in mm²)."""
    if not isinstance(hdog_params, HDoGParams):
        raise ValueError(f"hdog_params must be HDoGParams, got {type(hdog_params).__name__}")
    return {"hdog": params_dict(hdog_params), "region_growth_mm": float(REGION_GROWTH_MM),
            "breast_mask": params_dict(BreastMaskParams()),
            "whole_breast_centroid_in_mask": bool(WHOLE_BREAST_CENTROID_RULE)}


def hdog_params_from(settings: dict[str, Any]) -> HDoGParams:
    """The :class:`HDoGParams` recorded in a :func:`segmentation_settings` value (ValueError,
    KeyError or TypeError when they are not valid parameters)."""
    return HDoGParams(**{key: float(value) for key, value in dict(settings["hdog"]).items()})
