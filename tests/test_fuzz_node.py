"""A standing fuzz suite: mutated MG, GSPS and SEG instances through the real node.

Each study is three small simulated instances (a 256 x 256 MG with a few bright dots, a GSPS
and a SEG outlining them), built from its own seed. A seeded mutator applies 1-5 mutations to
randomly chosen instances of the study: element deletion (top level or inside a sequence),
a wrong VR, garbage text (control characters, binary bytes, 5000 characters, backslashes),
extreme numbers (0, -1, 65535, 1e9, 1e300, NaN, inf), a Specific Character Set from the
standard's list (single-byte, UTF-8, GB18030, ISO 2022 code extensions with a name in that
script) or outside it, and truncated values (UIDs and text cut short, binary values cut to an
odd length). One in ten studies is left intact.

All studies go, the file's bytes as they are (pynetdicom, one association a study), to one
running ``calcnode serve`` with the real analysis (the shipped bundle and CNN; tiny images keep
it fast) and a DCMTK storescp as destination. For every study:

- every instance gets success or a documented refusal (0xC000 cannot understand: no valid
  Study/SOP Instance UID, unreadable; 0xA900: the data set's SOP class is not the request's);
- every study with an MG instance taken gets exactly one answer at the destination: one TID
  1500 SR (the full results or a failure report), and a study without one gets none;
- the node's log holds no traceback and no patient name or ID.

``CALCNODE_FUZZ_N`` studies (default 150, ~400 mutations), from ``CALCNODE_FUZZ_SEED`` (default
20261204); a failure prints each failing study's seed and its mutations: rerun one with
``CALCNODE_FUZZ_SEED=<seed> CALCNODE_FUZZ_N=1``.
"""
from __future__ import annotations

import copy
import math
import os
import random
import struct
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import roi_factory as rf
from conftest import free_port
from dicom_factory import SECRET_PATIENT_ID, SECRET_PATIENT_NAME, mg_dataset
from node_helpers import node_env, node_sections, start_storescp, state_db, wait_until, write_config

__all__ = ["node_env", "start_storescp"]  # fixtures used below

pytestmark = pytest.mark.network

N_STUDIES = int(os.environ.get("CALCNODE_FUZZ_N", "150"))
BASE_SEED = int(os.environ.get("CALCNODE_FUZZ_SEED", "20261204"))
SIZE = 256
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
ACCEPTED = {0x0000: "success", 0xC000: "cannot understand", 0xA900: "data set does not match SOP class"}
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI", "UT", "UC"}
NUMBER_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "DS", "IS"}
STANDARD_CHARSETS = [
    "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144", "ISO_IR 127", "ISO_IR 126",
    "ISO_IR 138", "ISO_IR 148", "ISO_IR 13", "ISO_IR 166", "ISO_IR 192", "GB18030", "GBK", "ISO_IR 6",
    ["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87", "ISO 2022 IR 159"], ["", "ISO 2022 IR 149"],
    ["", "ISO 2022 IR 58"], ["ISO 2022 IR 13", "ISO 2022 IR 87"], ["ISO 2022 IR 100", "ISO 2022 IR 126"],
]
OTHER_CHARSETS = ["ISO_IR 999", "UTF-8", "latin1", "ISO 2022 IR 999", ["ISO_IR 192", "ISO_IR 100"], "\\", "X" * 20]
NAMES = ["Yamada^Tarou=山田^太郎=やまだ^たろう", "Иванов^Иван", "Müller^Jörg", "홍^길동=洪^吉洞", "王^小明",
         "Ξενοφών^Αλέξης", "שרון^אריאל", "ผู้ป่วย^ทดสอบ"]


# --------------------------------------------------------------------------- the simulated study

