"""What a sender's header may hold that the writers cannot take, made safe before they see it.

The result objects copy the patient and study attributes of the source images (so a PACS files
them with the study) and highdicom parses some of them (dates, times, sex, the character set).
A value that is not valid DICOM must never cost a study its answer, so
:func:`clean_source` gives the writers a copy of a source header where:

- the text is decoded with the source's Specific Character Set and the copy declares one the
  writers can encode: the source's when highdicom and pydicom both write it, else ISO_IR 192
  (UTF-8, which carries every name), e.g. for ISO 2022 code extensions (``\\ISO 2022 IR 87``,
  common in Japan) and for a term the standard does not define (text then read as ASCII /
  Latin-1, with a warning);
- control characters in text values (binary bytes in an LO) are removed;
- a date, time or date-time that does not parse, and a Patient's Sex other than M, F or O,
  become empty (Type 2: present, empty), with a warning;
- an attribute pydicom cannot convert at all (a value of the wrong VR) is left out, with a warning.

Warnings name the attribute and the image (by SOP Instance UID), never the offending value: it
may be a patient's. :func:`minimal_source` is the last resort of the node
(:mod:`dicom_node.job`): only what identifies the image, the study and the patient.
"""
from __future__ import annotations

import copy
import math
import re
import struct
import unicodedata
import warnings as python_warnings

from highdicom.enum import SpecificCharacterSetValues
from pydicom import valuerep
from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement
from pydicom.datadict import dictionary_VR, dictionary_description
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

UTF8 = "ISO_IR 192"
# single values highdicom writes and pydicom encodes (code extensions need several values)
_WRITABLE = {v.value for v in SpecificCharacterSetValues if not v.value.startswith("ISO 2022")}
_DEFAULT_REPERTOIRE = {"", "ISO_IR 6", "ISO 2022 IR 6"}
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"}
_MULTILINE_VRS = {"LT", "ST", "UT"}  # may hold CR, LF, FF and TAB
_PARSERS = {"DA": valuerep.DA, "TM": valuerep.TM, "DT": valuerep.DT}
_SEXES = {"", "M", "F", "O"}
# What minimal_source keeps: identity of the image, the study and the patient.
MINIMAL_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                    "Rows", "Columns", "PatientName", "PatientID", "PatientSex", "StudyID", "AccessionNumber")
_MINIMAL_EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _name(tag) -> str:
    try:
        return dictionary_description(tag)
    except KeyError:
        return f"attribute {Tag(tag)}"


def _charset_values(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet")
    if value is None:
        return []
    values = [value] if isinstance(value, (str, bytes)) else list(value)
    return [(v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)).strip() for v in values]


def _known(term: str) -> bool:
    return term in _DEFAULT_REPERTOIRE or term in python_encoding


def _clean_text(text: str, vr: str) -> str:
    keep = "\r\n\t\f" if vr in _MULTILINE_VRS else ""
    return "".join(ch for ch in text if ch in keep or unicodedata.category(ch) != "Cc")


