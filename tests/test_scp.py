"""The Storage SCP against real DCMTK peers (echoscu, storescu)."""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from dicom_factory import CT_IMAGE, SECRET_PATIENT_ID, SECRET_PATIENT_NAME, mg_dataset, write
from conftest import need_tool
from node_helpers import write_config


def pixel_bytes(path: Path) -> bytes:
    return pydicom.dcmread(path)["PixelData"].value


def data_set_bytes(path: Path) -> bytes:
    """The file's bytes after the preamble and the file meta group."""
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return path.read_bytes()[132 + 12 + meta.FileMetaInformationGroupLength:]


def stored_by_sop(node) -> dict[str, Path]:
    return {p.stem: p for p in node.stored_files()}


def assert_spool_holds_exactly(node, sent: list[Path]) -> None:
    """Every sent file is in the spool with identical pixel data bytes, and nothing else is."""
    stored = stored_by_sop(node)
    expected = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in sent}
    assert set(stored) == set(expected)
    for sop, src in expected.items():
        assert pixel_bytes(stored[sop]) == pixel_bytes(src), f"pixel data differs for {sop}"
        # and the whole data set is stored as it was sent, byte for byte
        assert data_set_bytes(stored[sop]) == data_set_bytes(src), f"data set differs for {sop}"
        # the file meta states the transfer syntax the instance was sent in
        assert (pydicom.dcmread(stored[sop]).file_meta.TransferSyntaxUID
                == pydicom.dcmread(src).file_meta.TransferSyntaxUID)
    assert set(node.all_spool_files()) == set(stored.values()), "stray files left in the spool"


def test_echoscu(node):
    result = node.echo()
    assert result.returncode == 0, result.stderr
    assert any(e["event"] == "C-ECHO" for e in node.log_events())


def test_storescu_uncompressed_and_duplicate(node, tmp_path):
    study = pydicom.uid.generate_uid()
    files = [write(mg_dataset(80, 60, study_uid=study, seed=i), tmp_path / f"mg{i}.dcm")
             for i in range(3)]
    # and one over many P-DATA PDUs (2.2 MB; the largest PDU is 256 KB): put together from views
    big = write(mg_dataset(1200, 900, study_uid=study, seed=3), tmp_path / "mg3.dcm")
    result = node.storescu(*files, big)
    assert result.returncode == 0, result.stderr
    assert_spool_holds_exactly(node, [*files, big])
    assert all(p.parent.name == study for p in node.stored_files())
    before = {p: p.stat().st_mtime_ns for p in node.stored_files()}

    again = node.storescu(files[0])
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in node.stored_files()} == before
    assert sum(e["event"] == "C-STORE duplicate: already in spool" for e in node.log_events()) == 1


def _compress_jpegls(src: Path, dst: Path) -> Path:
    need_tool("/usr/bin/dcmcjpls")
    subprocess.run(["/usr/bin/dcmcjpls", str(src), str(dst)], check=True, capture_output=True)
    assert pydicom.dcmread(dst).file_meta.TransferSyntaxUID == JPEGLSLossless
    return dst


def _compress_j2k(src: Path, dst: Path) -> Path:
    ds = pydicom.dcmread(src)
    ds.compress(JPEG2000Lossless)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_storescu_compressed_jpegls_and_jpeg2000(node, tmp_path):
    plain = [write(mg_dataset(96, 64, seed=10 + i), tmp_path / f"plain{i}.dcm") for i in range(2)]
    jls = _compress_jpegls(plain[0], tmp_path / "jls.dcm")
    j2k = _compress_j2k(plain[1], tmp_path / "j2k.dcm")
    # storescu proposes the compressed transfer syntax only when asked to (-xt, -xv)
    for path, option in ((jls, "-xt"), (j2k, "-xv")):
        result = node.storescu(path, extra=[option])
        assert result.returncode == 0, result.stderr
    assert_spool_holds_exactly(node, [jls, j2k])
    # stored compressed as sent (no re-encoding), and the pixels still decode to the original
    for src, original in ((jls, plain[0]), (j2k, plain[1])):
        stored = stored_by_sop(node)[str(pydicom.dcmread(src).SOPInstanceUID)]
        np.testing.assert_array_equal(pydicom.dcmread(stored).pixel_array,
                                      pydicom.dcmread(original).pixel_array)


