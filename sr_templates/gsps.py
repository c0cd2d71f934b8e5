"""Grayscale Softcopy Presentation State (GSPS), one per image with ROIs (highdicom).

For viewers that show neither SEG nor CAD SR (Weasis, most PACS viewers): on a
graphic layer named ``CALCNODE`` (its description says "NOT FOR CLINICAL USE"
for the demonstration model), one graphic annotation per ROI with

* the ROI outline (closed POLYLINE),
* the outline of each of its calcifications (closed POLYLINE around the pixels:
  ``skimage.measure.find_contours`` at level 0.5 on the calcification's mask, which
  runs half-way between inside and outside pixel centres; points on a straight run
  dropped, :func:`drop_collinear`),
* a text anchored at the ROI's top-left corner: ROI name, score, threshold and
  decision, or why there is none, and "NOT FOR CLINICAL USE". A detected cluster
  (a view without ROI, ``no_roi = "detect"``) is drawn the same way, its text
  saying "detected by calcnode" and the detection confidence.

A view without ROI whose cluster detection found no cluster (or failed) gets a GSPS
with one text and no graphic: "No calcification cluster detected" (or why the
detection failed), so a viewer that shows only GSPS tells "nothing found" from
"not analysed".

All coordinates are in PIXEL units of the referenced source image (GSPS
convention: (column, row), (0, 0) = top-left corner of the top-left pixel). The
presentation state carries the source image's first VOI window when it has one,
so the image looks as it does without the GSPS.
"""
from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from analysis.extent import label_boxes
from skimage import measure

from .common import (
    NOT_FOR_CLINICAL_USE, clip_outline, closed_outline, contributing_equipment, per_image_object,
    series_description, tracking_identifier, tracking_uid,
)
from . import codes
from .measurement_report import detection_sentence, status_sentence
from analysis.results import ImageResult, RoiResult, StudyResult

LAYER_NAME = "CALCNODE"
MAX_TEXT = 1024  # Unformatted Text Value is ST


def drop_collinear(points: np.ndarray) -> np.ndarray:
    """``points`` (N, 2) of a closed contour without the points that lie exactly on the straight
    run through their neighbours: the same outline with 3-4x fewer points for a contour of a
    pixel mask (whose steps are runs of equal moves), so a GSPS is faster to write and to draw.
    The first point (= the last, for a closed contour) is kept."""
    pts = np.asarray(points, dtype=float)
    if len(pts) < 4:
        return pts
    before = pts[1:-1] - pts[:-2]
    after = pts[2:] - pts[1:-1]
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = (before * after).sum(axis=1)
    keep = np.ones(len(pts), bool)
    keep[1:-1] = ~((np.abs(cross) < 1e-9) & (dot > 0))
    return pts[keep]


def calcification_outlines(image: ImageResult, roi: RoiResult, boxes=None) -> list[np.ndarray]:
    """Closed (N, 2) (column, row) outlines of the calcifications of ``roi`` in PIXEL units.

    ``boxes``: :func:`analysis.extent.label_boxes` of ``image.label_image``, when already computed.
    """
    if image.label_image is None:
        return []
    if boxes is None:
        boxes = label_boxes(image.label_image, image.label_extent)
    outlines = []
    for label in roi.calcification_labels:
        box = boxes[label - 1] if label - 1 < len(boxes) else None
        if box is None:
            continue
        r0, c0 = box[0].start, box[1].start
        # the calcification's pixels with one pixel of background around them
        crop = np.pad((image.label_image[box] == label).astype(float), 1)
        r0, c0 = r0 - 1, c0 - 1
        contours = measure.find_contours(crop, 0.5)
        if not contours:
            continue
        contour = drop_collinear(max(contours, key=len))  # outer boundary
        pts = np.column_stack([contour[:, 1] + c0 + 0.5, contour[:, 0] + r0 + 0.5])
        if not np.array_equal(pts[0], pts[-1]):
            pts = np.vstack([pts, pts[:1]])
        outlines.append(clip_outline(pts, image.shape).astype(np.float32))
    return outlines


def roi_text(result: StudyResult, roi: RoiResult) -> str:
    detected = detection_sentence(roi)
    name = f"{roi.display_name} ({detected})" if detected else roi.display_name
    text = f"{name}: {status_sentence(roi)}"
    if result.model.not_for_clinical_use:
        text += f" - {NOT_FOR_CLINICAL_USE}"
    return text[:MAX_TEXT]


