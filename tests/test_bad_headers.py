"""Every study gets an answer: the real-world header and ROI cases of issue 23, one test each.

Each case runs the real analysis (the shipped bundle and CNN, tiny 256 x 256 images) and the
real writers through :func:`dicom_node.job.analyze_and_write`, the function a node worker
runs, and checks what a PACS would get: the full results (SEG, TID 1500 SR, CAD SR, GSPS)
with a warning in the SR where a header value was replaced, never nothing. The SOP Instance
UID case is refused at receive instead (a running node, a C-STORE of the file's bytes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import roi_factory as rf
from dicom_factory import SECRET_PATIENT_NAME, mg_dataset, write

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
# A square ROI around the four bright dots of tiny_mg: scored by the real analysis
GOOD_OUTLINE = [(80, 80), (150, 80), (150, 150), (80, 150), (80, 80)]


@pytest.fixture(scope="module")
def engines():
    from dicom_node.config import load_config
    from dicom_node.job import EngineBox

    box = EngineBox(load_config(None))
    box.get()
    return box


def tiny_mg(study_uid: str, **kwargs) -> pydicom.Dataset:
    """256 x 256 MG with four bright round dots (Gaussian, sigma 2 px) inside GOOD_OUTLINE: two or more
    calcifications the shipped CNN keeps (flat 3 x 3 squares are not calcification-shaped, and the
    CNN fine-tuned with real tissue rejects them)."""
    rng = np.random.default_rng(1)
    pixels = rng.normal(1500, 40, (256, 256))
    rows, cols = np.mgrid[:256, :256]
    for r, c in [(100, 100), (110, 120), (120, 105), (130, 130)]:
        pixels += 1000 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 2.0 ** 2))
    return mg_dataset(pixels=pixels.clip(0, 4095).astype(np.uint16), study_uid=study_uid, **kwargs)


def gsps_for(images: list[pydicom.Dataset], objects=None) -> pydicom.Dataset:
    uids = [str(ds.file_meta.MediaStorageSOPInstanceUID) for ds in images]
    objects = objects or [rf.graphic_object("POLYLINE", GOOD_OUTLINE)]
    gsps = rf.make_gsps([rf.annotation(objects, images=uids[:1])], series_images=uids)
    gsps.StudyInstanceUID = str(images[0].StudyInstanceUID)
    return gsps


def run(tmp_path: Path, engines, images: list[pydicom.Dataset], gsps: pydicom.Dataset | None = None, *,
        patch=None):
    """Write the study, analyse it as a node worker does; ``patch(path)`` may rewrite a file's bytes."""
    from dicom_node.job import analyze_and_write

    paths = []
    for k, ds in enumerate(images):
        path = write(ds, tmp_path / f"MG{k}.dcm")
        if patch is not None:
            patch(path)
        paths.append(path)
    rois = [rf.save(gsps, tmp_path / "PR.dcm")] if gsps is not None else []
    study_uid = str(images[0].StudyInstanceUID)
    return analyze_and_write(study_uid, paths, rois, tmp_path / "out", engines, write_gsps=True,
                             input_hash="0" * 16)


def sr_texts(outcome) -> list[str]:
    [sr] = [pydicom.dcmread(p) for p in outcome.paths
            if str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) == COMPREHENSIVE_SR]
    return [str(item.TextValue) for item in sr.ContentSequence if item.ValueType == "TEXT"]


def assert_full_results(outcome):
    assert outcome.failure is None, outcome.failure
    classes = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in outcome.paths]
    assert SEG in classes and COMPREHENSIVE_SR in classes, classes
    assert [row["status"] for row in outcome.rows] == ["ok"], outcome.rows


# ----------------------------------------------------------------------------- the six cases

