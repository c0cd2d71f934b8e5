"""The :class:`Roi` type: one region of interest drawn on one image.

Coordinates
-----------
Every ROI is stored in the DICOM GSPS *PIXEL* convention: a point is
(column, row) = (x, y) in pixels, (0, 0) is the top-left corner of the
top-left pixel, and the centre of pixel (r, c) is at (c + 0.5, r + 0.5).
A pixel belongs to a region when its centre lies inside it (polygons: even-odd
rule, so a self-crossing outline leaves its doubly-covered parts out). Lengths in mm
are converted with the referenced image's spacing (:class:`ImageGeometry`,
``pixel_spacing_mm`` = (row spacing, column spacing)).

The readers that make ROIs are :mod:`.gsps` and :mod:`.seg`; :mod:`.rois` is the
public entry that picks one by SOP class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..results import DRAWN_ROI_KINDS
from .errors import RoiError
from .image import ImageGeometry
from .roi_geometry import Ellipse, ellipse_from_points, ellipse_mask, polygon_mask, shoelace_area



@dataclass(frozen=True, eq=False)
class Roi:
    """One region of interest drawn on one image.

    ``points_px``: (N, 2) float, (column, row) in the DICOM PIXEL convention
    (module docstring). Its meaning depends on ``kind``: polygon/polyline
    vertices (a polygon without a repeated closing point), circle (centre, point
    on the circle), ellipse (major axis endpoints, minor axis endpoints), point
    (the point), seg (outer contour of the largest component, for display).
    ``mask`` (SEG only): bool (rows, columns) of the referenced image.
    ``radius_mm`` (POINT only): the disk radius in mm.
    The arrays are stored read-only copies.
    """

    source_sop_instance_uid: str
    referenced_sop_instance_uid: str
    kind: str
    label: str
    points_px: np.ndarray
    roi_id: str
    segment_number: int | None = None
    mask: np.ndarray | None = None
    radius_mm: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in DRAWN_ROI_KINDS:
            raise ValueError(f"unknown ROI kind {self.kind!r}; expected one of {DRAWN_ROI_KINDS}")
        if (self.mask is None) == (self.kind == "seg"):
            raise ValueError("a mask is required for kind 'seg' and only for it")
        points = np.array(self.points_px, dtype=float).reshape(-1, 2)
        points.setflags(write=False)
        object.__setattr__(self, "points_px", points)
        if self.mask is not None:
            mask = np.array(self.mask, dtype=bool)
            mask.setflags(write=False)
            object.__setattr__(self, "mask", mask)

    # ----------------------------------------------------------- measurements

    def area_px(self, geometry: ImageGeometry | None = None) -> float | None:
        """Area in square pixels.

        Polygon: shoelace; open polyline: its implicit closure; circle pi r^2;
        ellipse pi a b; SEG: pixel count; point: the disk of ``radius_mm``,
        which needs ``geometry`` with a spacing (else None).
        Raises :class:`RoiError` when ``geometry`` belongs to another image.
        """
        if geometry is not None:
            self._check_geometry(geometry)
        if self.kind == "seg":
            return float(np.count_nonzero(self.mask))
        if self.kind in ("polygon", "polyline"):
            return shoelace_area(self.points_px)
        if self.kind == "point" and (geometry is None or geometry.pixel_spacing_mm is None):
            return None
        ellipse = self._ellipse(geometry)
        return float(np.pi * ellipse.a * ellipse.b)

    def area_mm2(self, geometry: ImageGeometry | None) -> float | None:
        """Area in mm^2: :meth:`area_px` x pixel area; None without a spacing."""
        if geometry is None or geometry.pixel_area_mm2 is None:
            return None
        return self.area_px(geometry) * geometry.pixel_area_mm2

    def rasterise(self, geometry: ImageGeometry) -> np.ndarray:
        """Bool mask (rows, columns) of the pixels whose centre lies in the region.

        Raises :class:`RoiError` when ``geometry`` is another image
        (``wrong_image``), a SEG mask has another size (``size_mismatch``), a
        POINT meets an image without spacing (``no_spacing``) or the region holds
        no pixel centre of the image (``empty``).
        """
        self._check_geometry(geometry)
        shape = (geometry.rows, geometry.columns)
        if self.kind == "seg":
            mask = self.mask.copy()
        elif self.kind in ("polygon", "polyline"):
            mask = polygon_mask(self.points_px, shape)
        else:
            mask = ellipse_mask(self._ellipse(geometry), shape)
        if not mask.any():
            raise self._error(f"the {self.kind} encloses no pixel centre of the "
                              f"{geometry.columns}x{geometry.rows} image", "empty")
        return mask

    def to_json(self, geometry: ImageGeometry | None = None) -> dict:
        """A JSON-ready dict; ``area_mm2`` (and a point's ``area_px``) need ``geometry``."""
        return {
            "roi_id": self.roi_id,
            "source_sop_instance_uid": self.source_sop_instance_uid,
            "referenced_sop_instance_uid": self.referenced_sop_instance_uid,
            "kind": self.kind,
            "label": self.label,
            "segment_number": self.segment_number,
            "radius_mm": self.radius_mm,
            "points_px": self.points_px.tolist(),
            "area_px": self.area_px(geometry),
            "area_mm2": self.area_mm2(geometry),
        }

    # ---------------------------------------------------------------- helpers

    def _error(self, message: str, reason: str) -> RoiError:
        return RoiError(message, reason=reason,
                        source=f"ROI {self.roi_id} of {self.source_sop_instance_uid}")

    def _check_geometry(self, geometry: ImageGeometry) -> None:
        if geometry.sop_instance_uid != self.referenced_sop_instance_uid:
            raise self._error(f"is drawn on image {self.referenced_sop_instance_uid}, "
                              f"not on image {geometry.sop_instance_uid or '(no SOP Instance UID)'}",
                              "wrong_image")
        if self.mask is not None and self.mask.shape != (geometry.rows, geometry.columns):
            raise self._error(size_mismatch_sentence(self.mask.shape, geometry), "size_mismatch")

    def _ellipse(self, geometry: ImageGeometry | None) -> Ellipse:
        """The ellipse of a circle, ellipse or point ROI (a point needs a spacing)."""
        if self.kind != "point":
            return ellipse_from_points(self.kind, self.points_px)
        if geometry is None or geometry.pixel_spacing_mm is None:
            raise self._error(f"a POINT becomes a disk of {self.radius_mm} mm, but image "
                              f"{self.referenced_sop_instance_uid} states no pixel spacing",
                              "no_spacing")
        row_mm, col_mm = geometry.pixel_spacing_mm
        # x runs along a row (column spacing), y down a column (row spacing).
        return Ellipse(self.points_px[0], np.array([1.0, 0.0]),
                        self.radius_mm / col_mm, self.radius_mm / row_mm)


def size_mismatch_sentence(mask_shape: tuple[int, int], geometry: ImageGeometry) -> str:
    """Why a SEG mask of ``mask_shape`` (rows, columns) does not fit ``geometry``'s image."""
    return (f"the segmentation is {mask_shape[1]}x{mask_shape[0]} pixels (columns x rows) but image "
            f"{geometry.sop_instance_uid} is {geometry.columns}x{geometry.rows}, so its mask cannot "
            "be placed on the image")
