"""Reading DICOM inputs into typed objects.

This is the boundary between DICOM and the pure array code of :mod:`analysis`:
it reads files or :class:`pydicom.Dataset` objects and returns typed results
(:class:`MammogramImage`, :class:`ImageGeometry`, :class:`Roi`). It imports
nothing from :mod:`dicom_node`.
"""
from .errors import InputError, UnusableImageError, RoiError
from .image import ImageGeometry, MammogramImage, load_image, read_geometry
from .rois import Roi, parse_rois, read_rois

__all__ = [
    "InputError",
    "UnusableImageError",
    "RoiError",
    "ImageGeometry",
    "MammogramImage",
    "load_image",
    "read_geometry",
    "Roi",
    "read_rois",
    "parse_rois",
]
