"""Small, valid-enough DICOM objects built in tests (no patient data: synthetic names)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"

# Written into every test object so tests can check no log line ever carries it.
SECRET_PATIENT_NAME = "SECRETNAME^DONOTLOG"
SECRET_PATIENT_ID = "PIDDONOTLOG42"


def mg_dataset(rows: int = 64, columns: int = 48, *, bits_stored: int = 12,
               photometric: str = "MONOCHROME2", pixels: np.ndarray | None = None,
               imager_pixel_spacing: tuple[float, float] | None = (0.07, 0.07),
               pixel_spacing: tuple[float, float] | None = None,
               sop_class_uid: str = MG_FOR_PRESENTATION, study_uid: str | None = None,
               series_uid: str | None = None, sop_uid: str | None = None,
               laterality: str = "L", view: str = "CC", seed: int = 0) -> Dataset:
    """A Digital Mammography X-Ray Image (uncompressed, explicit VR little endian)."""
    if pixels is None:
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 2 ** bits_stored, size=(rows, columns), dtype=np.uint16)
    rows, columns = pixels.shape
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = SECRET_PATIENT_NAME
    ds.PatientID = SECRET_PATIENT_ID
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "MG"
    ds.Manufacturer = "calcnode tests"
    ds.PresentationIntentType = ("FOR PRESENTATION" if sop_class_uid == MG_FOR_PRESENTATION
                                 else "FOR PROCESSING")
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_pixel_spacing)
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels.astype("<u2")).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def rewrap_as_mg(ds: Dataset) -> Dataset:
    """Re-label a single-frame radiograph (e.g. NEMA's Secondary Capture mammogram) as an MG image,
    keeping its pixel data and transfer syntax untouched."""
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.file_meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    if "ImagerPixelSpacing" not in ds and "PixelSpacing" not in ds:
        ds.ImagerPixelSpacing = [0.05, 0.05]
    return ds
