"""Mammogram input: one DICOM MG image -> one :class:`MammogramImage`.

The analysis works on float32 pixels in [0, 1] with calcifications bright,
whatever the vendor's encoding: values are scaled by the stored bit depth
(12-bit: /4095) and inverted when the image is MONOCHROME1 (low values display bright,
which the MG IOD pairs with Presentation LUT Shape INVERSE).

Pixel spacing comes from Imager Pixel Spacing (the detector plane, where
Hologic states 0.07 mm), else Pixel Spacing, else a default the caller gives;
the source is recorded so a report can say which one was used.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

from .errors import InputError, UnusableImageError

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
MAMMOGRAPHY_SOP_CLASSES = {
    MG_FOR_PRESENTATION: "FOR PRESENTATION",
    MG_FOR_PROCESSING: "FOR PROCESSING",
}
# Breast tomosynthesis and breast projection (synthesised 2D) objects: out of scope.
TOMOSYNTHESIS_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
}

# Transfer syntaxes whose pixel data this node decodes (pydicom native, pylibjpeg,
# pyjpegls). 12-bit JPEG Extended (1.2.840.10008.1.2.4.51) and lossy JPEG baseline are
# deliberately not listed: no decoder installed here reads 12-bit lossy JPEG.
DECODABLE_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless (Process 14, SV1)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}

VIEW_CODES = {  # SNOMED CT codes of View Code Sequence (CID 4014) -> ViewPosition term
    "399162004": "CC", "R-10242": "CC",      # legacy SNOMED-RT codes for the two standard views
    "399368009": "MLO", "R-10226": "MLO",
    "399260004": "ML", "R-10224": "ML",
    "399352003": "LM", "R-10230": "LM",
    "399099002": "LMO",
    "399192008": "XCCL",
    "399101009": "XCCM",
    "399265009": "XCC",
    "399188001": "SIO",
    "441555000": "ISO",
    "399196006": "FB",                         # caudo-cranial, "from below"
    "399161006": "CV",
    "399011000": "AT",
}


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image's pixels are, in pixels and in millimetres.

    ``pixel_spacing_mm`` is (row spacing, column spacing): the physical distance
    in mm between the centres of adjacent rows and of adjacent columns.
    """

    sop_instance_uid: str
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float] | None
    spacing_source: str | None  # "ImagerPixelSpacing", "PixelSpacing", "default" or None

    @property
    def pixel_area_mm2(self) -> float | None:
        if self.pixel_spacing_mm is None:
            return None
        return float(self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1])

    def mm_to_px(self, length_mm: float) -> float:
        """A length in mm as a number of pixels (mean of the two spacings)."""
        if self.pixel_spacing_mm is None:
            raise ValueError(f"image {self.sop_instance_uid} has no pixel spacing")
        return float(length_mm / np.mean(self.pixel_spacing_mm))


@dataclass(frozen=True, eq=False)
class MammogramImage:
    """A mammogram ready for analysis.

    ``pixels``: float32, shape (rows, columns), values in [0, 1], calcifications
    bright. All lengths derived from it use ``geometry.pixel_spacing_mm`` (mm).
    """

    pixels: np.ndarray
    geometry: ImageGeometry
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    presentation_intent: str  # "FOR PRESENTATION" or "FOR PROCESSING"
    laterality: str | None  # "L", "R" or None when the header does not say
    view: str | None  # "CC", "MLO", ... or None
    view_modifiers: tuple[str, ...]
    bits_stored: int
    photometric_interpretation: str
    inverted: bool  # True when stored values were inverted to make calcifications bright
    manufacturer: str | None
    transfer_syntax_uid: str
    warnings: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.rows, self.geometry.columns

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        return self.geometry.pixel_spacing_mm


def _name(source) -> str | None:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return None


def _file_name(source) -> str | None:
    """A file by its name only: in the node's spool that is ``<SOP Instance UID>.dcm``."""
    if isinstance(source, (str, os.PathLike)):
        return f"file {Path(source).name}"
    return None


