"""DICOM writing: the MG image, the GSPS with the ROIs, or a SEG with the ROIs.

MG: Digital Mammography X-Ray Image Storage - For Presentation, 12-bit
MONOCHROME2, explicit VR little endian, with the header conventions of a Hologic
2D image (Imager Pixel Spacing at the detector, Image Laterality, View Code
Sequence with SNOMED CT codes, Presentation Intent FOR PRESENTATION, a linear
window). Patient and study identity are obviously synthetic (SYNTH^CASE0001).
Every date, time and UID is derived from the seed, so files are reproducible byte
for byte.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, PYDICOM_ROOT_UID, generate_uid

from common.durable import atomic_path

from .roi_outline import RoiShape

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SOFTWARE = "calcnode-synth 1.0"
MODEL_NAME = "calcnode mammography simulator"
VIEW_CODES = {  # SNOMED CT, as Hologic writes them
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}
# Patient Orientation (row direction \ column direction) for the stored images
PATIENT_ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"],
                       ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}


class UidFactory:
    """Deterministic UIDs: ``<pydicom root>.<seed>.<hash of (run fingerprint, seed, names...)>``.

    ``generate_uid(prefix=None, ...)`` would ignore the entropy sources and return a
    random UUID-based ``2.25`` UID, so a prefix is required for reproducibility; the
    prefix is pydicom's UID root plus the seed (modulo 10^8).
    """

    def __init__(self, fingerprint: str, seed: int):
        self.prefix = f"{PYDICOM_ROOT_UID}{int(seed) % 10 ** 8}."
        self._base = [f"calcnode-synth:{fingerprint}", f"seed:{seed}"]

    def __call__(self, *parts) -> str:
        return str(generate_uid(prefix=self.prefix, entropy_srcs=self._base + [str(p) for p in parts]))


@dataclass
class ImageInfo:
    """What the MG header says about one image (all strings DICOM-ready)."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_id: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS
    series_number: int
    instance_number: int
    laterality: str
    view: str
    spacing_mm: float
    manufacturer: str
    patient_age: str = "055Y"
    body_part_thickness_mm: float = 50.0
    compression_force_n: float = 100.0
    comments: str = "SYNTHETIC IMAGE made by calcnode synth; not a patient"
    derivation: str | None = None
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CALCNODE_SYNTH"
    return meta


def mg_dataset(pixels: np.ndarray, info: ImageInfo) -> Dataset:
    """An MG For Presentation dataset around ``pixels`` (uint16, values 0..4095)."""
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ValueError("pixels must be a 2-D uint16 array")
    ds = Dataset()
    ds.file_meta = _file_meta(MG_FOR_PRESENTATION, info.sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(info.image_type)
    ds.InstanceCreationDate = info.study_date
    ds.InstanceCreationTime = info.study_time
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = info.sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = info.study_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = info.study_time
    ds.AccessionNumber = ""
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = info.manufacturer
    ds.InstitutionName = "SYNTHETIC"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic mammogram (calcnode simulator)"
    ds.SeriesDescription = "Synthetic 2D mammography"
    ds.ManufacturerModelName = MODEL_NAME
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = info.patient_age
    ds.BodyPartExamined = "BREAST"
    ds.KVP = 29
    ds.DeviceSerialNumber = "SYNTH0000"
    ds.SoftwareVersions = SOFTWARE
    ds.DistanceSourceToDetector = 700
    ds.DistanceSourceToPatient = 660
    ds.ExposureTime = 1200
    ds.XRayTubeCurrent = 100
    ds.Exposure = 120
    ds.FilterMaterial = "RHODIUM"
    ds.ImagerPixelSpacing = [f"{info.spacing_mm:.6g}", f"{info.spacing_mm:.6g}"]
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.BodyPartThickness = f"{info.body_part_thickness_mm:.0f}"
    ds.CompressionForce = f"{info.compression_force_n:.0f}"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = "DIRECT"
    ds.ViewPosition = info.view
    ds.PositionerPrimaryAngle = 0 if info.view == "CC" else (45 if info.laterality == "R" else -45)
    ds.EstimatedRadiographicMagnificationFactor = f"{700 / 660:.4f}"
    ds.AcquisitionContextSequence = Sequence()
    ds.StudyInstanceUID = info.study_uid
    ds.SeriesInstanceUID = info.series_uid
    ds.StudyID = info.study_id
    ds.SeriesNumber = info.series_number
    ds.InstanceNumber = info.instance_number
    ds.PatientOrientation = PATIENT_ORIENTATION[(info.laterality, info.view)]
    ds.ImageLaterality = info.laterality
    ds.ImageComments = info.comments
    if info.derivation:
        ds.DerivationDescription = info.derivation
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter = 2047
    ds.WindowWidth = 4096
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "SCT", "Breast")])
    view_item = _code(*VIEW_CODES[info.view][:1], "SCT", VIEW_CODES[info.view][1])
    view_item.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view_item])
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def save(ds: Dataset, path) -> None:
    """Write ``ds`` as a Part 10 file, atomically and durably (:func:`common.durable.atomic_path`)."""
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _fix_dates(ds: Dataset, date: str, time: str) -> None:
    """Replace every date/time highdicom stamped with 'now' by the run's fixed ones."""
    for elem in ds.iterall():
        if elem.VR == "DA" and elem.value:
            elem.value = date
        elif elem.VR == "TM" and elem.value:
            elem.value = time
        elif elem.VR == "DT" and elem.value:
            elem.value = date + time