def no_detection_text(result: StudyResult, image: ImageResult) -> str:
    """The text of a view without ROI and without detected cluster."""
    if image.cluster_detection == "detection_failed":
        text = f"calcnode: calcification cluster detection failed: {image.detection_failure}"
    else:
        text = f"calcnode: {codes.NO_CLUSTER_DETECTED_TEXT}"
    if result.model.not_for_clinical_use:
        text += f" - {NOT_FOR_CLINICAL_USE}"
    return text[:MAX_TEXT]


def _voi(source: Dataset) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    center, width = source.get("WindowCenter"), source.get("WindowWidth")
    if center is None or width is None:
        return None
    first = (lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v))
    try:
        return [hd.pr.SoftcopyVOILUTTransformation(window_center=first(center), window_width=first(width))]
    except (TypeError, ValueError):
        return None


def build_presentation_state(result: StudyResult, image: ImageResult, source: Dataset, *,
                             laterality: str | None = None) -> hd.pr.GrayscaleSoftcopyPresentationState | None:
    """The GSPS of one image, or None when the image has no ROI and no cluster detection outcome.

    ``laterality``: the series Laterality (see :func:`study_laterality`); default:
    the image's own side.
    """
    if str(source.SOPInstanceUID) != image.sop_instance_uid:
        raise ValueError(f"source {source.SOPInstanceUID} is not image {image.sop_instance_uid}")
    if not image.rois and image.cluster_detection not in codes.DETECTION_OUTCOME_CODES:
        return None
    description = f"calcnode results - {NOT_FOR_CLINICAL_USE}" if result.model.not_for_clinical_use \
        else "calcnode results"
    layer = hd.pr.GraphicLayer(layer_name=LAYER_NAME, order=1, description=description[:64])
    annotations = []
    boxes = label_boxes(image.label_image, image.label_extent) if image.label_image is not None else []
    for roi in image.rois:
        ident, uid = tracking_identifier(result, image, roi), tracking_uid(result, image, roi)
        objects = [hd.pr.GraphicObject(
            graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
            graphic_data=clip_outline(closed_outline(roi), image.shape),
            units=hd.pr.AnnotationUnitsValues.PIXEL, tracking_id=ident, tracking_uid=uid)]
        for outline in calcification_outlines(image, roi, boxes):
            objects.append(hd.pr.GraphicObject(graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                                               graphic_data=outline, units=hd.pr.AnnotationUnitsValues.PIXEL))
        x0 = float(np.clip(roi.outline_px[:, 0].min(), 0, image.shape[1]))
        y0 = float(np.clip(roi.outline_px[:, 1].min(), 0, image.shape[0]))
        text = hd.pr.TextObject(text_value=roi_text(result, roi), units=hd.pr.AnnotationUnitsValues.PIXEL,
                                anchor_point=(x0, y0), anchor_point_visible=False)
        annotations.append(hd.pr.GraphicAnnotation(referenced_images=[source], graphic_layer=layer,
                                                   graphic_objects=objects, text_objects=[text]))
    if not image.rois:  # cluster detection found nothing (or failed): say so, near the top-left corner
        text = no_detection_text(result, image)
        annotations.append(hd.pr.GraphicAnnotation(referenced_images=[source], graphic_layer=layer, text_objects=[
            hd.pr.TextObject(text_value=text, units=hd.pr.AnnotationUnitsValues.PIXEL,
                             anchor_point=(min(10.0, image.shape[1] / 2), min(10.0, image.shape[0] / 2)),
                             anchor_point_visible=False)]))
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        **per_image_object(result, "GSPS", image),
        content_label="CALCNODE",
        content_description=description[:64],
        graphic_annotations=annotations,
        graphic_layers=[layer],
        voi_lut_transformations=_voi(source),
        contributing_equipment=[contributing_equipment(result)],
    )
    gsps.SeriesDescription = series_description(result, "annotations")
    # General Series Laterality is Type 2C here (the GSPS has no Image Laterality); it is a
    # series attribute and the GSPS series spans the study, so it is the study's common
    # breast side, or empty when the study has both.
    gsps.Laterality = study_laterality(result, sources={image.sop_instance_uid: source}) \
        if laterality is None else laterality
    return gsps


def study_laterality(result: StudyResult, sources) -> str:
    """'L' or 'R' when every image in ``sources`` (uid -> dataset) shows that breast, else ''."""
    sides = {str(ds.get("ImageLaterality", "") or ds.get("Laterality", "")).upper() for ds in sources.values()}
    return sides.pop() if len(sides) == 1 and sides <= {"L", "R"} else ""
