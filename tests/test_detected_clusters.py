"""Detected calcification clusters in the product (issue 21): the result types, the writers and
the node configuration. A view without ROI gets cluster marks under ``no_roi = "detect"``, never a
whole-breast score; a view without cluster says "No calcification cluster detected".

The analysis end to end (real segmentation and detector on simulated views) is in
tests/test_detected_clusters_analysis.py.
"""
from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import datetime

import numpy as np
import pydicom
import pytest

from analysis.results import ROI_KINDS, DRAWN_ROI_KINDS, ImageResult, RoiResult, StudyResult
from conftest import need_tool
from sr_templates import write_study_results
from test_sr_templates import (
    DCENTVFY, DCIODVFY, DSRDUMP, MODEL, SHAPE, STUDY_UID, error_lines, label_image, source_images, square,
    write_all,
)

UID0 = "1.2.826.0.1.3680043.8.498.7001.1.1"


def detected(roi_id="cluster-1", *, confidence=0.8, status="ok", labels=(1, 2, 3), **kw) -> RoiResult:
    scored = dict(score=0.73, threshold=0.4, decision="actionable") if status == "ok" else \
        dict(threshold=0.4, reason="analysis failed: RuntimeError: boom")
    scored.update(kw)
    return RoiResult(roi_id=roi_id, referenced_sop_instance_uid=UID0, label=f"detected {roi_id}",
                     kind="detected_cluster", outline_px=square(25, 25, 50, 50), status=status,
                     calcification_labels=labels if status == "ok" else (), detection_confidence=confidence, **scored)


# ----------------------------------------------------------------------------- result types

def test_detected_cluster_is_a_roi_kind_but_not_a_drawn_one():
    assert "detected_cluster" in ROI_KINDS and "detected_cluster" not in DRAWN_ROI_KINDS
    roi = detected(confidence=np.float32(0.25))
    assert roi.detection_confidence == pytest.approx(0.25) and type(roi.detection_confidence) is float
    assert roi.detected


@pytest.mark.parametrize("confidence, message", [(None, "needs its detection_confidence"),
                                                 (1.2, r"outside \[0, 1\]"), (-0.1, r"outside \[0, 1\]"),
                                                 (float("nan"), r"outside \[0, 1\]"), ("high", "a number in")])
def test_detected_cluster_needs_a_confidence_in_the_unit_interval(confidence, message):
    with pytest.raises(ValueError, match=message):
        detected(confidence=confidence)


@pytest.mark.parametrize("kind", ["polygon", "ellipse", "seg", "whole_breast"])
def test_only_detected_clusters_carry_a_detection_confidence(kind):
    with pytest.raises(ValueError, match="detection_confidence is for kind 'detected_cluster' only"):
        RoiResult(roi_id="r", referenced_sop_instance_uid=UID0, kind=kind, outline_px=square(0, 0, 5, 5),
                  status="not_assessable", reason="none", detection_confidence=0.5)
    roi = RoiResult(roi_id="r", referenced_sop_instance_uid=UID0, kind=kind, outline_px=square(0, 0, 5, 5),
                    status="not_assessable", reason="none")
    assert roi.detection_confidence is None and not roi.detected


def image(rois=(), state=None, failure=None, labels=True) -> ImageResult:
    return ImageResult(sop_instance_uid=UID0, shape=SHAPE, label_image=label_image(0) if labels else None,
                       rois=tuple(rois), cluster_detection=state, detection_failure=failure)


def test_image_cluster_detection_states_that_are_consistent():
    assert image([detected(), detected("cluster-2", labels=(4, 2))], "clusters_detected").cluster_detection \
        == "clusters_detected"
    assert image([], "no_cluster_detected").no_cluster_detected
    assert image([], "detection_failed", "segmentation failed: boom", labels=False).detection_failure
    assert image([], "detection_failed", "cluster detection failed: boom").rois == ()
    drawn = RoiResult(roi_id="ann1", referenced_sop_instance_uid=UID0, outline_px=square(0, 0, 5, 5),
                      status="not_assessable", reason="none")
    assert image([drawn]).cluster_detection is None


