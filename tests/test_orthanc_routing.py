"""A real PACS (Orthanc) routes a mammography study to the node."""
from __future__ import annotations

import urllib.error

import pydicom
import pytest

from dicom_factory import mg_dataset, write


def test_orthanc_forwards_a_study_and_every_instance_is_spooled(node, start_orthanc, tmp_path, interop):
    pacs = start_orthanc({"calcnode": [node.ae_title, "127.0.0.1", node.port]})
    assert pacs.post("/modalities/calcnode/echo", {}) == {}
    study = pydicom.uid.generate_uid()
    files = [write(mg_dataset(128, 96, study_uid=study, seed=i, view=v, laterality=lat),
                   tmp_path / f"{lat}{v}.dcm")
             for i, (lat, v) in enumerate([("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")])]
    ids = [pacs.upload(f) for f in files]
    pacs.post("/modalities/calcnode/store", {"Resources": ids, "Synchronous": True})
    stored = {p.stem for p in node.stored_files()}
    assert stored == {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    assert all(p.parent.name == study for p in node.stored_files())

    # A SEG written by other software is kept as well; a CT in the same route is refused.
    seg_id = pacs.upload(interop / "seg" / "highdicom_seg_image_cr_binary.dcm")
    pacs.post("/modalities/calcnode/store", {"Resources": [seg_id], "Synchronous": True})
    assert len(node.stored_files()) == 5
    ct_id = pacs.upload(interop / "other" / "highdicom_ct_image.dcm")
    with pytest.raises(urllib.error.HTTPError):
        pacs.post("/modalities/calcnode/store", {"Resources": [ct_id], "Synchronous": True})
    assert len(node.stored_files()) == 5
    assert node.alive() and node.echo().returncode == 0