def test_flood_of_parallel_associations(node, tmp_path):
    associations, per_association = 8, 20
    batches = []
    for a in range(associations):
        study = pydicom.uid.generate_uid()
        batches.append([write(mg_dataset(32, 32, study_uid=study, seed=a * 100 + i),
                              tmp_path / f"a{a}" / f"i{i}.dcm") for i in range(per_association)])
    results = [None] * associations

    def send(k):
        results[k] = node.storescu(*batches[k])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(associations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    sent = [f for batch in batches for f in batch]
    assert len(node.stored_files()) == associations * per_association
    assert_spool_holds_exactly(node, sent)
    assert node.alive()


def test_unhandled_sop_class_is_refused_and_logged(node, tmp_path):
    ct = mg_dataset(16, 16, sop_class_uid=CT_IMAGE)
    ct.Modality = "CT"
    path = write(ct, tmp_path / "ct.dcm")
    result = node.storescu(path)
    assert "0x0122" in (result.stdout + result.stderr) or result.returncode != 0
    assert node.stored_files() == []
    refused = [e for e in node.log_events() if e["event"].startswith("C-STORE refused")]
    assert len(refused) == 1 and refused[0]["status"] == "0x0122"
    assert node.echo().returncode == 0  # still serving


def test_calling_ae_title_restriction(start_node, tmp_path):
    config = tmp_path / "calcnode.toml"
    config.write_text('[node]\nallowed_calling_ae_titles = ["HOSPITALPACS"]\n')
    node = start_node(config=config)
    assert node.echo("HOSPITALPACS").returncode == 0
    refused = node.echo("INTRUDER")
    assert refused.returncode != 0
    assert any(e["event"] == "association rejected" and e["calling_ae"] == "INTRUDER"
               for e in node.log_events())
    mg = write(mg_dataset(), tmp_path / "mg.dcm")
    assert node.storescu(mg, calling_ae="INTRUDER").returncode != 0
    assert node.stored_files() == []
    assert node.storescu(mg, calling_ae="HOSPITALPACS").returncode == 0
    assert len(node.stored_files()) == 1


def test_broken_instances_never_take_the_node_down(node, tmp_path):
    """A dataset without Study Instance UID and one whose bytes are garbage after the
    file meta: each gets a failure status; the node keeps serving and stores the next one."""
    from pynetdicom import AE
    from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation as MG

    no_study = mg_dataset(16, 16)
    del no_study.StudyInstanceUID
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MG, [pydicom.uid.ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="CALCNODE")
    assert assoc.is_established
    status = assoc.send_c_store(no_study)
    assert status.Status == 0xC000
    garbage = mg_dataset(16, 16)
    path = write(garbage, tmp_path / "garbage.dcm")
    raw = bytearray(path.read_bytes())
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")  # preamble, DICM, group length
    raw[meta_end + 40:] = b"\xff" * (len(raw) - meta_end - 40)  # corrupt everything after 40 bytes
    path.write_bytes(bytes(raw))
    from pynetdicom import _config
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert status.Status == 0xC000, hex(status.Status)
    assoc.release()
    assert node.alive()
    good = write(mg_dataset(16, 16), tmp_path / "good.dcm")
    assert node.storescu(good).returncode == 0
    assert len(node.stored_files()) == 1
    assert node.all_spool_files() == node.stored_files()


def test_logs_carry_no_patient_identity(node, tmp_path):
    files = [write(mg_dataset(seed=i), tmp_path / f"{i}.dcm") for i in range(2)]
    assert node.storescu(*files).returncode == 0
    assert node.echo().returncode == 0
    log = node.log_text()
    assert "C-STORE stored" in log
    assert SECRET_PATIENT_NAME.split("^")[0] not in log
    assert SECRET_PATIENT_ID not in log


def test_sigterm_stops_cleanly_with_counts(start_node, tmp_path):
    # Production defaults, but a worker gets 5 s to finish its job: the study is ready 2 s after
    # the release, so an analysis may be running at the SIGTERM, and on a loaded machine the
    # default 30 s would outlast the harness's 20 s wait (the job is then re-queued, as documented).
    node = start_node(config=write_config(tmp_path / "node.toml", workers={"stop_timeout_s": 5.0}))
    files = [write(mg_dataset(seed=i), tmp_path / f"{i}.dcm") for i in range(2)]
    assert node.storescu(*files, files[0]).returncode == 0
    assert node.stop() == 0
    [stopped] = [e for e in node.log_events() if e["event"] == "stopped"]
    assert (stopped["stored"], stopped["duplicate"], stopped["failed"]) == (2, 1, 0)


def _mount_small_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_answers_out_of_resources_and_leaves_nothing_half_written(start_node, tmp_path):
    state = tmp_path / "small"
    if not _mount_small_tmpfs(state, "1m"):
        pytest.skip("needs root to mount a 1 MB tmpfs as a full disk")
    try:
        node = start_node(state_dir=state)
        small = write(mg_dataset(64, 64, seed=1), tmp_path / "small.dcm")
        big = write(mg_dataset(1024, 768, seed=2), tmp_path / "big.dcm")  # 1.5 MB > 1 MB disk
        result = node.storescu(big)
        assert "0xa700" in (result.stdout + result.stderr).lower() or result.returncode != 0
        failed = [e for e in node.log_events() if e["event"] == "C-STORE failed: spool write error"]
        assert failed and failed[0]["status"] == "0xA700"
        assert node.all_spool_files() == [], "a half-written file was left behind"
        assert node.storescu(small).returncode == 0  # still serving, and space was given back
        assert len(node.stored_files()) == 1
        node.stop()
    finally:
        subprocess.run(["umount", str(state)], capture_output=True)


def test_called_ae_title_check_is_off_by_default_and_rejects_when_on(start_node, tmp_path):
    """``node.check_called_ae_title``: off, any called AE title is accepted (as before); on, an
    association addressed to another title is rejected and logged, ours still accepted."""
    default = start_node(state_dir=tmp_path / "default")
    default.ae_title = "SOMEONEELSE"
    assert default.echo().returncode == 0
    config = tmp_path / "calcnode.toml"
    config.write_text("[node]\ncheck_called_ae_title = true\n")
    checked = start_node(state_dir=tmp_path / "checked", config=config)
    assert checked.echo().returncode == 0  # addressed to CALCNODE
    checked.ae_title = "SOMEONEELSE"
    assert checked.echo().returncode != 0
    mg = write(mg_dataset(), tmp_path / "mg.dcm")
    assert checked.storescu(mg).returncode != 0
    assert checked.stored_files() == []
    assert any(e["event"] == "association rejected" and e.get("called_ae") == "SOMEONEELSE"
               for e in checked.log_events())


def test_data_set_that_does_not_match_its_request_is_refused(node, tmp_path):
    """The data set's SOP Instance UID absent or another than the request's: 0xC000; its SOP
    Class UID another than the request's: 0xA900. Nothing is stored."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation as MG

    cases = []
    no_uid = mg_dataset(16, 16)
    del no_uid.SOPInstanceUID
    cases.append((no_uid, 0xC000))
    other_uid = mg_dataset(16, 16)
    cases.append((other_uid, 0xC000))  # its data set's SOP Instance UID is changed below
    cases.append((mg_dataset(16, 16), 0xA900))  # its data set's SOP Class UID is changed below
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(MG, [pydicom.uid.ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="CALCNODE")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as they are, UIDs from the file meta
    paths = [write(ds, tmp_path / f"{k}.dcm") for k, (ds, _) in enumerate(cases)]
    # pydicom keeps file meta and data set in step: change the data set's UIDs in the bytes
    raw, uid = paths[1].read_bytes(), other_uid.SOPInstanceUID.encode()
    at = raw.rindex(uid)
    paths[1].write_bytes(raw[:at + len(uid) - 1] + (b"2" if uid.endswith(b"1") else b"1") + raw[at + len(uid):])
    raw = paths[2].read_bytes()
    at = raw.rindex(b"1.2.840.10008.5.1.4.1.1.1.2\x00")
    paths[2].write_bytes(raw[:at] + b"1.2.840.10008.5.1.4.1.1.1.3\x00" + raw[at + 28:])
    try:
        statuses = [assoc.send_c_store(path).Status for path in paths]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    assert statuses == [expected for _, expected in cases], [hex(s) for s in statuses]
    assert node.stored_files() == []
