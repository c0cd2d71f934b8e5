"""Regions of interest: GSPS annotations and SEG segments -> :class:`Roi`.

Coordinates
-----------
Every ROI is stored in the DICOM GSPS *PIXEL* convention: a point is
(column, row) = (x, y) in pixels, (0, 0) is the top-left corner of the
top-left pixel, and the centre of pixel (r, c) is at (c + 0.5, r + 0.5).
A pixel belongs to a region when its centre lies inside it (polygons: even-odd
rule, so a self-crossing outline leaves its doubly-covered parts out). Lengths in mm
are converted with the referenced image's spacing (:class:`ImageGeometry`,
``pixel_spacing_mm`` = (row spacing, column spacing)).

GSPS (Grayscale Softcopy Presentation State)
--------------------------------------------
One :class:`Roi` per (graphic object, referenced image). An annotation item
references its images in its own Referenced Image Sequence, else all images of
the GSPS's Referenced Series Sequence.

* POLYLINE and INTERPOLATED: closed (first point == last point) -> ``"polygon"``
  without the repeated last point; otherwise ``"polyline"``, whose region is its
  implicit closure. INTERPOLATED points are used as the polygon's vertices: the
  viewer's smooth curve through them is not reconstructed (it passes through the
  same points, so the difference is a thin sliver along the outline).
* CIRCLE: (centre, a point on the circle). ELLIPSE: the two endpoints of the
  major axis, then the two of the minor axis (any orientation).
* POINT: a disk of ``point_radius_mm`` (mm) around the point; converted to
  pixels with the referenced image's spacing only when measured or rasterised.
* Units PIXEL as they are. DISPLAY: fractions 0..1 of the Displayed Area of the
  referenced image (Displayed Area Selection item that lists it, else the item
  without a Referenced Image Sequence); its corners are 1-based pixel indices
  (column, row), so ``x_px = (tlhc_col - 1) + x * (brhc_col - tlhc_col + 1)``.
  DISPLAY units in a GSPS that also rotates or flips the image (Spatial
  Transformation module) are *not supported* and raise ``RoiError(reason="unsupported")``.
* Label: the graphic layer name, then the annotation's unformatted text. Texts
  whose anchor point lies inside this graphic object (or within 1 pixel of its
  outline) are used; if none does, the annotation's texts not anchored to any of
  its objects. "annotation N" when there is neither layer nor text.
* ``roi_id``: ``"ann<A>-obj<O>"`` (1-based), with ``"-img<K>"`` appended when the
  annotation applies to several images (K = position in its image list).

SEG (Segmentation)
------------------
Read with pydicom directly (highdicom refuses the pixels of some real files by
default, e.g. dcmqi's, which omit Spatial Locations Preserved; here an absent
value counts as YES, while NO and REORIENTED_ONLY are refused). One :class:`Roi` per
(segment, referenced image): the union of that segment's frames that reference
the image. Frame -> image from the per-frame Derivation Image Sequence, else
the shared one, else the Referenced Series Sequence when it lists exactly one
instance; a frame that names several source images counts for each. A segment
with a frame that cannot be placed gives one error and no ROI (a partial mask
would be silently wrong). Referenced Frame Number is ignored (mammograms are
single-frame).
BINARY frames: value 1; FRACTIONAL: value >= 0.5 x Maximum Fractional Value;
LABELMAP: value == segment number. Empty masks are skipped. ``points_px`` is the
outer contour of the largest 8-connected component (``skimage.measure.find_contours``
at level 0.5: it runs half-way between inside and outside pixel centres), for
display; ``area_px`` is the pixel count of the whole mask. ``roi_id``:
``"seg<N>"``, with ``"-img<K>"`` when the segment covers several images.

Errors
------
Every problem is a :class:`RoiError` with a sentence and a ``reason``:
``not_found``, ``not_dicom``, ``corrupt`` (unreadable or truncated file: pydicom
itself reads a cut file silently, so short reads are detected here), ``sop_class``,
``no_roi``, ``no_reference``, ``unknown_image``, ``no_displayed_area``,
``unsupported``, ``malformed``, ``degenerate``, ``decode``, ``size_mismatch``,
``wrong_image``, ``no_spacing``, ``empty``.
:func:`read_rois` raises the first; :func:`parse_rois` returns them beside the
good ROIs (a problem with the whole object gives no ROI and one error).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from skimage import measure

from .errors import RoiError
from .image import ImageGeometry, read_dataset, sop_class_name

GSPS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
DEFAULT_POINT_RADIUS_MM = 2.5
ROI_KINDS = ("ellipse", "circle", "polygon", "polyline", "point", "seg")

# Closing point of a POLYLINE: equal to the first within this (pixels or display
# fractions); 1e-6 absorbs float round-off and is far below a pixel in either unit.
_CLOSED_TOLERANCE = 1e-6
# A text anchor this close (pixels) to a shape's outline labels that shape.
_ANCHOR_TOLERANCE_PX = 1.0


class _Ellipse(NamedTuple):
    """An ellipse in PIXEL coordinates: centre (x, y), unit vector of the first
    semi-axis, and the two semi-axis lengths (pixels)."""

    centre: np.ndarray
    axis: np.ndarray
    a: float
    b: float


# --------------------------------------------------------------------------- Roi

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
        if self.kind not in ROI_KINDS:
            raise ValueError(f"unknown ROI kind {self.kind!r}; expected one of {ROI_KINDS}")
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
            return _shoelace(self.points_px)
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
            mask = _polygon_mask(self.points_px, shape)
        else:
            mask = _ellipse_mask(self._ellipse(geometry), shape)
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
            raise self._error(_size_mismatch_sentence(self.mask.shape, geometry), "size_mismatch")

    def _ellipse(self, geometry: ImageGeometry | None) -> _Ellipse:
        """The ellipse of a circle, ellipse or point ROI (a point needs a spacing)."""
        if self.kind != "point":
            return _ellipse_from_points(self.kind, self.points_px)
        if geometry is None or geometry.pixel_spacing_mm is None:
            raise self._error(f"a POINT becomes a disk of {self.radius_mm} mm, but image "
                              f"{self.referenced_sop_instance_uid} states no pixel spacing",
                              "no_spacing")
        row_mm, col_mm = geometry.pixel_spacing_mm
        # x runs along a row (column spacing), y down a column (row spacing).
        return _Ellipse(self.points_px[0], np.array([1.0, 0.0]),
                        self.radius_mm / col_mm, self.radius_mm / row_mm)


# ------------------------------------------------------------------ public readers

def read_rois(source: str | os.PathLike | Dataset, *, images: Iterable[ImageGeometry] = (),
              point_radius_mm: float = DEFAULT_POINT_RADIUS_MM) -> list[Roi]:
    """All ROIs of a GSPS or SEG; raises :class:`RoiError` on the first problem.

    ``images``: when given, every ROI must reference one of them
    (``unknown_image``) and a SEG must have their size (``size_mismatch``).
    ``point_radius_mm``: radius (mm) of the disk that stands for a POINT.
    """
    rois = []
    for item in _iter_rois(source, images, point_radius_mm):
        if isinstance(item, RoiError):
            raise item
        rois.append(item)
    return rois


def parse_rois(source: str | os.PathLike | Dataset, *, images: Iterable[ImageGeometry] = (),
               point_radius_mm: float = DEFAULT_POINT_RADIUS_MM) -> tuple[list[Roi], list[RoiError]]:
    """Lenient :func:`read_rois`: the good ROIs and one error per bad object.

    A problem with the whole object (unreadable, wrong SOP class, no region at
    all) gives ``([], [error])``; this function does not raise RoiError.
    """
    rois: list[Roi] = []
    errors: list[RoiError] = []
    try:
        for item in _iter_rois(source, images, point_radius_mm):
            (errors if isinstance(item, RoiError) else rois).append(item)
    except RoiError as exc:
        errors.append(exc)
    return rois, errors


def _iter_rois(source, images: Iterable[ImageGeometry],
               point_radius_mm: float) -> Iterator[Roi | RoiError]:
    """Yield each ROI or per-object error; raise for whole-object problems."""
    if not point_radius_mm > 0:
        raise ValueError(f"point_radius_mm must be > 0, got {point_radius_mm}")
    by_uid = {geometry.sop_instance_uid: geometry for geometry in images}
    ds = read_dataset(source, error=RoiError)
    name = _source_name(source, ds)
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == GSPS_SOP_CLASS:
        items = _gsps_rois(ds, name, point_radius_mm)
    elif sop_class == SEG_SOP_CLASS:
        items = _seg_rois(ds, name)
    else:
        raise RoiError(f"is a {sop_class_name(ds)}, not a Grayscale Softcopy Presentation State "
                       "or a Segmentation; regions of interest are read only from those",
                       reason="sop_class", source=name)
    try:
        for item in items:
            problem = _check_against_images(item, by_uid, name) if isinstance(item, Roi) else None
            yield problem or item
    except RoiError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        # A required attribute missing or of the wrong form somewhere we did not
        # check one by one: still a sentence for the log, not a traceback.
        raise RoiError(f"is malformed ({type(exc).__name__}: {exc})", reason="malformed",
                       source=name) from exc


def _source_name(source, ds: Dataset) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"SOP instance {ds.get('SOPInstanceUID', '(no SOP Instance UID)')}"


def _check_against_images(roi: Roi, images: dict[str, ImageGeometry], name: str) -> RoiError | None:
    if not images:
        return None
    geometry = images.get(roi.referenced_sop_instance_uid)
    if geometry is None:
        return RoiError(f"ROI {roi.roi_id} ({roi.label}) references image "
                        f"{roi.referenced_sop_instance_uid}, which is not among the {len(images)} "
                        "image(s) given", reason="unknown_image", source=name)
    if roi.mask is not None and roi.mask.shape != (geometry.rows, geometry.columns):
        return RoiError(f"ROI {roi.roi_id} ({roi.label}): "
                        + _size_mismatch_sentence(roi.mask.shape, geometry),
                        reason="size_mismatch", source=name)
    return None


def _size_mismatch_sentence(mask_shape: tuple[int, int], geometry: ImageGeometry) -> str:
    return (f"the segmentation is {mask_shape[1]}x{mask_shape[0]} pixels (columns x rows) but image "
            f"{geometry.sop_instance_uid} is {geometry.columns}x{geometry.rows}, so its mask cannot "
            "be placed on the image")


# ------------------------------------------------------------------------- GSPS

class _Graphic(NamedTuple):
    """A validated graphic object, points still in its own units."""

    index: int
    graphic_type: str
    units: str
    kind: str
    points: np.ndarray


def _gsps_rois(ds: Dataset, name: str, point_radius_mm: float) -> Iterator[Roi | RoiError]:
    annotations = ds.get("GraphicAnnotationSequence") or []
    if not any(annotation.get("GraphicObjectSequence") for annotation in annotations):
        raise RoiError("has no graphic object in its Graphic Annotation Sequence (text at most), "
                       "so it marks no region", reason="no_roi", source=name)
    for a_index, annotation in enumerate(annotations, start=1):
        if annotation.get("GraphicObjectSequence"):
            yield from _annotation_rois(ds, annotation, a_index, name, point_radius_mm)


def _annotation_rois(ds: Dataset, annotation: Dataset, a_index: int, name: str,
                     point_radius_mm: float) -> Iterator[Roi | RoiError]:
    """The ROIs of one Graphic Annotation item: each valid object on each image."""
    graphics = []
    for o_index, obj in enumerate(annotation.GraphicObjectSequence, start=1):
        try:
            graphics.append(_parse_graphic(obj, o_index, f"annotation {a_index}, graphic object {o_index}"))
        except RoiError as exc:
            exc.source = name
            yield exc
    image_uids = _annotation_images(ds, annotation)
    if not image_uids:
        yield RoiError(f"annotation {a_index} references no image (no Referenced Image Sequence "
                       "in the item or in the Referenced Series Sequence)",
                       reason="no_reference", source=name)
        return
    layer = str(annotation.get("GraphicLayer", "") or "").strip()
    for i_index, image_uid in enumerate(image_uids, start=1):
        shapes = []
        for graphic in graphics:
            where = f"annotation {a_index}, graphic object {graphic.index} ({graphic.graphic_type})"
            try:
                shapes.append((graphic, _to_pixel(ds, graphic.points, graphic.units, image_uid, where)))
            except RoiError as exc:
                exc.source = name
                yield exc
        texts = _annotation_texts(ds, annotation, image_uid)
        for graphic, points in shapes:
            suffix = f"-img{i_index}" if len(image_uids) > 1 else ""
            yield Roi(
                source_sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                referenced_sop_instance_uid=image_uid,
                kind=graphic.kind,
                label=_label(layer, texts, graphic.kind, points, shapes, a_index),
                points_px=points,
                roi_id=f"ann{a_index}-obj{graphic.index}{suffix}",
                radius_mm=float(point_radius_mm) if graphic.kind == "point" else None,
            )


def _annotation_images(ds: Dataset, annotation: Dataset) -> list[str]:
    """SOP Instance UIDs an annotation applies to, in order, without repeats."""
    items = annotation.get("ReferencedImageSequence")
    if not items:
        items = [image for series in ds.get("ReferencedSeriesSequence") or []
                 for image in series.get("ReferencedImageSequence") or []]
    uids = [str(item.ReferencedSOPInstanceUID) for item in items if item.get("ReferencedSOPInstanceUID")]
    return list(dict.fromkeys(uids))


def _parse_graphic(obj: Dataset, index: int, where: str) -> _Graphic:
    """Check one Graphic Object item and classify it; points in its own units."""
    graphic_type = str(obj.get("GraphicType", "") or "").upper()
    where = f"{where} ({graphic_type or 'no Graphic Type'})"
    units = str(obj.get("GraphicAnnotationUnits", "") or "").upper()
    if units not in ("PIXEL", "DISPLAY"):
        raise RoiError(f"{where}: Graphic Annotation Units {units or '(missing)'} is not supported; "
                       "only PIXEL and DISPLAY are", reason="unsupported")
    # Graphic Dimensions is Type 1 and always 2 in practice; a missing value is read as 2.
    dimensions = int(obj.get("GraphicDimensions", 2) or 2)
    if dimensions != 2:
        raise RoiError(f"{where}: Graphic Dimensions is {dimensions}; a region on an image is 2D",
                       reason="malformed")
    values = np.atleast_1d(np.asarray(obj.get("GraphicData", []) or [], dtype=float))
    if values.size % 2:
        raise RoiError(f"{where}: Graphic Data holds {values.size} values, an odd number, "
                       "so it is not a list of (column, row) pairs", reason="malformed")
    if not np.all(np.isfinite(values)):
        raise RoiError(f"{where}: Graphic Data holds a non-finite value", reason="malformed")
    points = values.reshape(-1, 2)
    declared = obj.get("NumberOfGraphicPoints")
    if declared is not None and int(declared) != len(points):
        raise RoiError(f"{where}: Number of Graphic Points says {int(declared)} but Graphic Data "
                       f"holds {len(points)} points", reason="malformed")
    kind, points = _classify(graphic_type, points, where)
    return _Graphic(index, graphic_type, units, kind, points)


def _classify(graphic_type: str, points: np.ndarray, where: str) -> tuple[str, np.ndarray]:
    """ROI kind and the points it keeps; raises for shapes that are not regions."""
    if graphic_type in ("POLYLINE", "INTERPOLATED"):
        return _classify_polyline(points, where)
    expected = {"CIRCLE": 2, "ELLIPSE": 4, "POINT": 1}.get(graphic_type)
    if expected is None:
        raise RoiError(f"{where}: Graphic Type {graphic_type or '(missing)'} is not a region; "
                       "expected POLYLINE, INTERPOLATED, CIRCLE, ELLIPSE or POINT", reason="unsupported")
    if len(points) != expected:
        meaning = {"CIRCLE": "the centre and a point on the circle",
                   "ELLIPSE": "the major axis endpoints, then the minor axis endpoints",
                   "POINT": "the point"}[graphic_type]
        raise RoiError(f"{where}: has {len(points)} point(s); {graphic_type} takes {expected} "
                       f"({meaning})", reason="malformed")
    kind = graphic_type.lower()
    if kind in ("circle", "ellipse"):
        ellipse = _ellipse_from_points(kind, points)
        if min(ellipse.a, ellipse.b) <= 0:
            raise RoiError(f"{where}: has a zero-length axis, so it encloses nothing",
                           reason="degenerate")
    return kind, points


def _classify_polyline(points: np.ndarray, where: str) -> tuple[str, np.ndarray]:
    if len(points) < 2:
        raise RoiError(f"{where}: has {len(points)} point(s); a polyline needs at least 2",
                       reason="degenerate")
    if not np.allclose(points[0], points[-1], rtol=0, atol=_CLOSED_TOLERANCE):
        return "polyline", points
    vertices = points[:-1]
    if len(np.unique(vertices, axis=0)) < 3:
        raise RoiError(f"{where}: a closed polyline with {len(np.unique(vertices, axis=0))} distinct "
                       "vertices encloses nothing; a polygon needs at least 3", reason="degenerate")
    return "polygon", vertices


def _to_pixel(ds: Dataset, points: np.ndarray, units: str, image_uid: str, where: str) -> np.ndarray:
    """Points in PIXEL coordinates of ``image_uid`` (DISPLAY mapped through the Displayed Area)."""
    if units == "PIXEL":
        return points
    rotation = float(ds.get("ImageRotation", 0) or 0)
    if rotation % 360 != 0 or str(ds.get("ImageHorizontalFlip", "N")).upper() == "Y":
        raise RoiError(f"{where}: DISPLAY units in a presentation state that rotates or flips the "
                       "image are not supported", reason="unsupported")
    corners = _displayed_area(ds, image_uid)
    if corners is None:
        raise RoiError(f"{where}: DISPLAY units need a Displayed Area for image {image_uid}, and the "
                       "Displayed Area Selection Sequence has none", reason="no_displayed_area")
    tlhc, brhc = corners
    # Corners are 1-based pixel indices, so the area spans from the top-left edge of
    # pixel TLHC (tlhc - 1 in PIXEL coordinates) to the bottom-right edge of BRHC.
    return (tlhc - 1) + points * (brhc - tlhc + 1)


def _displayed_area(ds: Dataset, image_uid: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(TLHC, BRHC) as (column, row) for the image, or None."""
    general = None
    for item in ds.get("DisplayedAreaSelectionSequence") or []:
        references = item.get("ReferencedImageSequence")
        if not references:
            general = item if general is None else general
        elif any(str(ref.get("ReferencedSOPInstanceUID", "")) == image_uid for ref in references):
            return _corners(item)
    return _corners(general) if general is not None else None