def _header_name(source) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(source, stop_before_pixels=True)
        uid = str(header.get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - not even the header: the file name will do
        return None
    return image_name(header, source) if uid else None


def image_name(ds: Dataset, source=None) -> str | None:
    """How messages name an image: ``image <SOP Instance UID> (series N, instance M)``; without
    a SOP Instance UID in the data set, the one of its file meta, else the file name."""
    def text(keyword, where=ds):
        try:
            return " ".join(str(where.get(keyword, "") or "").split())[:64]
        except Exception:  # noqa: BLE001 - a value pydicom cannot convert
            return ""

    uid = text("SOPInstanceUID")
    if not uid:
        meta_uid = text("MediaStorageSOPInstanceUID", getattr(ds, "file_meta", None) or Dataset())
        return f"image with no SOP Instance UID (file meta: {meta_uid})" if meta_uid else _file_name(source)
    numbers = [f"{what} {value}" for what, value in (("series", text("SeriesNumber")),
                                                     ("instance", text("InstanceNumber"))) if value]
    return f"image {uid}" + (f" ({', '.join(numbers)})" if numbers else "")


class _ShortReadDetector(io.RawIOBase):
    """A read-only file wrapper that notes when a read returns fewer bytes than asked.

    pydicom reads a truncated file without complaint (the last value is just
    short and the rest is missing); reading through this wrapper tells. A file
    cut exactly at an element boundary is indistinguishable from a complete one.
    """

    def __init__(self, raw):
        super().__init__()
        self._raw = raw
        self.short_read = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        # pydicom probes for the end of the data with read(8); an empty answer
        # there is the normal end of the file, anything else short is truncation.
        if size is not None and 0 <= len(data) < size and not (size == 8 and not data):
            self.short_read = True
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


def read_dataset(source: str | os.PathLike | Dataset, *, stop_before_pixels: bool = False,
                 error: type[InputError] = UnusableImageError) -> Dataset:
    """Read a Part 10 file (or pass a Dataset through), raising ``error`` if it is
    missing, not DICOM, corrupt or truncated."""
    if isinstance(source, Dataset):
        return source
    path = Path(source)
    try:
        with open(path, "rb") as raw, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated file warns; we raise instead
            detector = _ShortReadDetector(raw)
            ds = pydicom.dcmread(detector, stop_before_pixels=stop_before_pixels)
            # Parse every element now (pydicom defers some) so a corrupt file fails
            # here, not half-way through the analysis.
            for _ in ds.iterall():
                pass
    except FileNotFoundError:
        raise error("no such file", reason="not_found", source=str(path)) from None
    except IsADirectoryError:
        raise error("is a directory, not a DICOM file", reason="not_dicom", source=str(path)) from None
    except InvalidDicomError as exc:
        raise error(f"not a DICOM Part 10 file ({exc})", reason="not_dicom", source=str(path)) from None
    except Exception as exc:  # pydicom raises many types on bad bytes (e.g. BytesLengthException)
        raise error(f"cannot be parsed as DICOM, the file is probably truncated or corrupt "
                    f"({type(exc).__name__}: {exc})", reason="corrupt", source=str(path)) from None
    if detector.short_read:
        raise error("ends in the middle of a data element: the file is truncated (an interrupted "
                    "transfer or copy?)", reason="corrupt", source=str(path))
    return ds


def header_pixel_spacing(ds: Dataset, default_mm: float | None = None
                         ) -> tuple[tuple[float, float] | None, str | None]:
    """(row, column) spacing in mm and the attribute it came from: Imager Pixel Spacing, else
    Pixel Spacing, else ``default_mm`` ("default"), else (None, None)."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                return (row, col), keyword
    if default_mm is not None:
        return (float(default_mm), float(default_mm)), "default"
    return None, None


def spacing_problem(ds: Dataset) -> str:
    """Why :func:`header_pixel_spacing` found no spacing in ``ds``: one sentence, for warnings."""
    for keyword, name in (("ImagerPixelSpacing", "Imager Pixel Spacing"), ("PixelSpacing", "Pixel Spacing")):
        if keyword in ds:
            try:
                raw = ds[keyword].value
                text = "\\".join(map(str, raw)) if isinstance(raw, (list, tuple, MultiValue)) else str(raw)
            except Exception:  # noqa: BLE001 - a value pydicom cannot convert
                text = "?"
            text = "".join(ch if ch.isprintable() else "?" for ch in text.replace("\\", "/"))[:32]
            return f"{name} '{text}' is not two positive numbers"
    return "no Imager Pixel Spacing or Pixel Spacing in the header"


def read_geometry(source: str | os.PathLike | Dataset, *,
                  default_pixel_spacing_mm: float | None = None) -> ImageGeometry:
    """The size and pixel spacing of any single-frame image, without decoding pixels.

    Used to put ROIs in mm and to check that an ROI fits the image it references.
    Raises :class:`UnusableImageError` when the object has no Rows/Columns.
    """
    ds = read_dataset(source, stop_before_pixels=True)
    name = _name(source)
    if "Rows" not in ds or "Columns" not in ds:
        raise UnusableImageError(
            f"{sop_class_name(ds)} is not an image (no Rows/Columns)", reason="not_an_image", source=name)
    spacing, spacing_source = header_pixel_spacing(ds, default_pixel_spacing_mm)
    return ImageGeometry(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing_mm=spacing,
        spacing_source=spacing_source,
    )


def sop_class_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None:
        return "an object without SOP Class UID"
    uid = UID(str(uid))
    return f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)


def _view(ds: Dataset) -> str | None:
    seq = ds.get("ViewCodeSequence")
    if seq:
        code = str(seq[0].get("CodeValue", ""))
        if code in VIEW_CODES:
            return VIEW_CODES[code]
    position = ds.get("ViewPosition")
    return str(position) if position else None


def _view_modifiers(ds: Dataset) -> tuple[str, ...]:
    seq = ds.get("ViewCodeSequence")
    if not seq:
        return ()
    modifiers = seq[0].get("ViewModifierCodeSequence") or []
    return tuple(str(item.get("CodeMeaning", item.get("CodeValue", ""))) for item in modifiers)


def _laterality(ds: Dataset) -> str | None:
    for keyword in ("ImageLaterality", "Laterality", "FrameLaterality"):
        value = ds.get(keyword)
        if value in ("L", "R", "B"):
            return str(value)
    return None


def _check_sop_class(ds: Dataset, name: str | None) -> str:
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in TOMOSYNTHESIS_SOP_CLASSES:
        raise UnusableImageError(
            f"{TOMOSYNTHESIS_SOP_CLASSES[sop_class]}: breast tomosynthesis is out of scope; "
            "calcnode analyses 2D full-field digital mammograms only",
            reason="tomosynthesis", source=name)
    if sop_class not in MAMMOGRAPHY_SOP_CLASSES:
        modality = ds.get("Modality", "?")
        raise UnusableImageError(
            f"{sop_class_name(ds)}, modality {modality}, is not a Digital Mammography X-Ray Image "
            "(For Presentation or For Processing); calcnode analyses only those",
            reason="sop_class", source=name)
    return sop_class


def load_image(source: str | os.PathLike | Dataset, *,
               default_pixel_spacing_mm: float | None = None) -> MammogramImage:
    """Read a 2D digital mammogram for analysis.

    Parameters
    ----------
    source : path or Dataset
        A Digital Mammography X-Ray Image (For Presentation or For Processing).
    default_pixel_spacing_mm : float, optional
        Spacing (mm) to assume when the header states none; its use is recorded
        in ``warnings``. Without it such an image is refused.

    Raises
    ------
    UnusableImageError
        With ``reason`` one of ``not_found``, ``not_dicom``, ``corrupt``,
        ``sop_class``, ``tomosynthesis``, ``multi_frame``, ``no_pixel_data``,
        ``transfer_syntax``, ``decode``, ``pixel_format``, ``no_spacing``, ``no_uid`` (no SOP or
        Series Instance UID in the data set).
    """
    try:
        ds = read_dataset(source)
    except UnusableImageError as exc:  # named by its UIDs if its header reads, not by a (spool) path
        exc.source = _header_name(source) or _file_name(source)
        raise
    name = image_name(ds, source)
    sop_class = _check_sop_class(ds, name)
    for keyword, what in (("SOPInstanceUID", "SOP Instance UID"), ("SeriesInstanceUID", "Series Instance UID")):
        if not str(ds.get(keyword, "") or "").strip():
            raise UnusableImageError(f"its data set has no {what}, so no result can refer to it",
                                     reason="no_uid", source=name)

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnusableImageError(f"has {frames} frames; a 2D mammogram has one",
                                 reason="multi_frame", source=name)
    pixel_keywords = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(k in ds for k in pixel_keywords):
        raise UnusableImageError("has no Pixel Data", reason="no_pixel_data", source=name)
    if "PixelData" not in ds:
        raise UnusableImageError("has float pixel data, which a mammogram never has",
                                 reason="pixel_format", source=name)

    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    if ts not in DECODABLE_TRANSFER_SYNTAXES:
        raise UnusableImageError(
            f"pixel data in transfer syntax {UID(ts).name} ({ts}) cannot be decoded here; "
            f"ask the sender for one of: {', '.join(sorted(set(DECODABLE_TRANSFER_SYNTAXES.values())))}",
            reason="transfer_syntax", source=name)

    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnusableImageError(f"photometric interpretation {photometric or 'missing'}; "
                                 "a mammogram is MONOCHROME1 or MONOCHROME2",
                                 reason="pixel_format", source=name)
    bits_stored = int(ds.get("BitsStored", 0) or 0)
    if not 8 <= bits_stored <= 16:
        raise UnusableImageError(f"Bits Stored {bits_stored} is outside 8..16",
                                 reason="pixel_format", source=name)

    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise a variety of types; all mean the same here
        raise UnusableImageError(f"pixel data cannot be decoded ({type(exc).__name__}: {exc})",
                                 reason="decode", source=name) from None
    if stored.ndim != 2 or stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise UnusableImageError(f"decoded pixel array has shape {stored.shape}, expected "
                                 f"({ds.Rows}, {ds.Columns})", reason="decode", source=name)

    pixels = stored.astype(np.float32)
    if int(ds.get("PixelRepresentation", 0)) == 1:  # signed: move to 0 .. 2^bits - 1
        pixels += float(2 ** (bits_stored - 1))
    pixels /= float(2 ** bits_stored - 1)
    np.clip(pixels, 0.0, 1.0, out=pixels)
    # The DX/MG IODs pair MONOCHROME1 with Presentation LUT Shape INVERSE (both say the
    # same thing: low values display bright), so the photometric interpretation alone decides.
    inverted = photometric == "MONOCHROME1"
    if inverted:
        np.subtract(1.0, pixels, out=pixels)

    warnings: list[str] = []
    spacing, spacing_source = header_pixel_spacing(ds, default_pixel_spacing_mm)
    if spacing is None:
        raise UnusableImageError("states no Imager Pixel Spacing or Pixel Spacing and no default "
                                 "spacing is configured, so lengths in mm cannot be measured",
                                 reason="no_spacing", source=name)
    if spacing_source == "default":
        warnings.append(f"{spacing_problem(ds)}; pixel spacing assumed {spacing[0]} mm "
                        "(analysis.default_pixel_spacing_mm)")

    geometry = ImageGeometry(
        sop_instance_uid=str(ds.SOPInstanceUID),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing_mm=spacing,
        spacing_source=spacing_source,
    )
    intent = str(ds.get("PresentationIntentType", "") or MAMMOGRAPHY_SOP_CLASSES[sop_class])
    return MammogramImage(
        pixels=pixels,
        geometry=geometry,
        sop_class_uid=sop_class,
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        presentation_intent=intent,
        laterality=_laterality(ds),
        view=_view(ds),
        view_modifiers=_view_modifiers(ds),
        bits_stored=bits_stored,
        photometric_interpretation=photometric,
        inverted=inverted,
        manufacturer=str(ds.get("Manufacturer")) if ds.get("Manufacturer") else None,
        transfer_syntax_uid=ts,
        warnings=tuple(warnings),
    )
