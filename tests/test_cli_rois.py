"""`calcnode rois`: JSON for real GSPS/SEG objects, and bad ROI objects that neither crash the
command nor the node."""
from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pydicom

from conftest import CALCNODE, ROOT
from dicom_factory import mg_dataset, write
from roi_factory import annotation, graphic_object, make_gsps, make_seg, save

KEYS = {"source_sop_instance_uid", "referenced_sop_instance_uid", "kind", "label", "points_px",
        "area_px", "area_mm2"}


def run(*args):
    return subprocess.run(CALCNODE + list(map(str, args)), cwd=ROOT, capture_output=True, text=True)


def test_softneta_ellipse_area_agrees_with_the_other_softwares_measurement(interop):
    gsps = interop / "gsps" / "softneta_gsps_ellipse_on_CR.dcm"
    image = interop / "gsps" / "softneta_referenced_CR.dcm"
    result = run("rois", "--json", gsps, "--image", image)
    assert result.returncode == 0, result.stderr
    [roi] = json.loads(result.stdout)
    assert KEYS <= set(roi)
    assert roi["kind"] == "ellipse"
    assert roi["referenced_sop_instance_uid"] == pydicom.dcmread(image).SOPInstanceUID
    texts = [t.UnformattedTextValue for a in pydicom.dcmread(gsps).GraphicAnnotationSequence
             for t in a.get("TextObjectSequence", [])]
    stated_cm2 = float(re.search(r"([0-9]+(?:\.[0-9]+)?)\s*cm", " ".join(texts)).group(1))
    assert abs(roi["area_mm2"] - stated_cm2 * 100) <= 0.01 * stated_cm2 * 100


def test_lunit_polylines_without_image_have_no_mm_area(interop):
    result = run("rois", "--json", interop / "gsps" / "lunit_gsps_polyline_text_on_DX.dcm")
    assert result.returncode == 0, result.stderr
    rois = json.loads(result.stdout)
    assert [r["kind"] for r in rois] == ["polygon", "polygon"]
    assert sorted(len(r["points_px"]) for r in rois) == [828, 1902]  # closing duplicate dropped
    assert all(r["area_mm2"] is None and r["area_px"] > 0 for r in rois)


def test_seg_segments_are_listed(interop):
    result = run("rois", "--json", interop / "seg" / "highdicom_seg_image_cr_binary.dcm")
    assert result.returncode == 0, result.stderr
    rois = json.loads(result.stdout)
    assert rois and all(r["kind"] == "seg" and r["area_px"] > 0 for r in rois)


def test_bad_roi_objects_give_one_line_errors(tmp_path, interop):
    image = write(mg_dataset(100, 80), tmp_path / "mg.dcm")
    uid = pydicom.dcmread(image).SOPInstanceUID
    one_point = save(make_gsps([annotation([graphic_object("POLYLINE", [(5, 5)])], images=[uid])]),
                     tmp_path / "one_point.dcm")
    display_no_area = save(make_gsps([annotation([graphic_object("CIRCLE", [(0.5, 0.5), (0.6, 0.5)],
                                                                 units="DISPLAY")], images=[uid])]),
                           tmp_path / "display.dcm")
    elsewhere = save(make_gsps([annotation([graphic_object("CIRCLE", [(10, 10), (20, 10)])],
                                           images=[pydicom.uid.generate_uid()])]),
                     tmp_path / "elsewhere.dcm")
    wrong_size = save(make_seg([(1, uid, np.ones((50, 50), bool))], labels={1: "cluster"}),
                      tmp_path / "wrong_size.dcm")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(one_point.read_bytes()[:-7])
    sr = interop / "sr" / "highdicom_sr_document.dcm"
    for bad, expected in ((one_point, "degenerate|point"), (display_no_area, "Displayed Area"),
                          (elsewhere, "not among"), (wrong_size, "size|rows"),
                          (truncated, "truncated"), (sr, "Comprehensive 3D SR")):
        result = run("rois", "--json", bad, "--image", image)
        assert result.returncode == 1, (bad.name, result.stdout)
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("calcnode rois: error:"), result.stderr
        assert re.search(expected, result.stderr, re.IGNORECASE), (bad.name, result.stderr)


def test_node_keeps_serving_when_sent_bad_roi_objects(node, tmp_path):
    """The SCP files any well-formed GSPS/SEG; what is wrong inside is the analysis' business."""
    image = write(mg_dataset(100, 80), tmp_path / "mg.dcm")
    uid = pydicom.dcmread(image).SOPInstanceUID
    one_point = make_gsps([annotation([graphic_object("POLYLINE", [(5, 5)])], images=[uid])])
    wrong_size = make_seg([(1, uid, np.ones((50, 50), bool))], labels={1: "cluster"})
    files = [save(ds, tmp_path / f"{name}.dcm") for name, ds in (("gsps", one_point), ("seg", wrong_size))]
    assert node.storescu(*files).returncode == 0
    assert node.storescu(image).returncode == 0
    assert len(node.stored_files()) == 3 and node.alive()
    spooled_gsps = [p for p in node.stored_files() if p.stem == one_point.SOPInstanceUID]
    result = run("rois", *spooled_gsps)
    assert result.returncode == 1 and "Traceback" not in result.stderr