def _corners(item: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    tlhc = item.get("DisplayedAreaTopLeftHandCorner")
    brhc = item.get("DisplayedAreaBottomRightHandCorner")
    if tlhc is None or brhc is None or len(tlhc) != 2 or len(brhc) != 2:
        return None
    return np.asarray(tlhc, dtype=float), np.asarray(brhc, dtype=float)


def _annotation_texts(ds: Dataset, annotation: Dataset,
                      image_uid: str) -> list[tuple[str, np.ndarray | None]]:
    """(text with whitespace collapsed, anchor in PIXEL coordinates or None) per Text Object."""
    texts = []
    for item in annotation.get("TextObjectSequence") or []:
        text = " ".join(str(item.get("UnformattedTextValue", "") or "").split())
        if not text:
            continue
        anchor = None
        if item.get("AnchorPoint") is not None and len(item.AnchorPoint) == 2:
            units = str(item.get("AnchorPointAnnotationUnits", "PIXEL")).upper()
            try:
                anchor = _to_pixel(ds, np.asarray(item.AnchorPoint, dtype=float), units, image_uid, "text")
            except RoiError:
                anchor = None  # an anchor we cannot place only loses the text-to-shape pairing
        texts.append((text, anchor))
    return texts


def _label(layer: str, texts, kind: str, points: np.ndarray, shapes, a_index: int) -> str:
    """Layer name plus the texts that belong to this shape (module docstring)."""
    own = [text for text, anchor in texts if anchor is not None and _contains(kind, points, anchor)]
    if not own:
        own = [text for text, anchor in texts
               if anchor is None or not any(_contains(g.kind, p, anchor) for g, p in shapes)]
    parts = [part for part in (layer, " | ".join(own)) if part]
    return ": ".join(parts) if parts else f"annotation {a_index}"


def _contains(kind: str, points: np.ndarray, xy: np.ndarray) -> bool:
    """Whether a text anchor (PIXEL coordinates) belongs to a polygon, polyline closure, circle or ellipse.

    Inside, or within ``_ANCHOR_TOLERANCE_PX`` of the outline: vendors put the
    anchor on the outline itself (Lunit: on a vertex), where an inside test is a coin toss.
    """
    if kind in ("polygon", "polyline"):
        return bool(measure.points_in_poly(xy.reshape(1, 2), points)[0]
                    or _distance_to_outline(points, xy) <= _ANCHOR_TOLERANCE_PX)
    if kind in ("circle", "ellipse"):
        centre, axis, a, b = _ellipse_from_points(kind, points)
        grown = _Ellipse(centre, axis, a + _ANCHOR_TOLERANCE_PX, b + _ANCHOR_TOLERANCE_PX)
        return bool(_inside_ellipse(grown, xy[0], xy[1]))
    return False


def _distance_to_outline(points: np.ndarray, xy: np.ndarray) -> float:
    """Shortest distance (pixels) from a point to the closed outline through ``points``."""
    start, end = points, np.roll(points, -1, axis=0)
    edge = end - start
    length2 = np.maximum(np.einsum("ij,ij->i", edge, edge), 1e-12)
    t = np.clip(np.einsum("ij,ij->i", xy - start, edge) / length2, 0.0, 1.0)
    nearest = start + t[:, None] * edge
    return float(np.min(np.linalg.norm(nearest - xy, axis=1)))


# -------------------------------------------------------------------------- SEG

def _seg_rois(ds: Dataset, name: str) -> Iterator[Roi | RoiError]:
    """One ROI per (segment, referenced image) with a non-empty mask."""
    labels = {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or f"segment {item.SegmentNumber}")
              for item in ds.get("SegmentSequence") or [] if "SegmentNumber" in item}
    if not labels:
        raise RoiError("has no Segment Sequence, so it defines no segment", reason="no_roi", source=name)
    masks: dict[tuple[int, str], np.ndarray] = {}
    problems: dict[int, RoiError] = {}
    for segment, image_uids, mask, error in _seg_frames(ds, labels, name):
        if error is not None:
            problems.setdefault(segment, error)
            continue
        for uid in image_uids:
            key = (segment, uid)
            masks[key] = masks[key] | mask if key in masks else mask
    yield from problems.values()
    count = 0
    for segment in sorted(labels):
        if segment in problems:
            continue
        images = [uid for (number, uid), mask in masks.items() if number == segment and mask.any()]
        for i_index, uid in enumerate(images, start=1):
            mask = masks[(segment, uid)]
            count += 1
            yield Roi(
                source_sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                referenced_sop_instance_uid=uid,
                kind="seg",
                label=labels[segment],
                points_px=_outer_contour(mask),
                roi_id=f"seg{segment}" + (f"-img{i_index}" if len(images) > 1 else ""),
                segment_number=segment,
                mask=mask,
            )
    if count == 0 and not problems:
        raise RoiError(f"all {len(labels)} segment(s) are empty, so it marks no region",
                       reason="no_roi", source=name)