def _clean_value(value, vr: str):
    """(cleaned value, changed)"""
    if isinstance(value, bytes):  # raw text pydicom could not decode: keep what is printable ASCII
        value = value.decode("latin-1")
    if isinstance(value, (str, valuerep.PersonName)):
        text = str(value)
        cleaned = _clean_text(text, vr)
        return cleaned, cleaned != text
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        items = [_clean_value(v, vr) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False


def _date_ok(vr: str, value) -> bool:
    values = value if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(
        value, str) else [value]
    try:
        for v in values:
            text = str(v).strip()
            if text and _PARSERS[vr](text) is None:
                return False
    except (ValueError, TypeError, OverflowError):
        return False
    return True


_INT_RANGES = {"US": (0, 2 ** 16 - 1), "SS": (-(2 ** 15), 2 ** 15 - 1), "UL": (0, 2 ** 32 - 1),
               "SL": (-(2 ** 31), 2 ** 31 - 1), "IS": (-(2 ** 31), 2 ** 31 - 1)}
_BINARY = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _dictionary_vr(tag) -> str | None:
    try:
        vr = dictionary_VR(tag)
    except KeyError:  # private or unknown: nothing to check against
        return None
    return None if " or " in vr else vr


def _coerce(value, vr_from: str, vr_to: str):
    """``value`` (read as ``vr_from``) as a value of ``vr_to``; raises when it is none."""
    if isinstance(value, bytes):
        if vr_to in _BINARY and vr_from in ("OB", "OW", "UN"):
            size = struct.calcsize(_BINARY[vr_to])
            if not value or len(value) % size:
                raise ValueError("length")
            items = [v[0] for v in struct.iter_unpack(_BINARY[vr_to], value)]
            return items if len(items) > 1 else items[0]
        value = value.decode("latin-1")
    items = list(value) if isinstance(value, (list, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, str)) else [value]
    if isinstance(value, str):
        items = value.split("\\")
    if vr_to in _INT_RANGES:
        numbers = [float(str(v).strip()) for v in items]
        low, high = _INT_RANGES[vr_to]
        if not all(math.isfinite(n) and n.is_integer() and low <= n <= high for n in numbers):
            raise ValueError("range")
        out = [int(n) for n in numbers]
        return out if len(out) > 1 else out[0]
    if vr_to in ("FL", "FD", "DS"):
        out = [float(str(v).strip()) for v in items]
        return out if len(out) > 1 else out[0]
    if vr_to == "UI":
        text = str(value).strip().rstrip("\x00")
        if len(text) > 64 or not _UID.match(text):
            raise ValueError("not a UID")
        return text
    if vr_to in TEXT_VRS:
        out = [str(v) for v in items]
        return out if len(out) > 1 else out[0]
    raise ValueError(f"no conversion to {vr_to}")


def _copy_items(source: Dataset, target: Dataset, where: str, notes: list[str], top: bool) -> None:
    for tag in list(source.keys()):
        if tag == 0x7FE00010 or Tag(tag).group == 0x0002:  # pixels are not needed; no file meta here
            continue
        if tag == 0x00080005:  # the character set is decided by the caller
            continue
        try:
            with python_warnings.catch_warnings():
                python_warnings.simplefilter("ignore")  # undecodable text: replaced, and noted below
                element = _clean_element(source, tag, where, notes, top)
        except Exception:  # noqa: BLE001 - a value of the wrong VR, a length pydicom cannot split, ...
            notes.append(f"{_name(tag)} of {where} cannot be read: left out of the results")
            continue
        if element is not None:
            target.add(element)


def _clean_element(source: Dataset, tag, where: str, notes: list[str], top: bool) -> DataElement | None:
    """The cleaned copy of one element, or None to leave it out (the note says why)."""
    element = copy.deepcopy(source[tag])
    vr, value = element.VR, element.value
    expected = _dictionary_vr(tag)
    if expected is not None and vr != expected and not {vr, expected} <= {"OB", "OW", "UN"}:
        try:  # a value sent with another VR than the dictionary's (wrong VR)
            element = DataElement(tag, expected, _coerce(value, vr, expected))
            vr, value = element.VR, element.value
        except Exception:  # noqa: BLE001 - no sensible conversion
            notes.append(f"{_name(tag)} of {where} has VR {vr}, not {expected}: left out of the results")
            return None
    if vr == "SQ":
        items = []
        for item in value or []:
            clean_item = Dataset()
            _copy_items(item, clean_item, where, notes, top=False)
            items.append(clean_item)
        element.value = DicomSequence(items)
        return element
    if vr not in TEXT_VRS or value is None:
        return element
    if vr in _PARSERS and not _date_ok(vr, value):
        notes.append(f"{_name(tag)} of {where} is not a valid DICOM {vr}: left empty in the results")
        element.value = ""
    elif vr in ("DS", "IS") and not _number_ok(vr, value):
        notes.append(f"{_name(tag)} of {where} is not a valid DICOM {vr}: left empty in the results")
        element.value = ""
    elif top and tag == 0x00100040 and str(value).strip().upper() not in _SEXES:
        notes.append(f"{_name(tag)} of {where} is not M, F or O: left empty in the results")
        element.value = ""
    else:
        cleaned, changed = _clean_value(value, vr)
        if changed:
            notes.append(f"{_name(tag)} of {where} holds control characters: removed in the results")
        if changed or vr == "PN":  # a PN keeps its source bytes otherwise (its old encoding)
            element.value = cleaned
    return element


def _number_ok(vr: str, value) -> bool:
    try:
        _coerce(value, vr, "IS" if vr == "IS" else "FD")
        return True
    except Exception:  # noqa: BLE001
        return False


def _where(ds: Dataset) -> str:
    try:
        uid = " ".join(str(ds.get("SOPInstanceUID", "") or "").split())[:64]
    except Exception:  # noqa: BLE001
        uid = ""
    return f"image {uid}" if uid else "an image without SOP Instance UID"


def clean_source(source: Dataset) -> tuple[Dataset, list[str]]:
    """A copy of a source header the writers can always take, and one warning per change
    (see the module docstring). The pixel data is not copied (the writers need none)."""
    notes: list[str] = []
    where = _where(source)
    try:
        terms = _charset_values(source)
    except Exception:  # noqa: BLE001
        terms = ["?"]
    unknown = [t for t in terms if not _known(t)]
    target = Dataset()
    if unknown:
        shown = "/".join("".join(ch if ch.isprintable() else "?" for ch in t)[:16] for t in terms)
        notes.append(f"Specific Character Set '{shown}' of {where} is not a defined term: its text is read as "
                     f"ASCII/Latin-1 and the results are written in {UTF8} (UTF-8)")
    if terms and not all(t in _DEFAULT_REPERTOIRE for t in terms):
        target.SpecificCharacterSet = terms[0] if len(terms) == 1 and terms[0] in _WRITABLE else UTF8
    _copy_items(source, target, where, notes, top=True)
    meta = getattr(source, "file_meta", None)
    if meta is not None:
        target.file_meta = meta
    return target, notes


def minimal_source(source: Dataset) -> Dataset:
    """Only what identifies the image, the study and the patient (:data:`MINIMAL_KEYWORDS`),
    cleaned as :func:`clean_source` does: the header a failure report can always be built on."""
    cleaned, _ = clean_source(source)
    out = Dataset()
    if "SpecificCharacterSet" in cleaned:
        out.SpecificCharacterSet = cleaned.SpecificCharacterSet
    for keyword in MINIMAL_KEYWORDS:
        if keyword in cleaned:
            out[keyword] = cleaned[keyword]
    for keyword in _MINIMAL_EMPTY:  # Type 2 attributes the writers copy: present, empty
        if keyword not in out:
            setattr(out, keyword, "")
    return out