def _as_dataset(obj) -> Dataset:
    ds = Dataset()
    ds.update(obj)
    ds.file_meta = obj.file_meta
    return ds


def gsps_dataset(image: Dataset, rois: list[tuple[str, str, RoiShape]], series_uid: str,
                 sop_uid: str, instance_number: int, manufacturer: str, date: str, time: str,
                 series_number: int = 100) -> Dataset:
    """A Grayscale Softcopy Presentation State with one graphic object per ROI, PIXEL units,
    on a layer "ROI". ``rois``: (tracking id, tracking uid, shape), in ROI-id order."""
    import highdicom as hd

    layer = hd.pr.GraphicLayer(layer_name="ROI", order=1, description="Regions of interest")
    objects = [
        hd.pr.GraphicObject(graphic_type=shape.graphic_type,
                            graphic_data=np.asarray(shape.points, dtype=np.float64),
                            units="PIXEL", tracking_id=tid, tracking_uid=tuid)
        for tid, tuid, shape in rois]
    annotation = hd.pr.GraphicAnnotation(referenced_images=[image], graphic_layer=layer,
                                         graphic_objects=objects)
    pr = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[image], series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=instance_number, manufacturer=manufacturer,
        manufacturer_model_name=MODEL_NAME, software_versions=SOFTWARE,
        device_serial_number="SYNTH0000", content_label="ROIS",
        content_description="Radiologist-style ROIs (synthetic)",
        graphic_annotations=[annotation], graphic_layers=[layer],
        institution_name="SYNTHETIC", content_creator_name="SYNTH^READER")
    # General Series Laterality is required for a paired organ; the caller keeps one
    # presentation-state series per breast so the series-level value is consistent
    pr.Laterality = image.ImageLaterality
    _fix_dates(pr, date, time)
    return pr


def seg_dataset(image: Dataset, rois: list[tuple[str, str, RoiShape]], series_uid: str,
                sop_uid: str, instance_number: int, manufacturer: str, date: str, time: str,
                series_number: int = 200) -> Dataset:
    """A binary SEG with one segment per ROI (the filled outline), segment number = ROI id."""
    import highdicom as hd

    shape = (int(image.Rows), int(image.Columns))
    masks = np.stack([roi.mask(shape) for _, _, roi in rois], axis=-1)[None]
    category = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")
    prop = hd.sr.CodedConcept("129769006", "SCT", "Calcification cluster")
    descriptions = [
        hd.seg.SegmentDescription(segment_number=i + 1, segment_label=f"ROI {i + 1}",
                                  segmented_property_category=category, segmented_property_type=prop,
                                  algorithm_type="MANUAL", tracking_id=tid, tracking_uid=tuid)
        for i, (tid, tuid, _) in enumerate(rois)]
    spacing = [float(v) for v in image.ImagerPixelSpacing]
    measures = hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=1.0)
    seg = hd.seg.Segmentation(
        source_images=[image], pixel_array=masks, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=instance_number, manufacturer=manufacturer,
        manufacturer_model_name=MODEL_NAME, software_versions=SOFTWARE,
        device_serial_number="SYNTH0000", pixel_measures=measures, omit_empty_frames=False,
        content_label="ROIS", content_description="Radiologist-style ROIs (synthetic)",
        content_creator_name="SYNTH^READER")
    seg.PatientOrientation = image.PatientOrientation
    _fix_dates(seg, date, time)
    return seg


def study_date(seed: int, case_index: int) -> tuple[str, str]:
    """A reproducible (date, time) for a case: 2020-01-01 plus a few days per case."""
    day = _dt.date(2020, 1, 1) + _dt.timedelta(days=(case_index * 3 + seed % 97) % 3650)
    return day.strftime("%Y%m%d"), f"{9 + case_index % 8:02d}{(case_index * 7) % 60:02d}00"