def _seg_frames(ds: Dataset, labels: dict[int, str], name: str):
    """Yield (segment number, referenced image UIDs, bool mask, error or None) per frame and segment."""
    seg_type = str(ds.get("SegmentationType", "") or "").upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise RoiError(f"Segmentation Type {seg_type or '(missing)'} is not supported; "
                       "expected BINARY, FRACTIONAL or LABELMAP", reason="unsupported", source=name)
    frames = _seg_pixels(ds, name)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared_items = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_items[0] if shared_items else Dataset()
    series_fallback = _single_series_instance(ds)
    for f_index, frame in enumerate(frames):
        group = per_frame[f_index] if f_index < len(per_frame) else Dataset()
        uids, preserved = _frame_references(group, shared, series_fallback)
        for segment, mask in _frame_masks(seg_type, ds, frame, group, shared, labels):
            if segment is None:
                yield segment, [], mask, RoiError(
                    f"frame {f_index + 1} names no segment (no Segment Identification Sequence) and "
                    f"the segmentation defines {len(labels)}", reason="malformed", source=name)
            elif segment not in labels:
                yield segment, [], mask, RoiError(
                    f"frame {f_index + 1} refers to segment {segment}, which the Segment Sequence "
                    "does not define", reason="malformed", source=name)
            elif not uids:
                yield segment, [], mask, RoiError(
                    f"segment {segment} ({labels[segment]}): frame {f_index + 1} names no source image "
                    "(no Derivation Image Sequence, and the Referenced Series Sequence does not list "
                    "exactly one instance)", reason="no_reference", source=name)
            elif not preserved:
                yield segment, [], mask, RoiError(
                    f"segment {segment} ({labels[segment]}): frame {f_index + 1} says Spatial Locations "
                    "Preserved is not YES, so its pixels do not line up with the image",
                    reason="unsupported", source=name)
            else:
                yield segment, uids, mask, None


