"""`calcnode analyze` and `analysis.study` on a simulated study, with the bundle of
tests/test_train_classifier.py (built once per session)."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pydicom
import pytest

import roi_factory as rf
from analysis.classify import ClassifierBundle
from analysis.study import study_analysis
from conftest import need_tool
from test_train_classifier import classifier_world, run

DCIODVFY = "/usr/bin/dciodvfy"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return classifier_world(tmp_path_factory)


@pytest.fixture(scope="module")
def study(world):
    """A patient's images with ROIs, one of its images without, the GSPS files and the labelled ROIs."""
    with open(world.data / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    for patient in sorted({r["patient_id"] for r in rows}):
        mine = [r for r in rows if r["patient_id"] == patient]
        with_roi = sorted({r["image_file"] for r in mine})
        folder = (world.data / with_roi[0]).parent
        without = sorted(p for p in folder.glob("MG_*.dcm") if str(p.relative_to(world.data)) not in with_roi)
        if without:
            return {"images": [world.data / f for f in with_roi], "no_roi": without[0],
                    "gsps": sorted({world.data / r["roi_file"] for r in mine}), "rows": mine}
    pytest.fail("no simulated patient with an image without ROI")


@pytest.fixture(scope="module")
def analyzed(world, study, tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "results"
    result = run("analyze", *study["images"], study["no_roi"], "--roi", *study["gsps"], "--model", world.bundle,
                 "--json", "--out", out)
    return result, out


def test_analyze_json_gives_one_object_per_roi(world, study, analyzed):
    result, _ = analyzed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    bundle = ClassifierBundle.load(world.bundle)
    # every labelled ROI, and for the image without ROI its detected clusters (the default no-ROI
    # policy), or one record saying no cluster was detected: never a whole-breast region
    drawn = [r for r in records if Path(r["image"]) != study["no_roi"]]
    expected = {(r["image_sop_instance_uid"], f"ann1-obj{r['roi_id']}") for r in study["rows"]}
    assert len(drawn) == len(study["rows"]) and {(r["sop_instance_uid"], r["roi_id"]) for r in drawn} == expected
    assert all(r["roi_kind"] != "detected_cluster" and r["detection_confidence"] is None
               and r["cluster_detection"] is None for r in drawn)
    other = [r for r in records if Path(r["image"]) == study["no_roi"]]
    assert other and not any(r["roi_kind"] == "whole_breast" for r in records)
    if other[0]["roi_id"] is None:
        assert len(other) == 1 and other[0]["cluster_detection"] == "no_cluster_detected"
        assert other[0]["score"] is None and other[0]["decision"] is None
    else:
        assert [r["roi_id"] for r in other] == [f"cluster-{k}" for k in range(1, len(other) + 1)]
        assert all(r["roi_kind"] == "detected_cluster" and 0 <= r["detection_confidence"] <= 1
                   and r["cluster_detection"] == "clusters_detected" for r in other)
    for r in records:
        if r["roi_id"] is None:
            continue
        assert set(r) >= {"image", "roi_id", "calcifications", "score", "decision", "assessable", "reason", "model"}
        assert r["model"] == {"name": "test-classifier", "version": "0.0.1", "sha256": bundle.sha256,
                              "not_for_clinical_use": True}
        assert r["assessable"] == (r["status"] == "ok") == (r["score"] is not None)
        if r["assessable"]:
            assert r["calcifications"] >= 2 and 0 <= r["score"] <= 1 and r["threshold"] == bundle.threshold
            assert r["decision"] == ("actionable" if r["score"] >= bundle.threshold else "benign")
            assert r["top_features"] and all(t["feature"] in bundle.feature_names for t in r["top_features"])
        else:
            assert r["reason"] and r["decision"] is None
    assert "NOT FOR CLINICAL USE" in result.stderr and "Traceback" not in result.stderr


def test_analyze_out_writes_dicom_results_that_pass_dciodvfy(study, analyzed):
    need_tool(DCIODVFY)
    _, out = analyzed
    files = sorted(out.glob("*.dcm"))
    kinds = [f.name.split("-")[0] for f in files]
    n_images = len(study["images"]) + 1
    # the image without ROI has a SEG when a cluster was detected on it, and a GSPS either way
    # (its clusters, or "No calcification cluster detected")
    assert kinds.count("SEG") in (n_images - 1, n_images) and kinds.count("SR") == 1 and kinds.count("CADSR") == 1
    assert kinds.count("GSPS") == n_images
    for f in files:
        check = subprocess.run([DCIODVFY, str(f)], capture_output=True, text=True)
        errors = [line for line in (check.stdout + check.stderr).splitlines() if "Error" in line]
        assert not errors, (f.name, errors)
    sr = pydicom.dcmread(next(f for f in files if f.name.startswith("SR-")))
    source = pydicom.dcmread(study["images"][0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert "NOT FOR CLINICAL USE" in sr.SeriesDescription


def test_empty_roi_is_not_assessable_and_a_bad_roi_is_reported_without_losing_the_others(world, study, tmp_path):
    image = study["images"][0]
    header = pydicom.dcmread(image, stop_before_pixels=True)
    uid, cols = header.SOPInstanceUID, int(header.Columns)
    laterality = header.get("ImageLaterality", "L")
    x0 = cols - 40 if laterality == "L" else 5  # the corner away from the chest wall: air, no calcification
    gsps = rf.make_gsps([rf.annotation([
        rf.graphic_object("POLYLINE", [(x0, 5), (x0 + 30, 5), (x0 + 30, 35), (x0, 35), (x0, 5)]),
        rf.graphic_object("CIRCLE", [(100, 100), (110, 100), (120, 100)]),  # unreadable: 3 points
        rf.graphic_object("POLYLINE", [(100.2, 100.2), (100.4, 100.4)]),  # readable, encloses no pixel
    ], images=[uid], layer="TEST")])
    path = rf.save(gsps, tmp_path / "extra.dcm")
    found = study_analysis([image], [path], None, world.bundle)
    rois = {roi.roi_id: roi for _, roi in found.result.rois}
    assert set(rois) == {"ann1-obj1", "ann1-obj3"}
    empty = rois["ann1-obj1"]
    assert empty.status == "not_assessable" and not empty.assessable and empty.score is None
    assert empty.n_calcifications == 0 and empty.reason == "no calcification in the ROI; at least 2 are needed"
    failed = rois["ann1-obj3"]
    assert failed.status == "failed" and "encloses no pixel" in failed.reason and failed.score is None
    assert len(found.problems) == 1 and "object 2" in found.problems[0] and "CIRCLE" in found.problems[0]
    assert any("object 2" in w for w in found.result.warnings)
    # the study's own GSPS is still read beside the bad one
    both = study_analysis([image], [path, *study["gsps"]], None, world.bundle)
    ids = [roi.roi_id for _, roi in both.result.rois]
    assert len(ids) == len(set(ids)) == 2 + sum(r["image_sop_instance_uid"] == uid for r in study["rows"])
    assert {"ann1-obj1-src1", "ann1-obj3-src1", "ann1-obj1-src2"} <= set(ids)
    assert both.result.model.sha256 == ClassifierBundle.load(world.bundle).sha256


def test_analysis_segments_with_the_bundles_hdog_parameters_and_warns_on_other_settings(world, study,
                                                                                        monkeypatch):
    """A bundle trained with other HDoG parameters is analysed with them (no warning); a code
    setting that differs from the bundle's record (ROI growth here) is named in a warning."""
    from analysis.classify import SEGMENTATION_FILE
    from analysis.segmentation import HDoGParams, pipeline, settings

    trained = ClassifierBundle.load(world.bundle)
    strict = HDoGParams(dog_threshold=0.009)
    bundle = ClassifierBundle.create(
        name=trained.name, version=trained.version, threshold=trained.threshold, aggregator=trained.aggregator,
        booster=trained.lightgbm_text, impute=trained.impute, feature_params=trained.feature_params,
        parameters=trained.parameters, training_summary=trained.training_summary,
        training_data=trained.training_data, segmentation_model_path=world.bundle / SEGMENTATION_FILE,
        hdog_params=strict)
    seen = []
    real = pipeline.segment
    monkeypatch.setattr(pipeline, "segment", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    images, gsps = study["images"][:1], study["gsps"]
    found = study_analysis(images, gsps, None, bundle).result
    assert seen == [strict] and not any("is not the one" in w for w in found.warnings)
    assert found.parameters["segmentation_cnn"] == bundle.segmentation_sha256 != trained.segmentation_sha256
    assert not any("is not the one" in w for w in study_analysis(images, gsps, None, trained).result.warnings)
    assert seen[1:] == [HDoGParams()]
    monkeypatch.setattr(settings, "REGION_GROWTH_MM", 1.5)
    warned = study_analysis(images, gsps, None, trained).result.warnings
    assert any("is not the one the classifier was trained with" in w for w in warned)


def test_image_without_roi_is_skipped_on_request(world, study):
    found = study_analysis([study["no_roi"]], [], None, world.bundle, no_roi="skip")
    assert found.result.images == () and found.result.failure
    assert any("no ROI: not analysed" in w for w in found.result.warnings)


def test_under_skip_an_image_without_roi_is_not_decoded(world, study, tmp_path):
    # the image without ROI has a readable header and pixel data cut short: decoding would fail
    data = study["no_roi"].read_bytes()
    cut = tmp_path / "no_roi_cut.dcm"
    cut.write_bytes(data[:len(data) - 100_000])
    skip = study_analysis([*study["images"], cut], study["gsps"], None, world.bundle, no_roi="skip")
    assert skip.problems == () and len(skip.result.images) == len(study["images"])
    assert any("no ROI: not analysed (no_roi = skip)" in w for w in skip.result.warnings)
    assert {roi.roi_id for _, roi in skip.result.rois} == {
        roi.roi_id for _, roi in study_analysis(study["images"], study["gsps"], None, world.bundle).result.rois}
    whole = study_analysis([*study["images"], cut], study["gsps"], None, world.bundle, no_roi="whole_breast")
    assert len(whole.problems) == 1 and "truncated" in whole.problems[0]


def test_analyze_errors_are_one_line_without_traceback(world, study, tmp_path):
    result = run("analyze", tmp_path / "missing.dcm", "--model", world.bundle, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "missing.dcm: no such file" in result.stderr and result.stdout == ""
    result = run("analyze", study["no_roi"], "--model", tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a classifier bundle" in result.stderr


def test_analyze_takes_a_study_folder_as_exported(world, study, analyzed, tmp_path):
    """`calcnode analyze FOLDER`: images and GSPS mixed, as a PACS exports a study (and a file that is
    not DICOM, and a DICOM object that is neither): the same per-ROI results as with --roi, exit 0."""
    import shutil

    folder = tmp_path / "export" / "study"
    folder.mkdir(parents=True)
    for path in [*study["images"], study["no_roi"], *study["gsps"]]:
        shutil.copy(path, folder / path.name)
    (folder / "README.txt").write_text("exported by a PACS\n")
    sr = pydicom.dcmread(next(iter(analyzed[1].glob("SR-*.dcm"))))  # a DICOM object, neither MG nor ROI
    sr.save_as(folder / "other.dcm")
    result = run("analyze", tmp_path / "export", "--model", world.bundle, "--json")
    assert result.returncode == 0, result.stderr
    assert "ignored" in result.stderr and "README.txt" in result.stderr and "other.dcm" in result.stderr

    def per_roi(stdout):
        return sorted((r["sop_instance_uid"], r["roi_id"], r["status"], r["score"], r["calcifications"])
                      for r in map(json.loads, stdout.splitlines()) if r["roi_id"])

    assert per_roi(result.stdout) == per_roi(analyzed[0].stdout)


def test_image_coarser_than_the_method_supports_says_so_in_the_output_and_the_sr(world, study, tmp_path):
    """Film digitised at 0.2 mm: not segmented into a meaningless result; every ROI, the CLI line, the
    JSON reason and the SR say the spacing, the supported limit and why."""
    from analysis.segmentation.spacing import max_pixel_spacing_mm

    coarse = []
    for path in [*study["images"], study["no_roi"]]:
        ds = pydicom.dcmread(path)
        ds.ImagerPixelSpacing = [0.2, 0.2]
        ds.save_as(tmp_path / path.name)
        coarse.append(tmp_path / path.name)
    found = study_analysis(coarse, study["gsps"], None, world.bundle).result
    rois = [roi for _, roi in found.rois]
    assert rois and all(r.status == "failed" and r.score is None for r in rois)
    limit = f"{max_pixel_spacing_mm():.3g} mm"
    for roi in rois:
        assert "pixel spacing 0.2 mm" in roi.reason and limit in roi.reason and "0.41 px" in roi.reason
    [without] = [im for im in found.images if not im.rois]
    assert without.cluster_detection == "detection_failed" and "pixel spacing 0.2 mm" in without.detection_failure

    out = tmp_path / "results"
    result = run("analyze", *coarse, "--roi", *study["gsps"], "--model", world.bundle, "--json", "--out", out)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all("coarser than the" in r["reason"] and limit in r["reason"] for r in records if r["roi_id"])
    srs = [pydicom.dcmread(p) for p in out.rglob("*.dcm")
           if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"]

    def texts(item):
        for child in item.get("ContentSequence", []):
            if "TextValue" in child:
                yield str(child.TextValue)
            yield from texts(child)

    assert srs and any("pixel spacing 0.2 mm is coarser than the" in t for t in texts(srs[0]))
    # and the image at its own spacing is analysed as before
    assert any(roi.status == "ok" for _, roi in study_analysis(study["images"], study["gsps"], None,
                                                                world.bundle).result.rois)