def build_study(rng: random.Random) -> dict[str, Dataset]:
    """MG + GSPS + SEG of one study (the GSPS and SEG outline the MG's bright dots)."""
    study_uid = generate_uid()
    nprng = np.random.default_rng(rng.randrange(2 ** 32))
    pixels = nprng.normal(1500, 40, (SIZE, SIZE)).clip(0, 4095).astype(np.uint16)
    dots = [(rng.randrange(90, 160), rng.randrange(90, 160)) for _ in range(rng.randint(2, 6))]
    for r, c in dots:
        pixels[r - 1:r + 2, c - 1:c + 2] = 3500
    mg = mg_dataset(pixels=pixels, study_uid=study_uid, seed=rng.randrange(1000))
    uid = mg.SOPInstanceUID
    square = [(80, 80), (170, 80), (170, 170), (80, 170), (80, 80)]
    objects = [rf.graphic_object("POLYLINE", square), rf.graphic_object("CIRCLE", [(125, 125), (150, 125)])]
    gsps = rf.make_gsps([rf.annotation(objects, images=[uid])], series_images=[uid])
    mask = np.zeros((SIZE, SIZE), bool)
    mask[80:170, 80:170] = True
    seg = rf.make_seg([(1, uid, mask)], labels={1: "cluster"})
    for ds in (gsps, seg):
        ds.StudyInstanceUID = study_uid
        ds.PatientName, ds.PatientID = SECRET_PATIENT_NAME, SECRET_PATIENT_ID
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", 2, 1
    return {"MG": mg, "GSPS": gsps, "SEG": seg}


# --------------------------------------------------------------------------- the mutator

def _walk(ds: Dataset, parent_path=()):
    """(dataset holding it, tag, element) of every element, nested ones included."""
    for element in list(ds):
        yield ds, element.tag, element
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk(item)


def _elements(ds: Dataset, rng: random.Random, predicate, nested: bool):
    found = [(owner, tag, el) for owner, tag, el in _walk(ds) if predicate(el) and (nested or owner is ds)]
    return found[rng.randrange(len(found))] if found else None


def _garbage(rng: random.Random) -> str | bytes:
    return rng.choice([
        bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))),
        "\x00\x01\x1b$B\x07" + "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randint(1, 20))),
        "A" * 5000,
        "\\".join("x" * rng.randint(0, 5) for _ in range(rng.randint(2, 30))),
        "".join(chr(rng.randrange(0x80, 0x10FFFF)) for _ in range(rng.randint(1, 12))).encode("utf-8", "replace"),
        "",
    ])


def _extreme(vr: str, rng: random.Random):
    if vr in ("US", "UL"):
        return rng.choice([0, 1, 65535 if vr == "US" else 2 ** 32 - 1])
    if vr in ("SS", "SL"):
        return rng.choice([-1, 0, -(2 ** 15) if vr == "SS" else -(2 ** 31)])
    if vr in ("FL", "FD"):
        return rng.choice([math.nan, math.inf, -math.inf, 1e9, -1e9, 1e38, 0.0])
    if vr == "DS":
        return rng.choice(["1e300", "-1e9", "NaN", "inf", "0", "-0.0", "1e-300"])
    return rng.choice(["2147483647", "-2147483648", "0", "-1", "99999999999"])


_PACK = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}


def put_raw(owner: Dataset, tag, vr: str, raw: bytes, *, pad: bool = True) -> None:
    """Store ``raw`` as the element's bytes, as a sender would (pydicom writes them unchanged)."""
    if pad and len(raw) % 2:
        raw += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    owner[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)


def _encode(vr: str, values) -> bytes:
    if vr in _PACK:
        return b"".join(struct.pack(_PACK[vr], v) for v in values)
    return "\\".join(str(v) for v in values).encode("latin-1", "replace")