def _seg_pixels(ds: Dataset, name: str) -> np.ndarray:
    """All frames as an array (frames, rows, columns) of stored values."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types; all mean "cannot decode"
        raise RoiError(f"segmentation pixel data cannot be decoded ({type(exc).__name__}: {exc})",
                       reason="decode", source=name) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    if pixels.size != frames * rows * columns:
        raise RoiError(f"pixel data holds {pixels.size} values, not {frames} frames of "
                       f"{columns}x{rows}", reason="malformed", source=name)
    return pixels.reshape(frames, rows, columns)


def _frame_masks(seg_type: str, ds: Dataset, frame: np.ndarray, group: Dataset, shared: Dataset,
                 labels: dict[int, str]) -> list[tuple[int | None, np.ndarray]]:
    """(segment number, bool mask) carried by one frame."""
    if seg_type == "LABELMAP":  # one frame holds every segment, by value
        return [(segment, frame == segment) for segment in labels]
    if seg_type == "FRACTIONAL":
        maximum = float(ds.get("MaximumFractionalValue", 255) or 255)
        mask = frame >= 0.5 * maximum
    else:
        mask = frame > 0
    segment = _frame_segment(group, shared, labels)
    return [(segment, mask)]


def _frame_segment(group: Dataset, shared: Dataset, labels: dict[int, str]) -> int | None:
    """The segment a BINARY/FRACTIONAL frame belongs to, or None when it does not say."""
    for item in (group, shared):
        identification = item.get("SegmentIdentificationSequence")
        if identification and identification[0].get("ReferencedSegmentNumber") is not None:
            return int(identification[0].ReferencedSegmentNumber)
    # Without an identification a frame can only belong to the SEG's single segment.
    return next(iter(labels)) if len(labels) == 1 else None


def _frame_references(group: Dataset, shared: Dataset,
                      series_fallback: list[str]) -> tuple[list[str], bool]:
    """(source image UIDs, spatial locations preserved) of one frame."""
    for item in (group, shared):
        sources = [source for derivation in item.get("DerivationImageSequence") or []
                   for source in derivation.get("SourceImageSequence") or []
                   if source.get("ReferencedSOPInstanceUID")]
        if sources:
            # Absent (dcmqi omits it) counts as preserved; NO and REORIENTED_ONLY do not.
            preserved = all(str(source.get("SpatialLocationsPreserved", "YES") or "YES").upper() == "YES"
                            for source in sources)
            uids = [str(source.ReferencedSOPInstanceUID) for source in sources]
            return list(dict.fromkeys(uids)), preserved
    return series_fallback, True


def _single_series_instance(ds: Dataset) -> list[str]:
    instances = [str(item.ReferencedSOPInstanceUID)
                 for series in ds.get("ReferencedSeriesSequence") or []
                 for item in series.get("ReferencedInstanceSequence") or []
                 if item.get("ReferencedSOPInstanceUID")]
    return instances if len(set(instances)) == 1 else []


def _outer_contour(mask: np.ndarray) -> np.ndarray:
    """Outer contour (column, row), DICOM PIXEL convention, of the largest 8-connected component."""
    components = measure.label(mask, connectivity=2)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    # Pad so a component touching the border still yields a closed contour.
    contours = measure.find_contours(np.pad(largest, 1).astype(float), 0.5, fully_connected="high")
    outer = max(contours, key=lambda contour: abs(_shoelace(contour)))
    if len(outer) > 1 and np.array_equal(outer[0], outer[-1]):
        outer = outer[:-1]
    # find_contours: (row, col) with pixel centres at integers, shifted by the pad of 1;
    # DICOM PIXEL puts the centre of pixel (r, c) at (c + 0.5, r + 0.5).
    return np.column_stack([outer[:, 1] - 0.5, outer[:, 0] - 0.5])


# --------------------------------------------------------------------- geometry

def _shoelace(points: np.ndarray) -> float:
    """Area enclosed by a polygon (implicitly closed), in the squared units of its points."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _ellipse_from_points(kind: str, points: np.ndarray) -> _Ellipse:
    """The ellipse of a CIRCLE (centre, rim point) or ELLIPSE (major, then minor endpoints)."""
    if kind == "circle":
        radius = float(np.linalg.norm(points[1] - points[0]))
        return _Ellipse(points[0], np.array([1.0, 0.0]), radius, radius)
    major = points[1] - points[0]
    a = float(np.linalg.norm(major)) / 2.0
    b = float(np.linalg.norm(points[3] - points[2])) / 2.0
    axis = major / (2.0 * a) if a > 0 else np.array([1.0, 0.0])
    return _Ellipse((points[0] + points[1]) / 2.0, axis, a, b)