def test_sop_instance_uid_absent_from_the_data_set_is_refused_at_receive(node, tmp_path):
    """File meta keeps the UID (the C-STORE request carries it); the data set lacks it: 0xC000,
    nothing stored. Before: 0x0000 and a job that failed without any report."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation as MG

    ds = mg_dataset(16, 16)
    del ds.SOPInstanceUID
    path = write(ds, tmp_path / "no-sop.dcm")
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MG, [pydicom.uid.ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="CALCNODE")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    assert status.Status == 0xC000, hex(status.Status)
    assert node.stored_files() == []
    assert any(e["event"].startswith("C-STORE refused") and "SOP Instance UID" in e.get("reason", "")
               for e in node.log_events())


def test_an_image_without_sop_instance_uid_is_named_and_the_others_analysed(tmp_path, engines):
    """Offline (``calcnode analyze``, batch): the image is left out, named, the other one scored."""
    study_uid = generate_uid()
    good, bad = tiny_mg(study_uid), tiny_mg(study_uid, laterality="R")
    del bad.SOPInstanceUID
    outcome = run(tmp_path, engines, [good, bad], gsps_for([good]))
    assert_full_results(outcome)
    texts = " ".join(sr_texts(outcome))
    assert "SOP Instance UID" in texts and bad.file_meta.MediaStorageSOPInstanceUID in texts


def test_study_date_not_a_date_and_binary_bytes_in_lo(tmp_path, engines):
    """Before: ``invalid literal for int() with base 10: 'NOTA'``, no report at all."""
    study_uid = generate_uid()
    image = tiny_mg(study_uid)
    image.StudyDescription = "XXXXXXXXXXXX"  # replaced by binary bytes in the file below
    image.StudyDate = "20260101"

    def patch(path):
        raw = path.read_bytes().replace(b"20260101", b"NOTADATE", 1)
        path.write_bytes(raw.replace(b"XXXXXXXXXXXX", b"\x00\x01\xff\xfe\x1b$B\x80\x9f\xc3(\x07"))

    outcome = run(tmp_path, engines, [image], gsps_for([image]), patch=patch)
    assert_full_results(outcome)
    assert any("Study Date" in t and "not a valid" in t for t in sr_texts(outcome))
    for p in outcome.paths:
        ds = pydicom.dcmread(p)
        assert ds.StudyDate == ""  # Type 2: present, empty
        assert "\x00" not in str(ds.get("StudyDescription", ""))


@pytest.mark.parametrize("charset", [["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87"]])
def test_japanese_iso_2022_character_set(tmp_path, engines, charset):
    """Valid DICOM, common in Japan. Before: ``'' is not a valid SpecificCharacterSetValues``."""
    study_uid = generate_uid()
    image = tiny_mg(study_uid)
    image.SpecificCharacterSet = charset
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    image.PatientName = name
    outcome = run(tmp_path, engines, [image], gsps_for([image]))
    assert_full_results(outcome)
    for p in outcome.paths:
        ds = pydicom.dcmread(p)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == name  # the names are carried, in UTF-8


def test_unknown_character_set(tmp_path, engines):
    """Before: ``'ISO_IR 999' is not a valid ...``, nothing sent."""
    study_uid = generate_uid()
    image = tiny_mg(study_uid)
    image.SpecificCharacterSet = "ISO_IR 999"
    outcome = run(tmp_path, engines, [image], gsps_for([image]))
    assert_full_results(outcome)
    assert any("Specific Character Set" in t and "ISO_IR 999" in t for t in sr_texts(outcome))
    for p in outcome.paths:
        ds = pydicom.dcmread(p)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == SECRET_PATIENT_NAME


@pytest.mark.parametrize("bad", [
    [(-50, -50), (-10, -50), (-10, -10), (-50, -10), (-50, -50)],   # wholly outside: skipped
    [(80, 80), (1e9, 80), (150, 150), (80, 80)],                    # reaching 1e9: clipped
    [(-1e9, -1e9), (1e9, -1e9), (1e9, 1e9), (-1e9, 1e9), (-1e9, -1e9)],  # around the whole image
])
def test_gsps_object_outside_the_image_beside_a_valid_roi(tmp_path, engines, bad):
    """Before: the whole study failed (``outline_px leaves the ... image``); the valid ROI got no score."""
    study_uid = generate_uid()
    image = tiny_mg(study_uid)
    gsps = gsps_for([image], [rf.graphic_object("POLYLINE", GOOD_OUTLINE), rf.graphic_object("POLYLINE", bad)])
    outcome = run(tmp_path, engines, [image], gsps)
    assert outcome.failure is None, outcome.failure
    rows = {row["roi_id"]: row for row in outcome.rows}
    assert rows["ann1-obj1"]["status"] == "ok" and rows["ann1-obj1"]["score"] is not None
    assert any("ann1-obj2" in t and "image" in t for t in sr_texts(outcome))


@pytest.mark.parametrize("case", ["garbage", "absent"])
def test_pixel_spacing_assumed_is_said_in_the_sr_and_the_log(tmp_path, engines, case, caplog):
    """Before: 0.07 mm assumed silently (no warning in the SR, no log line)."""
    study_uid = generate_uid()
    image = tiny_mg(study_uid, imager_pixel_spacing=None if case == "absent" else (1.0, 2.0))
    if case == "garbage":
        image.ImagerPixelSpacing = ["1.0", "2.000000"]  # same length as the garbage below

    def patch(path):
        path.write_bytes(path.read_bytes().replace(b"1.0\\2.000000", b"abc\\defghij "))

    with caplog.at_level("WARNING", logger="calcnode.worker"):
        outcome = run(tmp_path, engines, [image], gsps_for([image]), patch=patch if case == "garbage" else None)
    assert_full_results(outcome)
    warning = [t for t in sr_texts(outcome) if "pixel spacing" in t.lower() and "0.07 mm" in t]
    assert warning, sr_texts(outcome)
    if case == "garbage":
        assert "Imager Pixel Spacing" in warning[0] and "not" in warning[0]
    logged = [r for r in caplog.records if "0.07 mm" in r.getMessage() or "0.07 mm" in str(r.__dict__)]
    assert logged, [r.getMessage() for r in caplog.records]


# ----------------------------------------------------------------------------- the last line of defence

def test_a_writer_failure_still_sends_a_minimal_failure_sr(tmp_path, engines, monkeypatch, caplog):
    """Whatever makes the full results and the ordinary failure report fail, a minimal SR is written."""
    import dicom_node.job as job

    study_uid = generate_uid()
    image = tiny_mg(study_uid)
    real = job.write_study_results
    calls = []

    def failing(result, sources, out_dir, **kwargs):
        calls.append(result.failure)
        if len(calls) <= 2:  # the full results, then the ordinary failure report
            raise ValueError("a header value a writer cannot take: 19XX0101")
        return real(result, sources, out_dir, **kwargs)

    monkeypatch.setattr(job, "write_study_results", failing)
    with caplog.at_level("ERROR", logger="calcnode.worker"):
        outcome = run(tmp_path, engines, [image], gsps_for([image]))
    assert outcome.failure and outcome.paths, outcome
    assert len(calls) == 3
    texts = " ".join(sr_texts(outcome))
    assert "could not be written" in texts and "19XX0101" not in texts
    assert any("results could not be written" in r.getMessage() for r in caplog.records)
    assert not any("19XX0101" in str(r.__dict__) for r in caplog.records)
    [sr] = [pydicom.dcmread(p) for p in outcome.paths if str(pydicom.dcmread(p).SOPClassUID) == COMPREHENSIVE_SR]
    assert sr.StudyInstanceUID == study_uid and str(sr.PatientName) == SECRET_PATIENT_NAME


def test_skipped_image_named_by_sop_instance_uid_not_spool_path(tmp_path, engines):
    study_uid = generate_uid()
    good, bad = tiny_mg(study_uid), tiny_mg(study_uid, laterality="R")
    bad.NumberOfFrames = 2  # refused by the reader
    bad.SeriesNumber, bad.InstanceNumber = 7, 3
    outcome = run(tmp_path, engines, [good, bad], gsps_for([good]))
    texts = " ".join(sr_texts(outcome))
    assert f"image {bad.SOPInstanceUID} (series 7, instance 3)" in texts, texts
    assert str(tmp_path) not in texts and "MG1.dcm" not in texts
