"""Per-calcification and per-ROI features (docs/method.md §4; Marathe et al. 2022).

Entry point: :func:`extract_roi_features` -> :class:`RoiFeatures` with
``foreground`` (102 pyradiomics features per object), ``regionprops`` (13 per object),
``background`` (93 pyradiomics features of the 1.75 mm ring per object), ``topology``
(64 per ROI) and ``handcrafted`` (3 per ROI).  Lengths are in mm, areas in mm².
"""
from .objects import as_label_image, select_roi_objects
from .pyrad import BACKGROUND_NAMES, FOREGROUND_NAMES, SHAPE2D_NAMES, TEXTURE_NAMES
from .regionprops import REGIONPROP_NAMES, region_properties
from .roi import (DEFAULT_PARAMS, LOCAL_SETS, FeatureParams, RoiFeatures, extract_image_roi_features,
                  extract_roi_features, feature_pool)
from .table import FeatureTable, FeatureVector
from .topology import (GRAPH_FEATURES, HANDCRAFTED_NAMES, TOPOLOGY_RADII_MM, graph_features,
                       handcrafted_features, pairwise_min_distances, topology_features,
                       topology_names)

GLOBAL_NAMES = topology_names() + HANDCRAFTED_NAMES  # 67

__all__ = [
    "extract_roi_features", "extract_image_roi_features", "RoiFeatures", "FeatureParams", "DEFAULT_PARAMS", "feature_pool",
    "FeatureTable", "FeatureVector", "LOCAL_SETS", "GLOBAL_NAMES",
    "FOREGROUND_NAMES", "BACKGROUND_NAMES", "SHAPE2D_NAMES", "TEXTURE_NAMES", "REGIONPROP_NAMES",
    "HANDCRAFTED_NAMES", "GRAPH_FEATURES", "TOPOLOGY_RADII_MM", "topology_names",
    "as_label_image", "select_roi_objects", "region_properties", "pairwise_min_distances",
    "graph_features", "topology_features", "handcrafted_features",
]