@pytest.mark.parametrize("rois, state, failure, labels, message", [
    ([detected()], None, None, True, "cluster_detection must be 'clusters_detected'"),
    ([detected()], "no_cluster_detected", None, True, "cluster_detection must be 'clusters_detected'"),
    ([], "clusters_detected", None, True, "needs at least one detected cluster"),
    ("drawn+detected", "clusters_detected", None, True, "were not detected"),
    ("drawn", "no_cluster_detected", None, True, "means the image has no ROI"),
    ([], "no_cluster_detected", None, False, "needs the label_image"),
    ([], "detection_failed", None, True, "needs a detection_failure reason"),
    ([], "no_cluster_detected", "why", True, "detection_failure is for"),
    ([], "whole_breast", None, True, "unknown cluster_detection"),
])
def test_image_cluster_detection_refuses_inconsistent_states(rois, state, failure, labels, message):
    drawn = RoiResult(roi_id="ann1", referenced_sop_instance_uid=UID0, outline_px=square(0, 0, 5, 5),
                      status="not_assessable", reason="none")
    rois = {"drawn": [drawn], "drawn+detected": [drawn, detected()]}.get(rois, rois) if isinstance(rois, str) \
        else rois
    with pytest.raises(ValueError, match=message):
        image(rois, state, failure, labels)


# ----------------------------------------------------------------------------- writers

def detected_study(sources) -> StudyResult:
    """Image 1: two detected clusters (one scored actionable, one scored benign) and image 2: no
    cluster detected."""
    uid0, uid1 = sources[0].SOPInstanceUID, sources[1].SOPInstanceUID
    rois0 = [
        RoiResult(roi_id="cluster-1", referenced_sop_instance_uid=uid0, label="detected cluster 1",
                  kind="detected_cluster", outline_px=square(25, 25, 50, 50), status="ok",
                  calcification_labels=(1, 2, 3), score=0.73, threshold=0.4, decision="actionable",
                  detection_confidence=0.91),
        RoiResult(roi_id="cluster-2", referenced_sop_instance_uid=uid0, label="detected cluster 2",
                  kind="detected_cluster", outline_px=square(70, 90, 95, 110), status="not_assessable",
                  calcification_labels=(4,), threshold=0.4, reason="1 calcification in the ROI",
                  detection_confidence=0.55),
    ]
    labels1 = label_image(1)
    images = [ImageResult.from_label_image(sop_instance_uid=uid0, label_image=label_image(0), rois=rois0,
                                           pixel_spacing_mm=(0.07, 0.07), cluster_detection="clusters_detected"),
              ImageResult(sop_instance_uid=uid1, shape=SHAPE, label_image=labels1, rois=(),
                          cluster_detection="no_cluster_detected")]
    return StudyResult(study_instance_uid=STUDY_UID, images=images, model=MODEL,
                       started=datetime(2026, 1, 2, 10, 0, 0), finished=datetime(2026, 1, 2, 10, 0, 42),
                       parameters={"threshold": 0.4, "no_roi": "detect", "cluster_model": "rule"})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("detected"), detected_study)


def by_kind(written, kind):
    return [p for p in written["paths"] if p.name.split("-", 1)[0] == kind]


def run(cmd):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)


def test_objects_written_for_detected_clusters_and_a_view_without(written):
    kinds = [p.name.split("-", 1)[0] for p in written["paths"]]
    # one SEG (the view with clusters), both SRs, a GSPS per view (the second only says "no cluster")
    assert sorted(kinds) == ["CADSR", "GSPS", "GSPS", "SEG", "SR"]


def test_dciodvfy_and_dcentvfy_accept_every_object(written):
    need_tool(DCIODVFY)
    need_tool(DCENTVFY)
    for path in written["paths"]:
        proc = run([DCIODVFY, path])
        assert not error_lines(proc), f"{path.name}:\n{proc.stderr}"
    proc = run([DCENTVFY, *written["paths"], *written["source_paths"]])
    assert not error_lines(proc) and proc.returncode == 0, proc.stderr


def dsrdump(path) -> str:
    need_tool(DSRDUMP)
    proc = run([DSRDUMP, "+Pl", path])
    assert proc.returncode == 0 and "error" not in proc.stderr.lower(), proc.stderr
    return proc.stdout