def mutate(ds: Dataset, rng: random.Random) -> str:
    """Apply one random mutation to ``ds`` in place; returns what it did (for the failure report)."""
    kind = rng.choice(["delete", "delete_nested", "wrong_vr", "garbage_text", "extreme_number",
                       "extreme_number", "charset", "truncate"])
    if kind in ("delete", "delete_nested"):
        found = _elements(ds, rng, lambda el: True, nested=kind == "delete_nested")
        if found is None:
            return "nothing to delete"
        owner, tag, el = found
        del owner[tag]
        return f"{kind} {el.keyword or tag}"
    if kind == "wrong_vr":
        found = _elements(ds, rng, lambda el: el.VR != "SQ" and el.tag != 0x7FE00010, nested=rng.random() < 0.5)
        if found is None:
            return "no element for a wrong VR"
        owner, tag, el = found
        vr = rng.choice(["OB", "UN", "US", "FD", "LO", "UI", "DA"])
        raw = {"OB": bytes(rng.randrange(256) for _ in range(rng.randint(0, 9))), "UN": b"\xff\xfe\xfd",
               "US": struct.pack("<H", rng.randrange(65536)), "FD": struct.pack("<d", rng.uniform(-1e9, 1e9)),
               "LO": b"not a number", "UI": b"1.2.3", "DA": b"NOTADATE"}[vr]
        put_raw(owner, tag, vr, raw)
        return f"wrong VR {vr} for {el.keyword or tag}"
    if kind == "garbage_text":
        found = _elements(ds, rng, lambda el: el.VR in TEXT_VRS, nested=rng.random() < 0.4)
        if found is None:
            return "no text element"
        owner, tag, el = found
        value = _garbage(rng)
        put_raw(owner, tag, el.VR, value if isinstance(value, bytes) else value.encode("utf-8"))
        return f"garbage text in {el.keyword or tag} ({el.VR})"
    if kind == "extreme_number":
        found = _elements(ds, rng, lambda el: el.VR in NUMBER_VRS and el.value is not None and el.value != "",
                          nested=rng.random() < 0.6)
        if found is None:
            return "no number element"
        owner, tag, el = found
        values = list(el.value) if el.VM > 1 else [el.value]
        values = [_extreme(el.VR, rng) if rng.random() < 0.7 else v for v in values]
        put_raw(owner, tag, el.VR, _encode(el.VR, values))
        return f"extreme numbers in {el.keyword or tag} ({el.VR})"
    if kind == "charset":
        charset = rng.choice(STANDARD_CHARSETS + OTHER_CHARSETS)
        ds.SpecificCharacterSet = charset
        if rng.random() < 0.7:
            ds.PatientName = rng.choice(NAMES)
        return f"Specific Character Set {charset!r}, name {str(ds.get('PatientName', ''))!r}"
    found = _elements(ds, rng, lambda el: el.VR in TEXT_VRS | {"OB", "OW", "UN", "FL", "FD", "US", "UL"}
                      and el.value not in (None, "", b""), nested=rng.random() < 0.5)
    if found is None:
        return "nothing to truncate"
    owner, tag, el = found
    if isinstance(el.value, bytes):
        raw = el.value
    elif el.VR in _PACK:
        raw = _encode(el.VR, list(el.value) if el.VM > 1 else [el.value])
    else:
        raw = _encode(el.VR, list(el.value) if el.VM > 1 else [el.value])
    cut = rng.randrange(len(raw))
    put_raw(owner, tag, el.VR, raw[:cut], pad=el.VR not in ("OB", "OW", "UN") or rng.random() < 0.5)
    return f"truncated {el.keyword or tag} ({el.VR}) to {cut} bytes"


def write_raw(ds: Dataset, path: Path) -> None:
    """Write as it is: no validation, the file meta (SOP class and instance of the request) kept."""
    ds.preamble = b"\x00" * 128
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = pydicom_config.settings.writing_validation_mode
        pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
        try:
            pydicom.dcmwrite(path, ds, enforce_file_format=False)
        finally:
            pydicom_config.settings.writing_validation_mode = old


@dataclass
class FuzzStudy:
    seed: int
    files: dict[str, Path]
    mutations: list[str] = field(default_factory=list)
    statuses: dict[str, int | str] = field(default_factory=dict)

    def describe(self) -> str:
        return (f"seed {self.seed} (CALCNODE_FUZZ_SEED={self.seed} CALCNODE_FUZZ_N=1): mutations {self.mutations}; "
                f"statuses {({k: hex(v) if isinstance(v, int) else v for k, v in self.statuses.items()})}")


def fuzz_study(seed: int, folder: Path) -> FuzzStudy:
    """The study of ``seed``, mutated and written under ``folder``."""
    rng = random.Random(seed)
    instances = build_study(rng)
    study = FuzzStudy(seed=seed, files={})
    count = 0 if rng.random() < 0.1 else rng.randint(1, 5)
    for _ in range(count):
        kind = rng.choice(list(instances))
        before = copy.deepcopy(instances[kind])  # a mutation pydicom cannot write at all is dropped
        description = mutate(instances[kind], rng)
        try:
            write_raw(instances[kind], folder / "probe.dcm")
            study.mutations.append(f"{kind}: {description}")
        except Exception:  # noqa: BLE001 - not writable as bytes: not a mutation a sender could send
            instances[kind] = before
    for kind, ds in instances.items():
        study.files[kind] = folder / f"{seed}-{kind}.dcm"
        write_raw(ds, study.files[kind])
    return study