def _inside_ellipse(ellipse: _Ellipse, x, y):
    """Whether points (x, y) (PIXEL coordinates, arrays or scalars) lie in the ellipse."""
    dx, dy = x - ellipse.centre[0], y - ellipse.centre[1]
    ux, uy = ellipse.axis
    along = dx * ux + dy * uy
    across = -dx * uy + dy * ux
    return (along / ellipse.a) ** 2 + (across / ellipse.b) ** 2 <= 1.0


def _ellipse_mask(ellipse: _Ellipse, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies in the ellipse; only its bounding box is evaluated."""
    ux, uy = ellipse.axis
    half_x = np.hypot(ellipse.a * ux, ellipse.b * uy)
    half_y = np.hypot(ellipse.a * uy, ellipse.b * ux)
    cx, cy = ellipse.centre
    # Pixel index i has its centre at i + 0.5.
    c0, c1 = max(int(np.ceil(cx - half_x - 0.5)), 0), min(int(np.floor(cx + half_x - 0.5)), shape[1] - 1)
    r0, r1 = max(int(np.ceil(cy - half_y - 0.5)), 0), min(int(np.floor(cy + half_y - 0.5)), shape[0] - 1)
    mask = np.zeros(shape, dtype=bool)
    if c0 > c1 or r0 > r1:
        return mask
    rows, cols = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    mask[r0:r1 + 1, c0:c1 + 1] = _inside_ellipse(ellipse, cols + 0.5, rows + 0.5)
    return mask


def _polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies in the polygon (even-odd rule; an open polyline is closed implicitly).

    A scanline fill at the pixel-centre rows y = r + 0.5: skimage.draw.polygon tests
    every pixel of the bounding box against every edge, which takes seconds for
    the thousands of vertices of a freehand outline on a mammogram. Centres exactly
    on an edge: left and top edges are in, right and bottom edges out.
    """
    rows, columns = shape
    mask = np.zeros(shape, dtype=bool)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = max(int(np.ceil(low.min() - 0.5)), 0)
    last = min(int(np.floor(high.max() - 0.5)), rows - 1)
    # Bound the (rows x edges) work arrays to a few million entries.
    block = max(1, 2_000_000 // len(points))
    for start in range(first, last + 1, block):
        r = np.arange(start, min(start + block, last + 1))
        y = r[:, None] + 0.5
        # Half-open in y, so a vertex is counted once and horizontal edges never.
        crosses = (low <= y) & (y < high)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(crosses, x0 + (y - y0) * (x1 - x0) / (y1 - y0), np.inf)
        x.sort(axis=1)
        pairs = crosses.sum(axis=1) // 2
        row_index = np.repeat(np.arange(len(r)), pairs)
        rank = np.concatenate([np.arange(n) for n in pairs]) if pairs.any() else np.zeros(0, int)
        # Pixel c is in a span [x_in, x_out) when x_in <= c + 0.5 < x_out.
        enter = np.clip(np.ceil(x[row_index, 2 * rank] - 0.5), 0, columns).astype(int)
        leave = np.clip(np.ceil(x[row_index, 2 * rank + 1] - 0.5), 0, columns).astype(int)
        runs = np.zeros((len(r), columns + 1), dtype=np.int32)
        np.add.at(runs, (row_index, enter), 1)
        np.add.at(runs, (row_index, leave), -1)
        mask[r] = np.cumsum(runs[:, :columns], axis=1) > 0
    return mask
