"""Synthetic GSPS and SEG datasets for the ROI tests, built with pydicom only.

Only the attributes the ROI reader looks at are filled in (plus the SOP
common ones), so each test can state exactly the case it checks.
Coordinates are DICOM PIXEL (column, row) unless ``units="DISPLAY"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from analysis.dicom_input.image import ImageGeometry

GSPS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"


def geometry(uid: str, rows: int = 200, columns: int = 160,
             spacing: tuple[float, float] | None = (0.1, 0.1)) -> ImageGeometry:
    """An image geometry as :func:`read_geometry` would return it."""
    return ImageGeometry(sop_instance_uid=uid, rows=rows, columns=columns,
                         pixel_spacing_mm=spacing, spacing_source="ImagerPixelSpacing" if spacing else None)


def _image_refs(uids: Iterable[str]) -> DicomSequence:
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = MG_SOP_CLASS
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    return DicomSequence(items)


def graphic_object(graphic_type: str, points: Sequence[Sequence[float]], *, units: str = "PIXEL",
                   number_of_points: int | None = None, dimensions: int = 2,
                   data: Sequence[float] | None = None) -> Dataset:
    """A Graphic Object item; ``data`` overrides the flattened points (for malformed cases)."""
    values = [float(v) for point in points for v in point] if data is None else list(data)
    item = Dataset()
    item.GraphicAnnotationUnits = units
    item.GraphicDimensions = dimensions
    item.NumberOfGraphicPoints = len(points) if number_of_points is None else number_of_points
    item.GraphicData = values
    item.GraphicType = graphic_type
    item.GraphicFilled = "N"
    return item


def text_object(text: str, *, anchor: Sequence[float] | None = None, units: str = "PIXEL") -> Dataset:
    item = Dataset()
    item.UnformattedTextValue = text
    if anchor is not None:
        item.AnchorPointAnnotationUnits = units
        item.AnchorPoint = [float(v) for v in anchor]
        item.AnchorPointVisibility = "Y"
    else:  # a text without anchor needs a bounding box to be valid DICOM
        item.BoundingBoxAnnotationUnits = "PIXEL"
        item.BoundingBoxTopLeftHandCorner = [0.0, 0.0]
        item.BoundingBoxBottomRightHandCorner = [10.0, 10.0]
    return item


def annotation(objects: Sequence[Dataset], *, texts: Sequence[Dataset] = (), layer: str | None = None,
               images: Sequence[str] | None = None) -> Dataset:
    """A Graphic Annotation item; ``images=None`` leaves the Referenced Image Sequence out."""
    item = Dataset()
    if images is not None:
        item.ReferencedImageSequence = _image_refs(images)
    if layer is not None:
        item.GraphicLayer = layer
    if texts:
        item.TextObjectSequence = DicomSequence(list(texts))
    if objects:
        item.GraphicObjectSequence = DicomSequence(list(objects))
    return item


def displayed_area(tlhc: Sequence[int], brhc: Sequence[int], *,
                   images: Sequence[str] | None = None) -> Dataset:
    """A Displayed Area Selection item; corners are 1-based (column, row)."""
    item = Dataset()
    if images is not None:
        item.ReferencedImageSequence = _image_refs(images)
    item.DisplayedAreaTopLeftHandCorner = list(tlhc)
    item.DisplayedAreaBottomRightHandCorner = list(brhc)
    item.PresentationSizeMode = "SCALE TO FIT"
    item.PresentationPixelAspectRatio = [1, 1]
    return item


def _sop_common(ds: Dataset, sop_class: str, modality: str) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = "ROI-TEST"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def make_gsps(annotations: Sequence[Dataset], *, series_images: Sequence[str] = (),
              displayed_areas: Sequence[Dataset] = (), rotation: int | None = None,
              flip: str | None = None) -> Dataset:
    """A GSPS whose Referenced Series Sequence lists ``series_images``."""
    ds = Dataset()
    _sop_common(ds, GSPS_SOP_CLASS, "PR")
    if series_images:
        series = Dataset()
        series.SeriesInstanceUID = generate_uid()
        series.ReferencedImageSequence = _image_refs(series_images)
        ds.ReferencedSeriesSequence = DicomSequence([series])
    ds.GraphicAnnotationSequence = DicomSequence(list(annotations))
    if displayed_areas:
        ds.DisplayedAreaSelectionSequence = DicomSequence(list(displayed_areas))
    if rotation is not None:
        ds.ImageRotation = rotation
    if flip is not None:
        ds.ImageHorizontalFlip = flip
    ds.ContentLabel = "ROI_TEST"
    return ds


def make_seg(frames: Sequence[tuple[int | None, str | None, np.ndarray]], *, labels: dict[int, str],
             segmentation_type: str = "BINARY", maximum_fractional_value: int = 255,
             reference: str = "per_frame", series_instances: Sequence[str] | None = None,
             spatial_locations_preserved: str | None = None) -> Dataset:
    """A Segmentation from (segment number, source image UID, frame array) triples.

    ``reference``: where the frame -> image link goes: ``"per_frame"`` (Derivation
    Image Sequence per frame), ``"shared"`` (one in the shared groups: the first
    frame's image) or ``"none"`` (only the Referenced Series Sequence, which lists
    ``series_instances``, default: the frames' images). A segment number of None
    leaves the Segment Identification out (and LABELMAP never has one).
    """
    rows, columns = frames[0][2].shape
    ds = Dataset()
    _sop_common(ds, SEG_SOP_CLASS, "SEG")
    ds.SegmentationType = segmentation_type
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.SegmentSequence = DicomSequence([_segment(number, label) for number, label in labels.items()])
    stack = np.stack([np.asarray(frame) for _, _, frame in frames])
    if segmentation_type == "BINARY":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
        ds.PixelData = pack_bits(stack.astype(np.uint8))
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = stack.astype(np.uint8).tobytes()
        if segmentation_type == "FRACTIONAL":
            ds.SegmentationFractionalType = "PROBABILITY"
            ds.MaximumFractionalValue = maximum_fractional_value
    ds["PixelData"].VR = "OB"
    uids = list(dict.fromkeys(uid for _, uid, _ in frames if uid))
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedInstanceSequence = _image_refs(uids if series_instances is None else series_instances)
    ds.ReferencedSeriesSequence = DicomSequence([series])
    shared = Dataset()
    if reference == "shared":
        shared.DerivationImageSequence = _derivation(frames[0][1], spatial_locations_preserved)
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for number, uid, _ in frames:
        group = Dataset()
        if reference == "per_frame" and uid:
            group.DerivationImageSequence = _derivation(uid, spatial_locations_preserved)
        if number is not None and segmentation_type != "LABELMAP":
            identification = Dataset()
            identification.ReferencedSegmentNumber = number
            group.SegmentIdentificationSequence = DicomSequence([identification])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    return ds


def _segment(number: int, label: str) -> Dataset:
    item = Dataset()
    item.SegmentNumber = number
    item.SegmentLabel = label
    item.SegmentAlgorithmType = "MANUAL"
    return item


def _derivation(uid: str, spatial_locations_preserved: str | None) -> DicomSequence:
    source = Dataset()
    source.ReferencedSOPClassUID = MG_SOP_CLASS
    source.ReferencedSOPInstanceUID = uid
    if spatial_locations_preserved is not None:
        source.SpatialLocationsPreserved = spatial_locations_preserved
    derivation = Dataset()
    derivation.SourceImageSequence = DicomSequence([source])
    return DicomSequence([derivation])


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path