def _items(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _name(item) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""


def test_cad_sr_marks_each_detected_cluster_and_says_when_a_view_has_none(written):
    [path] = by_kind(written, "CADSR")
    text = dsrdump(path)
    assert "No calcification cluster detected on image 2" in text
    assert "All algorithms succeeded; with findings" in text
    ds = pydicom.dcmread(path)
    findings = [i for i in _items(ds) if _name(i) == "Single Image Finding"]
    assert len(findings) == 2  # both detected clusters, the unscored one too
    for finding, roi, certainty in zip(findings, written["result"].images[0].rois, ("91", "55")):
        children = list(finding.ContentSequence)
        names = [_name(c) for c in children]
        assert names.count("Outline") == 1 and names.count("Center") == 1
        outline = next(c for c in children if _name(c) == "Outline")
        assert outline.GraphicType == "POLYLINE" and len(outline.GraphicData) == 2 * (len(roi.outline_px) + 1)
        num = next(c for c in children if _name(c) == "Certainty of Finding")
        assert str(num.MeasuredValueSequence[0].NumericValue) == certainty  # the detection confidence, %
        scores = [c for c in children if _name(c) == "Actionable calcification cluster score"]
        assert [float(s.MeasuredValueSequence[0].NumericValue) for s in scores] == \
            ([0.73] if roi.score is not None else [])
    # the CAD SR declares the private scheme of the score
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99CALCNODE"
    # the actionable one is Presentation Required, the unscored one too (a detection is a CAD mark)
    intents = [next(c for c in f.ContentSequence if _name(c) == "Rendering Intent").ConceptCodeSequence[0].CodeValue
               for f in findings]
    assert intents == ["111150", "111150"]


def test_cad_sr_of_a_study_without_any_cluster(written, tmp_path):
    sources = written["sources"]
    result = written["result"]
    image0 = ImageResult(sop_instance_uid=sources[0].SOPInstanceUID, shape=SHAPE, label_image=label_image(0),
                         rois=(), cluster_detection="no_cluster_detected")
    nothing = replace(result, images=(image0, result.images[1]))
    paths = write_study_results(nothing, sources, tmp_path)
    [cad] = [p for p in paths if p.name.startswith("CADSR")]
    [sr] = [p for p in paths if p.name.startswith("SR")]
    assert not [p for p in paths if p.name.startswith("SEG")]
    text = dsrdump(cad)
    assert "All algorithms succeeded; without findings" in text and "Single Image Finding" not in text
    assert "Successful Detections" in text
    assert text.count("No calcification cluster detected on image") == 2
    sr_text = dsrdump(sr)
    assert sr_text.count("No calcification cluster detected") >= 2
    assert "Actionable calcification cluster score" not in sr_text and "Decision at operating point" not in sr_text
    for path in paths:
        assert not error_lines(run([DCIODVFY, path])), path.name


def test_tid1500_groups_say_detected_with_confidence_and_no_cluster_view_has_no_score(written):
    [path] = by_kind(written, "SR")
    text = dsrdump(path)
    assert text.count("Detected by calcnode") == 2 and "Drawn by radiologist" not in text
    assert "No calcification cluster detected on image 2" in text
    ds = pydicom.dcmread(path)
    groups = [i for i in _items(ds) if _name(i) == "Measurement Group"]
    assert len(groups) == 2  # the detected clusters; every group has an Image Region (what OHIF draws)
    assert all("Image Region" in [_name(c) for c in g.ContentSequence] for g in groups)
    certainty = [float(c.MeasuredValueSequence[0].NumericValue) for g in groups for c in g.ContentSequence
                 if _name(c) == "Certainty of Finding"]
    assert certainty == [91.0, 55.0]
    # the view without cluster: a qualitative evaluation of the report (TID 1500 row 10), no score
    [evaluations] = [i for i in ds.ContentSequence if _name(i) == "Qualitative Evaluations"]
    names = [_name(c) for c in evaluations.ContentSequence]
    assert names == ["Calcification cluster detection", "Comment"]
    outcome = evaluations.ContentSequence[0]
    assert outcome.ConceptCodeSequence[0].CodeMeaning == "No calcification cluster detected"
    assert "Actionable calcification cluster score" not in names and "Decision at operating point" not in names
    [source] = [c for c in _items(outcome) if c.get("ValueType") == "IMAGE"]
    assert source.RelationshipType == "INFERRED FROM"
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == written["sources"][1].SOPInstanceUID


def test_tid1500_of_a_study_without_any_cluster_has_only_evaluations(written, tmp_path):
    sources, result = written["sources"], written["result"]
    nothing = replace(result, images=tuple(replace(im, rois=(), cluster_detection="no_cluster_detected")
                                           for im in result.images))
    [sr] = [p for p in write_study_results(nothing, sources, tmp_path) if p.name.startswith("SR")]
    ds = pydicom.dcmread(sr)
    top = [_name(i) for i in ds.ContentSequence if i.ValueType == "CONTAINER"]
    assert top == ["Image Library", "Qualitative Evaluations"]  # no measurement group OHIF cannot draw
    assert not error_lines(run([DCIODVFY, sr]))


def test_tid1500_drawn_rois_say_drawn(tmp_path):
    from test_sr_templates import study_result

    sources = source_images()
    paths = write_study_results(study_result(sources), sources, tmp_path)
    [sr] = [p for p in paths if p.name.startswith("SR")]
    text = dsrdump(sr)
    assert text.count("Drawn by radiologist") == 4 and "Detected by calcnode" not in text
    assert "No calcification cluster detected" not in text


def test_gsps_draws_detected_outlines_with_text_and_says_no_cluster(written):
    gsps = [pydicom.dcmread(p) for p in by_kind(written, "GSPS")]
    by_image = {g.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID: g for g in gsps}
    sources = written["sources"]
    first = by_image[sources[0].SOPInstanceUID]
    annotations = first.GraphicAnnotationSequence
    assert len(annotations) == 2
    texts = [a.TextObjectSequence[0].UnformattedTextValue for a in annotations]
    assert texts[0].startswith("detected cluster 1 (detected by calcnode, confidence 91 %): score 0.73")
    assert "confidence 55 %" in texts[1] and "not assessable" in texts[1]
    roi = written["result"].images[0].rois[0]
    outline = np.asarray(annotations[0].GraphicObjectSequence[0].GraphicData, float).reshape(-1, 2)
    assert np.allclose(outline[:-1], roi.outline_px) and np.allclose(outline[0], outline[-1])
    second = by_image[sources[1].SOPInstanceUID]
    [annotation] = second.GraphicAnnotationSequence
    assert "GraphicObjectSequence" not in annotation
    assert annotation.TextObjectSequence[0].UnformattedTextValue.startswith(
        "calcnode: No calcification cluster detected")


def test_seg_has_one_segment_per_detected_cluster(written):
    [path] = by_kind(written, "SEG")
    seg = pydicom.dcmread(path)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["detected cluster 1", "detected cluster 2"]
    frames = seg.pixel_array.reshape(len(labels), *SHAPE)
    image = written["result"].images[0]
    for frame, roi in zip(frames, image.rois):
        assert np.array_equal(frame.astype(bool), image.roi_mask(roi))


# ----------------------------------------------------------------------------- configuration

def test_config_no_roi_policies_default_detect(tmp_path):
    from analysis.study import NO_ROI_POLICIES as ANALYSIS_POLICIES
    from dicom_node.config import NO_ROI_POLICIES, ConfigError, load_config

    assert NO_ROI_POLICIES == ANALYSIS_POLICIES == ("detect", "skip", "whole_breast")
    assert load_config().assembly.no_roi_policy == "detect"
    for policy in NO_ROI_POLICIES:
        path = tmp_path / f"{policy}.toml"
        path.write_text(f'[assembly]\nno_roi_policy = "{policy}"\n')
        assert load_config(path).assembly.no_roi_policy == policy
    for bad in ("whole-breast", "clusters", "", "Detect"):
        path = tmp_path / "bad.toml"
        path.write_text(f'[assembly]\nno_roi_policy = "{bad}"\n')
        with pytest.raises(ConfigError, match="no_roi_policy must be one of detect, skip, whole_breast"):
            load_config(path)


def test_assembly_analyses_a_study_without_roi_under_detect():
    from dicom_node.assembly import StudySummary, decide

    study = StudySummary(last_received_at=0.0, n_images=4, n_roi_objects=0, input_hash="a", analysed_hash=None,
                         status="receiving")
    assert decide(study, now=100.0, stable_seconds=30, no_roi_policy="detect").verdict == "analyze"
    assert decide(study, now=100.0, stable_seconds=30, no_roi_policy="skip").verdict == "skip"


def test_job_rows_carry_kind_and_detection(written):
    from dicom_node.job import roi_rows

    rows = roi_rows(written["result"])
    assert [(r["roi_kind"], r["detection_confidence"], r["cluster_detection"]) for r in rows] == \
        [("detected_cluster", 0.91, "clusters_detected"), ("detected_cluster", 0.55, "clusters_detected")]
