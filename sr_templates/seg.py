"""Segmentation (SEG) of the calcifications, one per analysed image (highdicom).

* BINARY, one segment per ROI that was segmented (status ``ok`` or
  ``not_assessable``; ``failed`` ROIs have none): the calcifications whose labels
  the ROI lists. A detected cluster (a view without ROI, ``no_roi = "detect"``) is
  an ROI like a drawn one, so each cluster is its own segment, labelled "detected
  cluster k": viewers list and colour segments separately, so a radiologist can
  show or hide each cluster (one segment for all would be one on/off switch). Category (49755003, SCT, "Morphologically abnormal structure"),
  type (129770007, SCT, "Individual calcification"), algorithm type AUTOMATIC with
  the model as Segmentation Algorithm Identification. The segment carries the
  ROI's Tracking ID/UID, the same as the TID 1500 measurement group and the GSPS.
* Empty segments (an ROI with no calcification) keep an all-zero frame
  (``omit_empty_frames=False``): every segment listed has exactly one frame, frame
  number = segment number, which is what viewers (OHIF, 3D Slicer) and the SR's
  Referenced Segmentation Frame expect. An image without any segmented ROI gets
  no SEG (:func:`build_segmentation` returns None).
* Fixes for what dciodvfy flags in highdicom 0.28 output for a projection image:
  explicit Pixel Measures (the spacing the analysis used, Imager Pixel Spacing
  first, and a Slice Thickness: the compressed breast thickness (0018,11A0) when
  the source states it, else a nominal 1 mm), and Patient Orientation copied
  from the source (Type 2C in the General Image module; empty when unknown).
* What OHIF v3 (the open viewer of deploy/viewer/, cornerstone3D's SEG reader) needs to show
  the SEG over its image: a Plane Orientation (Patient) functional group (it reads the frame's
  orientation before anything else; a projection image states none, and OHIF then takes the
  image's rows and columns as (1, 0, 0) and (0, 1, 0): the SEG states the source's Image
  Orientation (Patient) when it has one, else that same default, i.e. "the source's own pixel
  grid"); and one SEG per series: OHIF shows only the last instance of a SEG series, so the
  SEG of each image has a series of its own (series number 9101 for all).
"""
from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from . import codes
from .common import (
    MANUFACTURER, NOT_FOR_CLINICAL_USE, contributing_equipment, derived_uid, patient_orientation,
    per_image_object, pixel_spacing_mm, series_description, set_content_datetime, tracking_identifier,
    tracking_uid,
)
from analysis.results import ImageResult, RoiResult, StudyResult

NOMINAL_SLICE_THICKNESS_MM = 1.0
# Row then column direction cosines of an image without Image Orientation (Patient): what OHIF
# (cornerstone3D) assumes for such an image, so a SEG stating it lies in the image's own grid.
PIXEL_GRID_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Recommended Display CIELab Value of segment k (RGB, cycled): saturated colours that stand out on
# a grey mammogram and from one another; without one, OHIF warns on every SEG it loads.
SEGMENT_COLOURS_RGB = ((255, 48, 48), (0, 200, 255), (255, 200, 0), (200, 64, 255))


def segmented_rois(image: ImageResult) -> list[RoiResult]:
    """The ROIs that get a segment, in segment-number order (1, 2, ...)."""
    if image.label_image is None:
        return []
    return [roi for roi in image.rois if roi.status != "failed"]


