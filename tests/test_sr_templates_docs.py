"""The example in docs/results.md: a demo study written with sr_templates, shown as a PNG
(SEG + GSPS over the image) and as dsrdump text.

    CALCNODE_WRITE_DOCS=1 .venv/bin/pytest -q tests/test_sr_templates_docs.py

rewrites docs/img/results_overlay.png and prints the dsrdump excerpts to paste into
docs/results.md. Without the variable the test renders into a temporary folder and
checks that the excerpts quoted in docs/results.md are still what the writers produce.
"""
from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime

import numpy as np
import pydicom
import pytest

from conftest import ROOT, need_tool
from dicom_factory import mg_dataset
from analysis.results import ImageResult, ModelIdentity, RoiResult, StudyResult
from sr_templates import write_study_results
from sr_templates.preview import render_overlay_png

DSRDUMP = "/usr/bin/dsrdump"
DOC = ROOT / "docs" / "results.md"
PNG = ROOT / "docs" / "img" / "results_overlay.png"
SHAPE = (360, 300)
STUDY_UID = "1.2.826.0.1.3680043.8.498.9001"


def ellipse(cx, cy, rx, ry, n=32):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)])


def demo_study():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    breast = ((xx / 260.0) ** 2 + ((yy - 180) / 170.0) ** 2) < 1
    pixels = np.where(breast, 1500 + 500 * np.exp(-((xx - 60) ** 2 + (yy - 180) ** 2) / 9000.0), 120)
    pixels = pixels + rng.normal(0, 35, SHAPE)
    labels = np.zeros(SHAPE, np.int32)
    blobs = [(130, 120), (136, 131), (128, 140), (141, 124), (146, 137), (124, 128), (139, 146),  # A
             (232, 90), (240, 103), (229, 108),                                                  # B
             (205, 200)]                                                                           # C
    for k, (r, c) in enumerate(blobs, start=1):
        radius = 1.2 + 0.9 * rng.random()
        disk = (yy - r) ** 2 + (xx - c) ** 2 <= radius ** 2
        labels[disk] = k
        pixels[disk] += 900
    source = mg_dataset(pixels=np.clip(pixels, 0, 4095).astype(np.uint16), study_uid=STUDY_UID,
                        series_uid=STUDY_UID + ".1", sop_uid=STUDY_UID + ".1.1", laterality="L", view="CC")
    source.PatientOrientation = ["A", "R"]
    uid = source.SOPInstanceUID
    rois = [
        RoiResult(roi_id="ann1-obj1", referenced_sop_instance_uid=uid, label="A", kind="ellipse",
                  outline_px=ellipse(133, 135, 26, 22), status="ok", calcification_labels=tuple(range(1, 8)),
                  score=0.73, threshold=0.4, decision="actionable", calcification_type="amorphous",
                  distribution="grouped"),
        RoiResult(roi_id="ann1-obj2", referenced_sop_instance_uid=uid, label="B", kind="ellipse",
                  outline_px=ellipse(100, 235, 20, 17), status="ok", calcification_labels=(8, 9, 10),
                  score=0.18, threshold=0.4, decision="benign", calcification_type="amorphous"),
        RoiResult(roi_id="ann1-obj3", referenced_sop_instance_uid=uid, label="C", kind="polygon",
                  outline_px=np.array([[185, 190], [218, 186], [222, 220], [190, 224]], float),
                  status="not_assessable", calcification_labels=(11,), threshold=0.4,
                  reason="1 calcification in the ROI; at least 2 are needed"),
    ]
    image = ImageResult.from_label_image(sop_instance_uid=uid, label_image=labels, rois=rois,
                                         pixel_spacing_mm=(0.07, 0.07))
    model = ModelIdentity(name="calcnode-demo", version="0.1.0", sha256="5e" * 32,
                          training_data="calcnode simulator, 2000 simulated clusters", not_for_clinical_use=True)
    result = StudyResult(study_instance_uid=STUDY_UID, images=[image], model=model,
                         started=datetime(2026, 3, 2, 9, 30, 0), finished=datetime(2026, 3, 2, 9, 30, 12),
                         parameters={"threshold": 0.4, "kmeans_k": 15})
    return result, source


def dsrdump(path):
    proc = subprocess.run([DSRDUMP, "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def quoted_blocks(markdown: str, tag: str) -> list[list[str]]:
    return [block.strip("\n").splitlines() for block in re.findall(rf"```text {tag}\n(.*?)```", markdown, re.S)]


def test_docs_example(tmp_path):
    need_tool(DSRDUMP)
    result, source = demo_study()
    paths = write_study_results(result, [source], tmp_path)
    by_kind = {p.name.split("-", 1)[0]: p for p in paths}
    write_docs = os.environ.get("CALCNODE_WRITE_DOCS") == "1"
    png = render_overlay_png(source, PNG if write_docs else tmp_path / "overlay.png",
                             seg=pydicom.dcmread(by_kind["SEG"]), gsps=pydicom.dcmread(by_kind["GSPS"]),
                             crop_px=(95, 60, 270, 250), width_in=6.0, dpi=80,
                             title="SEG (colour) + GSPS (yellow) - NOT FOR CLINICAL USE")
    assert png.stat().st_size > 10_000
    texts = {kind: dsrdump(by_kind[kind]) for kind in ("SR", "CADSR")}
    if write_docs:
        for kind, text in texts.items():
            print(f"\n===== {kind} =====\n{text}")
        return
    if not DOC.exists():
        pytest.skip(f"{DOC} not written yet")
    markdown = DOC.read_text()
    for kind, tag in (("SR", "dsrdump-tid1500"), ("CADSR", "dsrdump-cad")):
        blocks = quoted_blocks(markdown, tag)
        assert blocks, f"no ```text {tag} block in {DOC}"
        current = texts[kind].splitlines()
        for block in blocks:
            lines = [line for line in block if line.strip() not in ("...", "")]
            missing = [line for line in lines if line not in current]
            assert not missing, f"docs/results.md quotes lines dsrdump no longer prints: {missing[:3]}"