def study_uid_of(path: Path) -> str | None:
    """The Study Instance UID the node files an instance under (as its SCP reads it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        return str(ds.get("StudyInstanceUID", "")).strip().rstrip("\x00") or None
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- sending

def send_study(port: int, study: FuzzStudy) -> None:
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import (
        DigitalMammographyXRayImageStorageForPresentation as MG, GrayscaleSoftcopyPresentationStateStorage as PR,
        SegmentationStorage as SEG,
    )

    ae = AE(ae_title="FUZZSCU")
    for sop_class in (MG, PR, SEG):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title="CALCNODE")
    if not assoc.is_established:
        study.statuses = {kind: "association not established" for kind in study.files}
        return
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are
    try:
        for kind, path in study.files.items():
            try:
                status = assoc.send_c_store(path)
                study.statuses[kind] = int(status.Status) if "Status" in status else "no response"
            except Exception as exc:  # noqa: BLE001 - reported as a failure of this study
                study.statuses[kind] = f"{type(exc).__name__}: {exc}"
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        if assoc.is_established:
            assoc.release()


# --------------------------------------------------------------------------- the test

def test_fuzzed_studies_each_get_one_answer(node_env, start_node, start_storescp, tmp_path):
    started = time.monotonic()
    folder = tmp_path / "studies"
    folder.mkdir()
    studies = [fuzz_study(BASE_SEED + k, folder) for k in range(N_STUDIES)]
    n_mutations = sum(len(s.mutations) for s in studies)

    dest = start_storescp()
    http_port = free_port()
    config = write_config(tmp_path / "node.toml", destinations=[dest.destination("pacs")],
                          **node_sections(http_port=http_port, analysis={"engine": ""},
                                          assembly={"stable_seconds": 2.0}))
    node = start_node(state_dir=tmp_path / "node", config=config)
    for study in studies:
        send_study(node.port, study)
    failures = [f"{s.describe()}: a status outside {sorted(hex(k) for k in ACCEPTED)}" for s in studies
                if any(not isinstance(v, int) or v not in ACCEPTED for v in s.statuses.values())]

    expected: dict[str, list[FuzzStudy]] = {}  # study UID -> the fuzz studies whose MG was taken
    for study in studies:
        if study.statuses.get("MG") == 0x0000:
            uid = study_uid_of(study.files["MG"])
            expected.setdefault(uid, []).append(study)

    def answers() -> dict[str, int]:
        counts: dict[str, int] = {}
        for path in dest.received():
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - storescp still writing it
                continue
            if str(ds.SOPClassUID) == COMPREHENSIVE_SR:
                counts[str(ds.StudyInstanceUID)] = counts.get(str(ds.StudyInstanceUID), 0) + 1
        return counts

    def settled():
        db = state_db(node)
        try:
            jobs, sends = db.jobs(), db.sends()
        finally:
            db.close()
        done = (len({j.study_instance_uid for j in jobs}) >= len(expected)
                and all(j.state in ("done", "failed") for j in jobs)
                and all(s.state in ("sent", "dead") for s in sends))
        return done and set(answers()) >= set(expected)

    try:
        wait_until(settled, 120 + 2 * N_STUDIES, "every study analysed and its answer sent", interval=1.0)
    except AssertionError as exc:
        failures.append(str(exc).splitlines()[0])
    time.sleep(3)  # > stable_seconds: nothing more should come
    got = answers()
    for uid, owners in expected.items():
        if got.get(uid, 0) != 1:
            failures += [f"{s.describe()}: {got.get(uid, 0)} answers (TID 1500 SRs) for its study, expected 1"
                         for s in owners]
    strays = set(got) - set(expected)
    failures += [f"an answer for study {uid}, which had no MG image taken" for uid in sorted(strays)]
    log = node.log_text()
    if "Traceback" in log:
        failures.append("a traceback in the node's log:\n" + log[log.index("Traceback"):][:3000])
    if SECRET_PATIENT_NAME.split("^")[0] in log or SECRET_PATIENT_ID in log:
        failures.append("a patient name or ID in the node's log")
    seconds = time.monotonic() - started
    refused = sum(1 for s in studies for v in s.statuses.values() if isinstance(v, int) and v != 0)
    print(f"\nfuzz: {N_STUDIES} studies, {n_mutations} mutations, {refused} instances refused, "
          f"{len(expected)} studies answered, {seconds:.0f} s (seeds {BASE_SEED}..{BASE_SEED + N_STUDIES - 1})")
    assert not failures, "\n".join(failures[:40])