def segment_pixels(image: ImageResult, rois: list[RoiResult]) -> np.ndarray:
    """The pixel array highdicom encodes: segment k holds the calcifications of ``rois[k - 1]``.

    A (1 frame, rows, columns) label map when no calcification belongs to two ROIs (the usual case);
    else the (1, rows, columns, segments) stack of masks. Both give the same SEG; the label map
    spares highdicom its overlap check, a sum over the whole 4-D stack (~0.15 s per 8.5 Mpx image).
    """
    owned = [label for roi in rois for label in roi.calcification_labels]
    if len(owned) != len(set(owned)) or len(rois) > np.iinfo(np.uint16).max:
        return np.stack([image.roi_mask(roi) for roi in rois], axis=-1)[np.newaxis]
    dtype = np.uint8 if len(rois) <= np.iinfo(np.uint8).max else np.uint16
    pixels = np.zeros((1, *image.shape), dtype)
    extent = image.label_extent  # the lookup runs on the calcifications' box only
    if extent is None:
        return pixels
    labels = image.label_image[extent]
    lookup = np.zeros(max(int(labels.max(initial=0)), max(owned, default=0)) + 1, dtype)
    for number, roi in enumerate(rois, start=1):
        lookup[np.asarray(roi.calcification_labels, dtype=np.int64)] = number
    pixels[0][extent] = lookup[labels]
    return pixels


def segment_number(image: ImageResult, roi: RoiResult) -> int | None:
    """Segment number (= frame number) of ``roi`` in the SEG of ``image``, or None."""
    rois = segmented_rois(image)
    for number, candidate in enumerate(rois, start=1):
        if candidate is roi:
            return number
    return None


def algorithm_identification(result: StudyResult) -> hd.AlgorithmIdentificationSequence:
    model = result.model
    parameters = {key: str(value) for key, value in result.parameters.items()}
    parameters["model_sha256"] = model.sha256
    if model.not_for_clinical_use:
        parameters["clinical_use"] = NOT_FOR_CLINICAL_USE
    return hd.AlgorithmIdentificationSequence(
        name=model.name, version=model.version, family=codes.ARTIFICIAL_INTELLIGENCE,
        source=MANUFACTURER, parameters=parameters)


def _slice_thickness(source: Dataset) -> float:
    value = source.get("BodyPartThickness")
    try:
        thickness = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        thickness = None
    return thickness if thickness and thickness > 0 else NOMINAL_SLICE_THICKNESS_MM


def build_segmentation(result: StudyResult, image: ImageResult, source: Dataset
                       ) -> hd.seg.Segmentation | None:
    """The SEG of one analysed image, or None when no ROI of it was segmented."""
    if str(source.SOPInstanceUID) != image.sop_instance_uid:
        raise ValueError(f"source {source.SOPInstanceUID} is not image {image.sop_instance_uid}")
    rois = segmented_rois(image)
    if not rois:
        return None
    algorithm = algorithm_identification(result)
    descriptions = []
    for number, roi in enumerate(rois, start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=roi.display_name[:64],
            segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            segmented_property_type=codes.INDIVIDUAL_CALCIFICATION,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_id=tracking_identifier(result, image, roi),
            tracking_uid=tracking_uid(result, image, roi),
            display_color=hd.color.CIELabColor.from_rgb(*SEGMENT_COLOURS_RGB[(number - 1) % len(SEGMENT_COLOURS_RGB)]),
        ))
    pixel_array = segment_pixels(image, rois)

    spacing = pixel_spacing_mm(source)
    pixel_measures = None
    if spacing is not None:
        pixel_measures = hd.PixelMeasuresSequence(pixel_spacing=spacing,
                                                  slice_thickness=_slice_thickness(source))
    identity = per_image_object(result, "SEG", image)
    identity["series_instance_uid"] = derived_uid(result, "series", "SEG", image.sop_instance_uid)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **identity,
        content_label="CALCIFICATIONS",
        content_description=series_description(result, "calcifications"),
        pixel_measures=pixel_measures,
        omit_empty_frames=False,
        contributing_equipment=[contributing_equipment(result)],
    )
    seg.PatientOrientation = patient_orientation(source)
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" not in shared:  # highdicom writes it only with a Frame of Reference
        orientation = Dataset()
        orientation.ImageOrientationPatient = list(source.get("ImageOrientationPatient") or PIXEL_GRID_ORIENTATION)
        shared.PlaneOrientationSequence = [orientation]
    if "ContentCreatorName" not in seg:
        seg.ContentCreatorName = ""  # Content Identification macro; empty: no person, a device made it
    seg.SeriesDescription = series_description(result, "SEG")
    set_content_datetime(seg, result)
    return seg
