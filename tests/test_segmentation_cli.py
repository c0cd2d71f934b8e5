"""Training, evaluating and running the segmenter end to end on a small simulated data set."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.segmentation.cnn import SegmentationModel
from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL
from conftest import CALCNODE, ROOT


def run(*args, check=True):
    result = subprocess.run(CALCNODE + list(map(str, args)), cwd=ROOT, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "data"
    run("synth", "--out", out, "--cases", 3, "--seed", 7, "--size", "768x640", "--quiet",
        "--types", "amorphous,punctate,fine_pleomorphic")
    return out


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory) -> Path:
    model = tmp_path_factory.mktemp("model") / "seg.pt"
    result = run("train-seg", "--data", small_data, "--out", model, "--max-epochs", 2, "--seed", 3)
    assert "epoch  1/2" in result.stderr and "NOT FOR CLINICAL USE" in result.stderr
    return model


def test_training_writes_a_small_documented_model(trained):
    assert trained.stat().st_size < 20e6
    model = SegmentationModel.load(trained)
    assert "NOT FOR CLINICAL USE" in model.info["notice"]
    assert 1 <= len(model.info["history"]) <= 2
    assert model.info["images"]["validation"] >= 1 and model.info["patches"]["training"] > 0
    assert model.info["patches"]["training_by_kind"]["calcification"] > 0


def test_evaluate_seg_reports_both_stages(trained, small_data, tmp_path):
    result = run("evaluate-seg", "--model", trained, "--data", small_data, "--out", tmp_path)
    summary = json.loads(result.stdout)
    report = json.loads((tmp_path / "segmentation_metrics.json").read_text())
    assert summary["truth_objects"] == report["truth_objects"] > 0
    hdog, cnn, whole = (report[k]["operating_point"] for k in ("hdog", "hdog_cnn", "hdog_cnn_whole"))
    for point in (hdog, cnn, whole):
        assert 0 <= point["sensitivity"] <= 1 and point["fp_per_cm2"] >= 0
    assert set(summary) >= {"hdog", "hdog_cnn", "hdog_cnn_whole"}
    # HDoGReg's rule only removes candidates: it can never find more or add false positives
    assert whole["sensitivity"] <= hdog["sensitivity"] and whole["fp_per_cm2"] <= hdog["fp_per_cm2"]
    assert hdog["sensitivity"] > 0.3  # HDoG finds calcifications of the simulator at all
    # per type, from the simulator's particle tables: every truth object has its type, and the
    # per-type figures add up to the overall operating points
    by_type = report["by_type"]
    assert by_type and set(by_type) - {"unknown"} <= {"amorphous", "punctate", "fine_pleomorphic"}
    assert by_type.get("unknown", {"objects": 0})["objects"] < report["truth_objects"]
    assert sum(row["objects"] for row in by_type.values()) == report["truth_objects"]
    for stage, point in (("hdog", hdog), ("hdog_cnn", cnn)):
        found = sum(row[f"{stage}_sensitivity"] * row["objects"] for row in by_type.values())
        assert found == pytest.approx(point["sensitivity"] * report["truth_objects"], abs=0.01)
    # every calcification the product misses at its operating point has exactly one cause
    for row in by_type.values():
        missed = row["objects"] - round(row["hdog_cnn_sensitivity"] * row["objects"])
        assert sum(row["hdog_cnn_missed_by_cause"].values()) == missed
        low, high = row["hdog_cnn_sensitivity_95ci"]
        assert low <= row["hdog_cnn_sensitivity"] <= high
        low, high = row["hdog_cnn_sensitivity_95ci_by_patient"]
        assert 0 <= low <= high <= 1
    assert report["patients"] == 3  # the small set's three cases
    with Image.open(tmp_path / "froc.png") as png:
        assert png.size[0] > 300


def test_segment_command_in_rois_and_whole_breast(trained, small_data, tmp_path):
    labels = (small_data / "labels.csv").read_text().splitlines()
    header = labels[0].split(",")
    row = dict(zip(header, labels[1].split(",")))
    image, roi = small_data / row["image_file"], small_data / row["roi_file"]
    result = run("segment", image, "--roi", roi, "--model", trained, "--json", "--out", tmp_path)
    summary = json.loads(result.stdout)
    assert summary["mode"] == "rois" and summary["rois"]
    assert sum(r["calcifications"] for r in summary["rois"]) <= summary["calcifications"]
    # the calcifications' area, not called "area_mm2": that is the ROI's own area in `calcnode rois`
    assert all("area_mm2" not in r and r["calcification_area_mm2"] >= 0 for r in summary["rois"])
    assert all(r["calcification_area_mm2"] > 0 for r in summary["rois"] if r["calcifications"])
    with np.load(tmp_path / "labels.npz") as npz:
        assert npz["labels"].max() == summary["calcifications"]
    assert (tmp_path / "overlay.png").stat().st_size > 1000
    whole = json.loads(run("segment", image, "--model", trained, "--json").stdout)
    assert whole["mode"] == "whole_breast" and whole["hdog_candidates"] >= summary["hdog_candidates"]


def test_segment_image_coarser_than_the_method_supports_is_a_clear_error(tmp_path):
    """0.2 mm (digitised film): no segmentation, a message with the spacing, the limit and why."""
    from analysis.segmentation.spacing import max_pixel_spacing_mm
    from dicom_factory import mg_dataset, write

    image = write(mg_dataset(96, 64, imager_pixel_spacing=(0.2, 0.2)), tmp_path / "film.dcm")
    limit = f"{max_pixel_spacing_mm():.3g} mm"
    result = run("segment", image, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pixel spacing 0.2 mm is coarser than the " + limit in result.stderr and "0.41 px" in result.stderr
    summary = json.loads(run("segment", image, "--json", check=False).stdout)
    assert summary["segmented"] is False and limit in summary["reason"]
    fine = write(mg_dataset(96, 64, imager_pixel_spacing=(0.1, 0.1)), tmp_path / "fine.dcm")
    assert "coarser" not in run("segment", fine, check=False).stderr


def test_segment_bad_roi_is_a_clear_error(trained, small_data, tmp_path):
    image = next((small_data / "dicom").rglob("MG_*.dcm"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    result = run("segment", image, "--roi", junk, "--model", trained, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not a DICOM" in result.stderr


def test_shipped_demonstration_model():
    if not DEFAULT_SEGMENTATION_MODEL.exists():
        pytest.fail(f"the shipped model {DEFAULT_SEGMENTATION_MODEL} is missing "
                    "(make demo-seg-model trains it)")
    model = SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL)
    assert DEFAULT_SEGMENTATION_MODEL.stat().st_size < 20e6
    assert "NOT FOR CLINICAL USE" in model.info["notice"]
    assert model.info["data"], "the model must record what it was trained on"


def test_cli_defaults_match_the_training_settings():
    from dicom_node.commands.segmentation_training import DEFAULT_MAX_EPOCHS, DEFAULT_PATIENCE, DEFAULT_WIDTH, DEFAULT_WORKERS
    from training.segmentation.train import TrainSettings

    assert (DEFAULT_MAX_EPOCHS, DEFAULT_PATIENCE, DEFAULT_WORKERS, DEFAULT_WIDTH) == (
        TrainSettings.max_epochs, TrainSettings.patience, TrainSettings.workers, TrainSettings.width)
    from analysis.segmentation.cnn import SelectionParams
    from dicom_node.commands.segmentation_training import DEFAULT_OUTLINE_LEVEL, DEFAULT_PROXIMITY_RADIUS_MM
    assert DEFAULT_OUTLINE_LEVEL == SelectionParams.outline_level
    assert DEFAULT_PROXIMITY_RADIUS_MM == SelectionParams.proximity_radius_mm


def test_train_seg_teaches_the_proximity_radius_it_is_given(trained, small_data, tmp_path):
    sharp = tmp_path / "sharp.pt"
    run("train-seg", "--data", small_data, "--out", sharp, "--max-epochs", 1, "--seed", 3, "--init", trained,
        "--proximity-radius", 0.35)
    model = SegmentationModel.load(sharp)
    assert model.params.proximity_radius_mm == 0.35
    assert SegmentationModel.load(trained).params.proximity_radius_mm == 0.7
    # fine-tuning without the option keeps the target the model was taught, as it keeps its width
    again = tmp_path / "again.pt"
    run("train-seg", "--data", small_data, "--out", again, "--max-epochs", 1, "--seed", 3, "--init", sharp)
    assert SegmentationModel.load(again).params.proximity_radius_mm == 0.35
    bad = run("train-seg", "--data", small_data, "--out", tmp_path / "bad.pt", "--proximity-radius", 0,
              check=False)
    assert bad.returncode != 0 and "> 0 mm" in bad.stderr and not (tmp_path / "bad.pt").exists()


def test_fine_tuning_with_a_larger_width_widens_the_model(trained, small_data, tmp_path):
    wide = tmp_path / "wide.pt"
    run("train-seg", "--data", small_data, "--out", wide, "--max-epochs", 1, "--seed", 3,
        "--init", trained, "--width", 12)
    model = SegmentationModel.load(wide)
    assert model.net.width == 12
    assert model.info["init"]["width"] == 8 and model.info["init"]["widened_to"] == 12
    assert model.info["init"]["sha256"] == SegmentationModel.load(trained).sha256
    # without --width, fine-tuning keeps the model's own width; a narrower one is refused
    same = tmp_path / "same.pt"
    run("train-seg", "--data", small_data, "--out", same, "--max-epochs", 1, "--seed", 3, "--init", wide)
    fine_tuned = SegmentationModel.load(same)
    assert fine_tuned.net.width == 12 and fine_tuned.info["init"]["widened_to"] is None
    # the init recorded is the model started from, not the weights it became
    assert fine_tuned.info["init"]["sha256"] == model.sha256 != fine_tuned.sha256
    result = run("train-seg", "--data", small_data, "--out", tmp_path / "narrow.pt", "--max-epochs", 1,
                 "--init", wide, "--width", 8, check=False)
    assert result.returncode != 0 and "cannot be fine-tuned at width 8" in result.stderr


def test_calibrate_seg_sets_the_operating_point_on_the_given_images(small_data, tmp_path):
    from dicom_node.commands.segmentation_training import DEFAULT_CALIBRATION_FP_PER_CM2
    from training.segmentation.train import CALIBRATION_FP_PER_CM2
    assert DEFAULT_CALIBRATION_FP_PER_CM2 == CALIBRATION_FP_PER_CM2

    shipped = SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL)  # a model that finds particles here
    points = {}
    for rate in (0.2, 50.0):
        out = tmp_path / f"calibrated-{rate}.pt"
        result = run("calibrate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data, "--out", out,
                     "--max-fp-per-cm2", rate)
        report = json.loads(result.stdout)
        model = SegmentationModel.load(out)
        assert model.params.prediction_threshold == report["prediction_threshold"]
        calibration = model.info["threshold_calibration"]
        assert calibration["data"] == [str(small_data)] and calibration["max_fp_per_cm2"] == rate
        assert calibration["previous"]["threshold"] == shipped.params.prediction_threshold
        assert model.sha256 == shipped.sha256  # the weights are the same
        assert calibration["fp_per_cm2"] <= rate
        points[rate] = calibration
    # more false positives allowed: a threshold no stricter, a sensitivity no lower
    assert points[50.0]["threshold"] < points[0.2]["threshold"]
    assert points[50.0]["sensitivity"] >= points[0.2]["sensitivity"] > 0
    bad = run("calibrate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", tmp_path, "--out",
              tmp_path / "x.pt", check=False)
    assert bad.returncode != 0 and "calibrate-seg:" in bad.stderr and not (tmp_path / "x.pt").exists()


def test_calibrate_seg_sets_the_outline_level_it_calibrates_for(small_data, tmp_path):
    shipped = SegmentationModel.load(DEFAULT_SEGMENTATION_MODEL)
    levels = {}
    for level in ("0.5", "none"):
        out = tmp_path / f"outline-{level}.pt"
        run("calibrate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data, "--out", out,
            "--outline-level", level)
        model = SegmentationModel.load(out)
        calibration = model.info["threshold_calibration"]
        assert model.params.outline_level == calibration["outline_level"] == (None if level == "none" else 0.5)
        assert calibration["previous"]["outline_level"] == shipped.params.outline_level
        assert model.sha256 == shipped.sha256
        levels[level] = (calibration["threshold"], calibration["sensitivity"], calibration["fp_per_cm2"])
        assert model.params.prediction_threshold == calibration["threshold"]
    # the level decides which pieces are scored, so the calibration's FROC point is its own
    assert levels["0.5"] != levels["none"]
    # without the option the model's own level stays
    kept = tmp_path / "kept.pt"
    run("calibrate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data, "--out", kept)
    assert SegmentationModel.load(kept).params.outline_level == shipped.params.outline_level
    bad = run("calibrate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data, "--out",
              tmp_path / "y.pt", "--outline-level", "1.5", check=False)
    assert bad.returncode != 0 and "(0, 1)" in bad.stderr and not (tmp_path / "y.pt").exists()
