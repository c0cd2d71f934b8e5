"""ROIs from a GSPS (Grayscale Softcopy Presentation State): graphic annotations -> :class:`Roi`.

One :class:`Roi` per (graphic object, referenced image). An annotation item
references its images in its own Referenced Image Sequence, else all images of
the GSPS's Referenced Series Sequence. Coordinates: see :mod:`.roi_types`.

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
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
from pydicom.dataset import Dataset
from skimage import measure

from .errors import RoiError
from .roi_geometry import Ellipse, distance_to_outline, ellipse_from_points, inside_ellipse
from .roi_types import Roi

# Closing point of a POLYLINE: equal to the first within this (pixels or display
# fractions); 1e-6 absorbs float round-off and is far below a pixel in either unit.
_CLOSED_TOLERANCE = 1e-6
# A text anchor this close (pixels) to a shape's outline labels that shape.
_ANCHOR_TOLERANCE_PX = 1.0


class _Graphic(NamedTuple):
    """A validated graphic object, points still in its own units."""

    index: int
    graphic_type: str
    units: str
    kind: str
    points: np.ndarray


def gsps_rois(ds: Dataset, name: str, point_radius_mm: float) -> Iterator[Roi | RoiError]:
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
        ellipse = ellipse_from_points(kind, points)
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
                    or distance_to_outline(points, xy) <= _ANCHOR_TOLERANCE_PX)
    if kind in ("circle", "ellipse"):
        centre, axis, a, b = ellipse_from_points(kind, points)
        grown = Ellipse(centre, axis, a + _ANCHOR_TOLERANCE_PX, b + _ANCHOR_TOLERANCE_PX)
        return bool(inside_ellipse(grown, xy[0], xy[1]))
    return False
