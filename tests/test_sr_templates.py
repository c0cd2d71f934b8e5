"""sr_templates: the DICOM objects the radiologist sees, checked with real validators.

A synthetic study (two MG images, a label image with a few calcifications, four ROIs:
actionable, benign, not assessable with one calcification, not assessable with none)
is written once per module with ``write_study_results``; each test then checks one
property of what was written with dciodvfy, dcentvfy, dsrdump, highdicom or pydicom.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts

from conftest import need_tool
from dicom_factory import mg_dataset, write
from analysis.results import ImageResult, ModelIdentity, RoiResult, StudyResult
from sr_templates import build_study_results, write_study_results
from sr_templates import codes
from sr_templates.common import closed_outline, index_sources
from sr_templates.preview import render_overlay_png, segment_masks

DCIODVFY = "/usr/bin/dciodvfy"
DCENTVFY = "/usr/bin/dcentvfy"
DSRDUMP = "/usr/bin/dsrdump"

STUDY_UID = "1.2.826.0.1.3680043.8.498.7001"
SERIES_UID = STUDY_UID + ".1"
SHAPE = (160, 128)
MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"

# (row, col) top-left corners of 3x3 calcifications, per image; label = position + 1
BLOBS = {
    0: [(30, 30), (34, 42), (42, 34), (100, 80)],  # 1-3: cluster A; 4: alone in ROI "B"
    1: [(110, 40), (118, 50)],                      # 1-2: cluster C
}


# ----------------------------------------------------------------------------- builders

def square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def label_image(index):
    labels = np.zeros(SHAPE, np.int32)
    for k, (r, c) in enumerate(BLOBS[index], start=1):
        labels[r:r + 3, c:c + 3] = k
    return labels


def source_images():
    sources = []
    for index, (side, view, orientation) in enumerate([("L", "CC", ["A", "R"]), ("L", "MLO", ["A", "FR"])]):
        rng = np.random.default_rng(index)
        yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
        pixels = 900 + 600 * np.exp(-((xx - 10) ** 2 + (yy - 80) ** 2) / 6000.0) + rng.normal(0, 40, SHAPE)
        pixels[label_image(index) > 0] += 1400
        ds = mg_dataset(pixels=np.clip(pixels, 0, 4095).astype(np.uint16), study_uid=STUDY_UID,
                        series_uid=SERIES_UID, sop_uid=f"{SERIES_UID}.{index + 1}", laterality=side, view=view)
        ds.PatientOrientation = orientation
        ds.InstanceNumber = index + 1
        if index == 0:
            ds.WindowCenter, ds.WindowWidth = 1500, 2500
        sources.append(ds)
    return sources


MODEL = ModelIdentity(name="calcnode-demo", version="0.1.0", sha256="0f" * 32,
                      training_data="simulated mammograms (calcnode synth)", not_for_clinical_use=True)


def study_result(sources, *, model=MODEL, roi_a_outline=None, extra_rois=(), failure=None) -> StudyResult:
    uid0, uid1 = sources[0].SOPInstanceUID, sources[1].SOPInstanceUID
    rois0 = [
        RoiResult(roi_id="ann1-obj1", referenced_sop_instance_uid=uid0, label="cluster A",
                  outline_px=square(25, 25, 50, 50) if roi_a_outline is None else roi_a_outline,
                  status="ok", calcification_labels=(1, 2, 3), score=0.73, threshold=0.4,
                  decision="actionable", calcification_type="amorphous", distribution="grouped"),
        RoiResult(roi_id="ann1-obj2", referenced_sop_instance_uid=uid0, label="B",
                  outline_px=square(70, 90, 95, 110), status="not_assessable", calcification_labels=(4,),
                  threshold=0.4, reason="only 1 calcification in the ROI (at least 2 needed)"),
        *extra_rois,
    ]
    rois1 = [
        RoiResult(roi_id="ann2-obj1", referenced_sop_instance_uid=uid1, label="cluster C", kind="ellipse",
                  outline_px=square(35, 105, 60, 125), status="ok", calcification_labels=(1, 2),
                  score=0.21, threshold=0.4, decision="benign"),
        RoiResult(roi_id="ann2-obj2", referenced_sop_instance_uid=uid1, label="D",
                  outline_px=square(80, 20, 110, 50), status="not_assessable",
                  reason="no calcification found in the ROI"),
    ]
    images = [ImageResult.from_label_image(sop_instance_uid=uid0, label_image=label_image(0), rois=rois0,
                                           pixel_spacing_mm=(0.07, 0.07)),
              ImageResult(sop_instance_uid=uid1, shape=SHAPE, label_image=label_image(1), rois=rois1)]
    return StudyResult(study_instance_uid=STUDY_UID, images=images, model=model,
                       started=datetime(2026, 1, 2, 10, 0, 0), finished=datetime(2026, 1, 2, 10, 0, 42),
                       parameters={"threshold": 0.4, "kmeans_k": 15, "calcification_margin_mm": 1.75},
                       warnings=("pixel spacing from Imager Pixel Spacing",), failure=failure)


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def error_lines(proc):
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line]


def kind_of(path: Path) -> str:
    return path.name.split("-", 1)[0]


# ----------------------------------------------------------------------------- fixtures

def write_all(base: Path, result_of) -> dict:
    """The source images written to ``base/sources``, ``result_of(sources)`` written to ``base/out``."""
    sources = source_images()
    source_paths = [write(ds, base / "sources" / f"MG{k}.dcm") for k, ds in enumerate(sources, 1)]
    result = result_of(sources)
    paths = write_study_results(result, sources, base / "out")
    return {"sources": sources, "source_paths": source_paths, "result": result, "paths": paths,
            "base": base}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("sr_templates"), study_result)


def outputs(written, kind):
    return [p for p in written["paths"] if kind_of(p) == kind]


def read(written, kind):
    return [pydicom.dcmread(p) for p in outputs(written, kind)]


# ----------------------------------------------------------------------------- result type

def test_result_type_refuses_inconsistent_data():
    sources = source_images()
    uid0 = sources[0].SOPInstanceUID
    good = dict(roi_id="r1", referenced_sop_instance_uid=uid0, outline_px=square(1, 1, 9, 9), status="ok",
                calcification_labels=(1, 2), score=0.5, threshold=0.4, decision="actionable")
    assert RoiResult(**good).assessable is True
    with pytest.raises(ValueError, match=r"score 1\.3 is outside \[0, 1\]"):
        RoiResult(**{**good, "score": 1.3})
    with pytest.raises(ValueError, match="contradicts score"):
        RoiResult(**{**good, "decision": "benign"})
    with pytest.raises(ValueError, match="at least 2 calcifications"):
        RoiResult(**{**good, "calcification_labels": (1,)})
    with pytest.raises(ValueError, match="needs a reason"):
        RoiResult(**{**good, "status": "not_assessable", "score": None, "decision": None})
    with pytest.raises(ValueError, match="cannot carry a score"):
        RoiResult(**{**good, "status": "failed", "reason": "crash"})
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        RoiResult(**{**good, "outline_px": [[1, 2], [3, 4]]})
    with pytest.raises(ValueError, match="assessable=False contradicts"):
        RoiResult(**{**good, "assessable": False})

    roi = RoiResult(**good)
    with pytest.raises(ValueError, match=r"label_image has shape \(10, 10\), the image is \(160, 128\)"):
        ImageResult(sop_instance_uid=uid0, shape=SHAPE, label_image=np.zeros((10, 10), np.int32), rois=[roi])
    with pytest.raises(ValueError, match=r"references image .*but it is listed under image"):
        ImageResult(sop_instance_uid=sources[1].SOPInstanceUID, shape=SHAPE, label_image=label_image(0),
                    rois=[roi])
    with pytest.raises(ValueError, match=r"labels \[7\] do not occur"):
        ImageResult(sop_instance_uid=uid0, shape=SHAPE, label_image=label_image(0),
                    rois=[replace(roi, calcification_labels=(1, 7))])
    with pytest.raises(ValueError, match="leaves the 128 x 160 image"):
        ImageResult(sop_instance_uid=uid0, shape=SHAPE, label_image=label_image(0),
                    rois=[replace(roi, outline_px=square(100, 100, 200, 150))])
    with pytest.raises(ValueError, match="only 'failed' ROIs are possible"):
        ImageResult(sop_instance_uid=uid0, shape=SHAPE, label_image=None, rois=[roi])
    with pytest.raises(ValueError, match="sha256"):
        ModelIdentity(name="m", version="1", sha256="xyz", training_data="t")

    result = study_result(sources)
    with pytest.raises(ValueError, match="is before started"):
        replace(result, finished=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="listed twice"):
        replace(result, images=(result.images[0], result.images[0]))
    # the label image is stored read-only, as int32
    assert result.images[0].label_image.dtype == np.int32
    assert not result.images[0].label_image.flags.writeable
    assert [c.label for c in result.images[0].calcifications] == [1, 2, 3, 4]
    assert result.images[0].calcifications[0].area_mm2 == pytest.approx(9 * 0.07 * 0.07)


def test_sources_must_match_the_result(tmp_path):
    sources = source_images()
    result = study_result(sources)
    with pytest.raises(ValueError, match="is not among the source datasets"):
        index_sources(result, sources[:1])
    wrong = source_images()
    wrong[1] = mg_dataset(64, 48, study_uid=STUDY_UID, sop_uid=sources[1].SOPInstanceUID)
    with pytest.raises(ValueError, match=r"the source image is \(64, 48\)"):
        write_study_results(result, wrong, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written


def test_sources_without_orientation_or_imager_spacing(tmp_path):
    """Not every sender fills Patient Orientation; some state Pixel Spacing only."""
    need_tool(DCIODVFY)
    sources = source_images()
    for ds in sources:
        del ds.PatientOrientation
        del ds.ImagerPixelSpacing
    sources[1].PixelSpacing = [0.1, 0.1]
    paths = write_study_results(study_result(sources), sources, tmp_path)
    assert [kind_of(p) for p in paths] == ["SEG", "SEG", "SR", "CADSR", "GSPS", "GSPS"]
    for path in paths:
        proc = run([DCIODVFY, str(path)])
        assert not error_lines(proc), f"{path.name}:\n{proc.stderr}"
    seg0, seg1 = (pydicom.dcmread(p) for p in paths[:2])
    assert seg0.PatientOrientation == "" and "PixelMeasuresSequence" not in seg0.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in seg1.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing] == \
        [0.1, 0.1]


# ----------------------------------------------------------------------------- validators

def test_writes_every_object_once(written):
    kinds = [kind_of(p) for p in written["paths"]]
    assert kinds == ["SEG", "SEG", "SR", "CADSR", "GSPS", "GSPS"]
    assert all(p.exists() and p.stat().st_size > 0 for p in written["paths"])
    assert not [p for p in written["paths"][0].parent.iterdir() if p.name.startswith(".")]  # no temp files
    sources = written["sources"]
    for path in written["paths"]:
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == STUDY_UID
        assert ds.PatientID == sources[0].PatientID and ds.PatientName == sources[0].PatientName
        assert ds.AccessionNumber == sources[0].AccessionNumber
        assert ds.SeriesInstanceUID != SERIES_UID
        assert ds.Manufacturer == "calcnode"
        assert "NOT FOR CLINICAL USE" in ds.SeriesDescription
        assert any(str(v).startswith("calcnode ") for v in ds.SoftwareVersions)
        assert any(eq.Manufacturer == "calcnode" for eq in ds.ContributingEquipmentSequence)


@pytest.mark.parametrize("kind,sop_class", [("SEG", SEGMENTATION), ("SR", COMPREHENSIVE_SR),
                                            ("CADSR", MAMMOGRAPHY_CAD_SR), ("GSPS", GSPS)])
def test_dciodvfy_reports_no_error(written, kind, sop_class):
    need_tool(DCIODVFY)
    for path in outputs(written, kind):
        assert pydicom.dcmread(path).SOPClassUID == sop_class
        proc = run([DCIODVFY, str(path)])
        assert not error_lines(proc), f"{path.name}:\n{proc.stderr}"


def test_dcentvfy_finds_outputs_and_sources_consistent(written):
    need_tool(DCENTVFY)
    proc = run([DCENTVFY, *map(str, written["paths"]), *map(str, written["source_paths"])])
    assert not error_lines(proc), proc.stderr
    assert proc.returncode == 0


@pytest.mark.parametrize("kind", ["SR", "CADSR"])
def test_dsrdump_renders_the_srs(written, kind):
    need_tool(DSRDUMP)
    [path] = outputs(written, kind)
    proc = run([DSRDUMP, "+Pl", str(path)])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "not for clinical use" in text.lower()
    # score 0.73 as the TID 1500 score, 73 % as the CAD Certainty of Finding
    assert ('"0.73"' in text) if kind == "SR" else ('"73"' in text)
    assert "Calcification cluster" in text
    assert "error" not in proc.stderr.lower()


# ----------------------------------------------------------------------------- SEG

def test_seg_reads_back_with_highdicom(written):
    result, sources = written["result"], written["sources"]
    segs = [hd.seg.segread(p) for p in outputs(written, "SEG")]
    sr = hd.sr.srread(outputs(written, "SR")[0])
    tracking = {g.tracking_identifier: g.tracking_uid for g in sr.content.get_planar_roi_measurement_groups()}
    for seg, image, source in zip(segs, result.images, sources):
        assert seg.get_source_image_uids()[0][2] == image.sop_instance_uid
        assert seg.SegmentationType == "BINARY"
        assert list(seg.PatientOrientation) == list(source.PatientOrientation)
        measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        assert [float(v) for v in measures.PixelSpacing] == [0.07, 0.07]
        assert float(measures.SliceThickness) > 0
        assert seg.number_of_segments == len(image.rois)  # none failed
        for number, roi in enumerate(image.rois, start=1):
            desc = seg.get_segment_description(number)
            assert desc.segment_label == roi.display_name
            assert desc.segmented_property_category.value == "49755003"
            assert desc.segmented_property_type.value == "129770007"
            assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
            assert desc.algorithm_identification[0].AlgorithmName == MODEL.name
            assert tracking[desc.tracking_id] == desc.tracking_uid  # the SR group of the same ROI
        masks = seg.get_pixels_by_source_instance([image.sop_instance_uid], combine_segments=False)[0]
        assert masks.shape == (*SHAPE, len(image.rois))
        for number, roi in enumerate(image.rois):
            np.testing.assert_array_equal(masks[..., number] > 0, image.roi_mask(roi))
    # the empty segment (ROI "D", no calcification) still has its (all-zero) frame
    assert int(segs[1].NumberOfFrames) == 2
    assert segment_masks(pydicom.dcmread(outputs(written, "SEG")[1]))[2].sum() == 0


def test_seg_layout_matches_highdicom_cr_example(written, interop):
    reference = pydicom.dcmread(interop / "seg" / "highdicom_seg_image_cr_binary.dcm")
    ours = pydicom.dcmread(outputs(written, "SEG")[0])
    top = lambda ds: {e.keyword for e in ds}
    # attributes the reference copied from its CR source (Patient / Patient Study / General Study
    # modules, optional there) that our synthetic MG sources do not carry
    from_its_source = {"AdditionalPatientHistory", "DeidentificationMethod", "PatientAge", "PatientComments",
                       "PatientIdentityRemoved", "StudyDescription"}
    assert top(reference) - top(ours) == from_its_source
    # what we add: the PatientOrientation fix, equipment, description, creation date, LUT shape
    assert top(ours) - top(reference) <= {"PatientOrientation", "ContributingEquipmentSequence",
                                          "SeriesDescription", "InstanceCreationDate", "InstanceCreationTime",
                                          "PresentationLUTShape"}

    def macros(ds):
        found = set()
        for group in [*ds.SharedFunctionalGroupsSequence, *ds.PerFrameFunctionalGroupsSequence]:
            found |= top(group)
        return found
    # the pixel-measures fix, and the plane orientation OHIF needs (sr_templates/seg.py)
    assert macros(ours) - macros(reference) == {"PixelMeasuresSequence", "PlaneOrientationSequence"}
    assert macros(reference) <= macros(ours)


# ----------------------------------------------------------------------------- TID 1500

def _all_items(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _all_items(item)


def test_tid1500_reads_back_with_highdicom(written):
    result, sources = written["result"], written["sources"]
    [path] = outputs(written, "SR")
    sr = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(path))
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 4
    segs = {pydicom.dcmread(p).SourceImageSequence[0].ReferencedSOPInstanceUID: pydicom.dcmread(p)
            for p in outputs(written, "SEG")}
    for group, (image, roi) in zip(groups, result.rois):
        assert group.tracking_identifier.startswith(roi.display_name)
        assert group.finding_type.value == "129769006"
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        evals = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        assert values["Number of calcifications"] == roi.n_calcifications
        assert values.get("Threshold Value") == (None if roi.threshold is None else pytest.approx(0.4))
        if roi.status == "ok":
            assert values["Actionable calcification cluster score"] == pytest.approx(roi.score)
            assert evals["Decision at operating point"] == codes.DECISION_CODES[roi.decision].meaning
            assert evals["Analysis status"] == "Analysed"
        else:
            assert "Actionable calcification cluster score" not in values
            assert evals["Analysis status"] == "Not assessable"
            comments = [i.TextValue for i in _all_items(group[0]) if i.ValueType == "TEXT"
                        and i.ConceptNameCodeSequence[0].CodeValue == "121106"]
            assert any(roi.reason in c for c in comments)
        # the ROI on its source image
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        np.testing.assert_allclose(region.value, closed_outline(roi))
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
            image.sop_instance_uid
        # the ROI's frame of the SEG of that image
        frame = hd.sr.ReferencedSegmentationFrame.from_sequence(group[0].ContentSequence)
        seg = segs[image.sop_instance_uid]
        assert frame.referenced_sop_instance_uid == seg.SOPInstanceUID
        number = image.rois.index(roi) + 1
        assert frame.referenced_frame_numbers == [number]
        assert seg.SegmentSequence[number - 1].TrackingUID == group.tracking_uid
    assert evals and "Calcification Type" in {q.name.meaning for q in groups[0].get_qualitative_evaluations()}
    # the model: name, version, and the clinical-use flag in its parameters
    names = [i.TextValue for i in _all_items(groups[0][0]) if i.ValueType == "TEXT"]
    assert MODEL.name in names and MODEL.version in names
    assert any("NOT FOR CLINICAL USE" in n for n in names)


def _elements(ds, prefix=""):
    """Every element of ``ds`` and its sequences as {path: value}, dates and times left out."""
    out = {}
    for element in ds:
        key = prefix + (element.keyword or str(element.tag))
        if element.VR == "SQ":
            for k, item in enumerate(element.value):
                out.update(_elements(item, f"{key}[{k}]."))
        elif "Date" not in key and "Time" not in key:
            out[key] = element.value
    return out


def test_tid1500_document_equals_highdicoms_own_construction(monkeypatch):
    """highdicom makes the report's document from the root item alone and the content tree is
    attached afterwards (measurement_report._without_children); given the whole tree, as its
    API intends, highdicom makes the same data set, file meta included."""
    from sr_templates import measurement_report

    sources = source_images()
    result = study_result(sources)
    segs = {ds.SourceImageSequence[0].ReferencedSOPInstanceUID: ds
            for kind, ds in build_study_results(result, sources, gsps=False) if kind == "SEG"}
    ours = measurement_report.build_measurement_report(result, sources, segs)
    monkeypatch.setattr(measurement_report, "_without_children", lambda root: root)
    theirs = measurement_report.build_measurement_report(result, sources, segs)
    assert type(theirs).__name__ == "Dataset"
    assert len(_elements(ours)) > 300
    assert _elements(ours) == _elements(theirs)
    assert _elements(ours.file_meta) == _elements(theirs.file_meta)
    evidence = {sop.ReferencedSOPInstanceUID for study in ours.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}
    assert evidence == {ds.SOPInstanceUID for ds in sources} | {ds.SOPInstanceUID for ds in segs.values()}


def test_tid1500_refuses_a_reference_without_evidence():
    from pydicom.dataset import Dataset

    from sr_templates.measurement_report import _check_references

    image = Dataset()
    image.ValueType = "IMAGE"
    reference = Dataset()
    reference.ReferencedSOPInstanceUID = "1.2.3.4"
    image.ReferencedSOPSequence = [reference]
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = [image]
    root = Dataset()
    root.ContentSequence = [container]
    known = Dataset()
    known.SOPInstanceUID = "1.2.3.4"
    _check_references(root, [known])  # referenced and in the evidence: fine
    known.SOPInstanceUID = "1.2.3.5"
    with pytest.raises(ValueError, match="1.2.3.4, which is not in its evidence"):
        _check_references(root, [known])


def test_tid1500_has_no_segment_number_next_to_frame_number(written):
    ds = pydicom.dcmread(outputs(written, "SR")[0])
    refs = [ref for item in _all_items(ds) for ref in item.get("ReferencedSOPSequence", [])]
    with_frames = [ref for ref in refs if "ReferencedFrameNumber" in ref]
    assert with_frames, "the SEG frames are referenced"
    assert not [ref for ref in with_frames if "ReferencedSegmentNumber" in ref]


def _structure(path):
    ds = pydicom.dcmread(path)
    root_name = ds.ConceptNameCodeSequence[0].CodeValue
    root_containers = {i.ConceptNameCodeSequence[0].CodeValue for i in ds.ContentSequence
                       if i.ValueType == "CONTAINER"}
    measurements = [i for i in ds.ContentSequence if i.ValueType == "CONTAINER"
                    and i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    groups = [g for m in measurements for g in m.ContentSequence]
    group_names = [{g.ConceptNameCodeSequence[0].CodeValue for g in groups}]
    item_names = [{i.ConceptNameCodeSequence[0].CodeValue for i in g.ContentSequence} for g in groups]
    template = ds.ContentTemplateSequence[0].TemplateIdentifier
    return root_name, root_containers, group_names, item_names, template


def test_tid1500_structure_matches_dcmqi_and_highdicom_examples(written, interop):
    references = [interop / "sr" / name for name in ("dcmqi_tid1500_sr_example.dcm", "highdicom_sr_document.dcm",
                                                     "highdicom_sr_document_with_multiple_groups.dcm")]
    root, containers, group_names, item_names, template = _structure(outputs(written, "SR")[0])
    assert (root, template) == ("126000", "1500")  # Imaging Measurement Report, TID 1500
    assert group_names == [{"125007"}]  # every group is a "Measurement Group"
    for ref in references:
        ref_root, ref_containers, ref_group_names, ref_items, ref_template = _structure(ref)
        assert (ref_root, ref_template) == (root, template)
        assert ref_containers <= containers  # Image Library, Imaging Measurements
        assert ref_group_names == group_names
        # the TID 1500 / TID 1410 backbone: every group, theirs and ours, is tracked ...
        tracked = {"112039", "112040"}  # Tracking Identifier, Tracking Unique Identifier
        assert all(tracked <= items for items in ref_items + item_names)
        # ... and names its Finding (121071) like ours; the planar highdicom example also
        # gives its ROI as an Image Region SCOORD (111030), as we do
        shared = set.union(*ref_items) & set.intersection(*item_names)
        assert tracked | {"121071"} <= shared
        if ref.name == "highdicom_sr_document.dcm":
            assert "111030" in shared


# ----------------------------------------------------------------------------- Mammography CAD SR

def _code(item, attr="ConceptNameCodeSequence"):
    seq = item.get(attr)
    return (seq[0].CodeValue, seq[0].CodingSchemeDesignator) if seq else None


def _children(item, value=None, name=None):
    out = []
    for child in item.get("ContentSequence", []):
        if name is not None and _code(child) != (name.value, name.scheme_designator):
            continue
        if value is not None and _code(child, "ConceptCodeSequence") != (value.value, value.scheme_designator):
            continue
        out.append(child)
    return out


def _resolve(ds, path):
    node = ds
    for index in path[1:]:
        node = node.ContentSequence[index - 1]
    return node


def test_cad_sr_content(written):
    result = written["result"]
    [ds] = read(written, "CADSR")
    assert ds.SOPClassUID == MAMMOGRAPHY_CAD_SR
    assert _code(ds) == ("111036", "DCM") and ds.ContentTemplateSequence[0].TemplateIdentifier == "4000"
    [library] = _children(ds, name=codes.IMAGE_LIBRARY)
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in library.ContentSequence] == \
        [im.sop_instance_uid for im in result.images]
    [summary] = _children(ds, name=codes.CAD_PROCESSING_AND_FINDINGS_SUMMARY)
    assert _code(summary, "ConceptCodeSequence") == ("111242", "DCM")  # all succeeded, with findings
    impressions = _children(summary, name=codes.INDIVIDUAL_IMPRESSION_RECOMMENDATION)
    scored = [(im, roi) for im, roi in result.rois if roi.status == "ok"]
    assert len(impressions) == len(scored) == 2
    for impression, (image, roi) in zip(impressions, scored):
        [finding] = _children(impression, name=codes.SINGLE_IMAGE_FINDING, value=codes.CALCIFICATION_CLUSTER)
        [intent] = _children(finding, name=codes.RENDERING_INTENT)
        operating_points = _children(intent, name=codes.CAD_OPERATING_POINT)
        if roi.decision == "actionable":
            assert _code(intent, "ConceptCodeSequence") == ("111150", "DCM") and not operating_points
        else:
            assert _code(intent, "ConceptCodeSequence") == ("111151", "DCM")
            assert float(operating_points[0].MeasuredValueSequence[0].NumericValue) == 1
        [certainty] = _children(finding, name=codes.CERTAINTY_OF_FINDING)
        assert float(certainty.MeasuredValueSequence[0].NumericValue) == pytest.approx(roi.score * 100)
        [count] = _children(finding, name=codes.NUMBER_OF_CALCIFICATIONS)
        assert int(float(count.MeasuredValueSequence[0].NumericValue)) == roi.n_calcifications
        [outline] = _children(finding, name=codes.OUTLINE)
        np.testing.assert_allclose(np.reshape(outline.GraphicData, (-1, 2)), closed_outline(roi))
        [selected] = outline.ContentSequence
        assert selected.RelationshipType == "SELECTED FROM"
        target = _resolve(ds, list(selected.ReferencedContentItemIdentifier))
        assert target.ValueType == "IMAGE"
        assert target.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.sop_instance_uid
    [detections] = _children(ds, name=codes.SUMMARY_OF_DETECTIONS)
    assert _code(detections, "ConceptCodeSequence") == ("111222", "DCM")
    [analyses] = _children(ds, name=codes.SUMMARY_OF_ANALYSES)
    assert _code(analyses, "ConceptCodeSequence") == ("111222", "DCM")
    [successful] = _children(analyses, name=codes.SUCCESSFUL_ANALYSES)
    [performed] = _children(successful, name=codes.ANALYSIS_PERFORMED)
    texts = [c.TextValue for c in performed.ContentSequence if c.get("ValueType") == "TEXT"]
    assert MODEL.name in texts and MODEL.version in texts and any("NOT FOR CLINICAL USE" in t for t in texts)


def test_failed_rois_and_images_are_reported(tmp_path):
    need_tool(DCIODVFY)
    sources = source_images()
    failed = RoiResult(roi_id="ann1-obj3", referenced_sop_instance_uid=sources[0].SOPInstanceUID,
                       outline_px=square(5, 5, 20, 20), status="failed", reason="feature extraction crashed")
    result = study_result(sources, extra_rois=[failed])
    # image 2: the segmentation itself failed, so its ROIs failed too
    uid1 = sources[1].SOPInstanceUID
    image1 = ImageResult(sop_instance_uid=uid1, shape=SHAPE, label_image=None, rois=[
        replace(roi, status="failed", score=None, decision=None, calcification_labels=(),
                n_calcifications=None, assessable=None,  # derived again
                reason="segmentation failed: out of memory") for roi in result.images[1].rois])
    result = replace(result, images=(result.images[0], image1))
    paths = write_study_results(result, sources, tmp_path / "partial")
    assert [kind_of(p) for p in paths] == ["SEG", "SR", "CADSR", "GSPS", "GSPS"]  # no SEG for image 2
    for path in paths:
        assert not error_lines(run([DCIODVFY, str(path)])), path.name
    seg = hd.seg.segread(paths[0])
    assert seg.number_of_segments == 2  # the failed ROI has no segment

    ds = pydicom.dcmread(paths[2])
    [summary] = _children(ds, name=codes.CAD_PROCESSING_AND_FINDINGS_SUMMARY)
    assert _code(summary, "ConceptCodeSequence") == ("111244", "DCM")  # not all succeeded; with findings
    assert len(_children(summary, name=codes.INDIVIDUAL_IMPRESSION_RECOMMENDATION)) == 1
    for name, failed_name, failed_uid in ((codes.SUMMARY_OF_ANALYSES, codes.FAILED_ANALYSES, sources[0]),
                                          (codes.SUMMARY_OF_DETECTIONS, codes.FAILED_DETECTIONS, sources[1])):
        [summary] = _children(ds, name=name)
        assert _code(summary, "ConceptCodeSequence") == ("111223", "DCM")  # partially succeeded
        [failed_container] = _children(summary, name=failed_name)
        [performed] = failed_container.ContentSequence
        [ref] = [c for c in performed.ContentSequence if "ReferencedContentItemIdentifier" in c]
        target = _resolve(ds, list(ref.ReferencedContentItemIdentifier))
        assert target.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == failed_uid.SOPInstanceUID

    sr = hd.sr.srread(paths[1])
    statuses = [{q.name.meaning: q.value.meaning for q in g.get_qualitative_evaluations()}["Analysis status"]
                for g in sr.content.get_planar_roi_measurement_groups()]
    assert statuses == ["Analysed", "Not assessable", "Analysis failed", "Analysis failed", "Analysis failed"]
    gsps_text = [a.TextObjectSequence[0].UnformattedTextValue
                 for a in pydicom.dcmread(paths[4]).GraphicAnnotationSequence]
    assert all("analysis failed: segmentation failed: out of memory" in t for t in gsps_text)

    # a whole-study failure: every object that can still be written says so, and validates
    broken = StudyResult(study_instance_uid=STUDY_UID, images=(), model=MODEL,
                         started=datetime(2026, 1, 2), finished=datetime(2026, 1, 2),
                         failure="the model bundle could not be loaded")
    paths = write_study_results(broken, sources, tmp_path / "broken")
    assert [kind_of(p) for p in paths] == ["SR", "CADSR"]
    for path in paths:
        assert not error_lines(run([DCIODVFY, str(path)])), path.name
    cad = pydicom.dcmread(paths[1])
    [summary] = _children(cad, name=codes.CAD_PROCESSING_AND_FINDINGS_SUMMARY)
    assert _code(summary, "ConceptCodeSequence") == ("111245", "DCM")  # no algorithm succeeded
    sr_text = [i.TextValue for i in _all_items(pydicom.dcmread(paths[0])) if i.ValueType == "TEXT"]
    assert any("the model bundle could not be loaded" in t for t in sr_text)


# ----------------------------------------------------------------------------- codes

def _norm(meaning):
    """Code meaning for comparison: case, pydicom's zero-width spaces and SNOMED CT semantic tags
    ("Source (attribute)") do not matter."""
    meaning = meaning.replace("\u200b", "").strip().lower()
    return re.sub(r"\s*\((attribute|finding|qualifier value|body structure|procedure|morphologic abnormality)\)$",
                  "", meaning)


def _pydicom_meanings(code):
    table = concepts.get(code.scheme_designator, {})
    return {_norm(entry[code.value][0]) for entry in table.values() if code.value in entry}


def test_standard_codes_match_pydicoms_dictionary():
    assert len(codes.STANDARD_CODES) > 60
    for name, code in codes.STANDARD_CODES.items():
        assert _norm(code.meaning) in _pydicom_meanings(code), f"{name}: {code}"
    for cid, members in codes.CONTEXT_GROUPS.items():
        for code in members:
            keywords = {kw for kw, entry in concepts[code.scheme_designator].items() if code.value in entry}
            assert keywords & set(cid_concepts[cid].get(code.scheme_designator, [])), f"CID {cid}: {code}"


def test_codes_pydicom_lacks_are_documented_and_really_missing():
    for name, (code, citation) in codes.CODES_NOT_IN_PYDICOM.items():
        assert not _pydicom_meanings(code), f"{name} is in pydicom now: move it to STANDARD_CODES"
        assert re.search(r"PS3\.16 (TID|CID) \d+", citation), name
    for code in codes.PRIVATE_CODES.values():
        assert code.scheme_designator == codes.PRIVATE_SCHEME and codes.PRIVATE_SCHEME.startswith("99")


def test_every_code_written_is_in_a_checked_table(written):
    known = {(c.value, c.scheme_designator): _norm(c.meaning) for c in codes.STANDARD_CODES.values()}
    known |= {(c.value, c.scheme_designator): _norm(c.meaning) for c, _ in codes.CODES_NOT_IN_PYDICOM.values()}
    known |= {(c.value, c.scheme_designator): _norm(c.meaning) for c in codes.PRIVATE_CODES.values()}
    # codes highdicom itself puts in (TID 1500 scaffolding, SEG derivation) are checked against pydicom
    seen = 0
    for kind in ("SR", "CADSR"):
        for ds in read(written, kind):
            for item in ds.iterall():
                if item.keyword in ("ConceptNameCodeSequence", "ConceptCodeSequence",
                                    "MeasurementUnitsCodeSequence"):
                    for code in item.value:
                        key = (code.CodeValue, code.CodingSchemeDesignator)
                        seen += 1
                        if key in known:
                            assert _norm(code.CodeMeaning) == known[key], key
                        else:
                            meanings = _pydicom_meanings(
                                pydicom.sr.coding.Code(code.CodeValue, code.CodingSchemeDesignator, ""))
                            assert meanings or code.CodingSchemeDesignator in ("RFC5646", "UCUM"), key
    assert seen > 100
    [sr] = read(written, "SR")
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == codes.PRIVATE_SCHEME


# ----------------------------------------------------------------------------- identity

def test_rerun_gives_identical_uids_and_new_inputs_new_ones():
    sources = source_images()
    first = build_study_results(study_result(sources), sources)
    again = build_study_results(study_result(source_images()), source_images())
    uids = lambda objects: [(k, ds.SeriesInstanceUID, ds.SOPInstanceUID) for k, ds in objects]
    assert uids(first) == uids(again)
    assert len({u for _, _, u in uids(first)}) == len(first)  # all distinct
    # tracking UIDs (SEG segments, SR groups, GSPS graphics) are stable too
    assert [s.TrackingUID for s in first[0][1].SegmentSequence] == \
        [s.TrackingUID for s in again[0][1].SegmentSequence]

    moved = build_study_results(study_result(sources, roi_a_outline=square(24, 25, 50, 50)), sources)
    assert not {u for _, _, u in uids(moved)} & {u for _, _, u in uids(first)}
    newer = build_study_results(study_result(sources, model=replace(MODEL, version="0.2.0")), sources)
    assert not {u for _, _, u in uids(newer)} & {u for _, _, u in uids(first)}


def test_rerun_replaces_files_in_place(written, tmp_path):
    # the sources given as file paths this time (read without pixels)
    again = write_study_results(written["result"], written["source_paths"], written["paths"][0].parent)
    assert again == written["paths"]
    assert sorted(p.name for p in again[0].parent.iterdir()) == sorted(p.name for p in again)


# ----------------------------------------------------------------------------- GSPS and picture

def test_gsps_outlines_and_texts(written):
    result = written["result"]
    for ds, image in zip(read(written, "GSPS"), result.images):
        assert ds.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == \
            image.sop_instance_uid
        assert ds.GraphicLayerSequence[0].GraphicLayer == "CALCNODE"
        annotations = ds.GraphicAnnotationSequence
        assert len(annotations) == len(image.rois)
        for annotation, roi in zip(annotations, image.rois):
            graphics = annotation.GraphicObjectSequence
            assert len(graphics) == 1 + roi.n_calcifications  # ROI + one outline per calcification
            np.testing.assert_allclose(np.reshape(graphics[0].GraphicData, (-1, 2)), closed_outline(roi))
            text = annotation.TextObjectSequence[0].UnformattedTextValue
            assert "NOT FOR CLINICAL USE" in text
            if roi.status == "ok":
                assert f"score {roi.score:.2f}" in text and roi.decision in text
            else:
                assert roi.reason in text
        # each calcification outline encloses its 3x3 pixels: corners at the pixel edges
        calc = np.reshape(annotations[0].GraphicObjectSequence[1].GraphicData, (-1, 2))
        r, c = BLOBS[result.images.index(image)][0]
        assert calc[:, 0].min() == pytest.approx(c, abs=0.51) and calc[:, 0].max() == pytest.approx(c + 3, abs=0.51)
        assert calc[:, 1].min() == pytest.approx(r, abs=0.51) and calc[:, 1].max() == pytest.approx(r + 3, abs=0.51)


def test_overlay_png(written, tmp_path):
    source = written["sources"][0]
    [seg, _] = read(written, "SEG")
    [gsps, _] = read(written, "GSPS")
    plain = render_overlay_png(source, tmp_path / "plain.png")
    overlay = render_overlay_png(source, tmp_path / "overlay.png", seg=seg, gsps=gsps)
    import matplotlib.image as mpimg

    a, b = mpimg.imread(plain), mpimg.imread(overlay)
    assert a.shape == b.shape and a.shape[0] > 100
    changed = np.any(np.abs(a[..., :3] - b[..., :3]) > 0.1, axis=-1)
    assert 0.001 < changed.mean() < 0.5  # outlines, masks and texts drawn, the image still visible


def test_gsps_outline_drops_only_collinear_points():
    """A calcification outline keeps its corners and its closure; points on a straight run go."""
    from skimage import draw, measure

    from sr_templates.gsps import drop_collinear

    mask = np.zeros((16, 16))
    rr, cc = draw.disk((8, 8), 4.5)
    mask[rr, cc] = 1
    contour = measure.find_contours(mask, 0.5)[0]
    simple = drop_collinear(contour)
    assert len(simple) < len(contour) / 2
    assert np.array_equal(simple[0], simple[-1])
    # only contour points are kept, and the outline encloses the same area
    kept = {tuple(p) for p in simple}
    assert kept <= {tuple(p) for p in contour}
    from matplotlib.path import Path as MplPath

    grid = np.stack(np.meshgrid(np.linspace(0, 16, 161), np.linspace(0, 16, 161)), -1).reshape(-1, 2)
    assert np.array_equal(MplPath(contour).contains_points(grid), MplPath(simple).contains_points(grid))
    square = np.array([[0, 0], [0, 1], [0, 2], [1, 2], [2, 2], [2, 1], [2, 0], [1, 0], [0, 0]], float)
    assert drop_collinear(square).tolist() == [[0, 0], [0, 2], [2, 2], [2, 0], [0, 0]]


def test_seg_from_label_map_equals_seg_from_mask_stack(monkeypatch):
    """segment_pixels hands highdicom a label map when no calcification is in two ROIs: the SEG
    must be the one the stack of masks gives (same frames, same bits, SegmentsOverlap NO); with a
    shared calcification the stack is used and highdicom says the segments overlap."""
    from sr_templates import seg as seg_module

    sources = source_images()
    result = study_result(sources)
    stacked = lambda image, rois: np.stack([image.roi_mask(r) for r in rois], axis=-1)[np.newaxis]  # noqa: E731
    for image, source in zip(result.images, sources):
        rois = seg_module.segmented_rois(image)
        assert seg_module.segment_pixels(image, rois).ndim == 3            # the label map path
        fast = seg_module.build_segmentation(result, image, source)
        with monkeypatch.context() as m:
            m.setattr(seg_module, "segment_pixels", stacked)
            slow = seg_module.build_segmentation(result, image, source)
        assert fast.PixelData == slow.PixelData and fast.NumberOfFrames == slow.NumberOfFrames == len(rois)
        assert fast.SegmentsOverlap == slow.SegmentsOverlap == "NO"
    # ROI "B" also claims cluster A's calcification 1: the masks overlap
    image = result.images[0]
    image = replace(image, rois=(image.rois[0], replace(image.rois[1], calcification_labels=(1, 4), n_calcifications=2),
                                 *image.rois[2:]))
    result = replace(result, images=(image, *result.images[1:]))
    rois = seg_module.segmented_rois(image)
    pixels = seg_module.segment_pixels(image, rois)
    assert pixels.ndim == 4 and pixels[0, ..., 0].sum() == 27 and pixels[0, ..., 1].sum() == 18
    assert seg_module.build_segmentation(result, image, sources[0]).SegmentsOverlap == "YES"


def test_each_seg_has_its_own_series_and_a_plane_orientation(written):
    """What OHIF needs to show a SEG (sr_templates/seg.py; tests/test_viewer_ohif.py shows it):
    one SEG per series (OHIF reads only a series' last SEG) and a Plane Orientation."""
    segs = read(written, "SEG")
    assert len(segs) >= 2
    assert len({ds.SeriesInstanceUID for ds in segs}) == len(segs)
    assert {ds.SeriesNumber for ds in segs} == {9101}
    for ds in segs:
        [orientation] = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
        assert [float(v) for v in orientation.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
