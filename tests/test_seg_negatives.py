"""Views without calcification truth (``--negatives``): loading (PNG, lesion masks), evaluate-seg's
false objects per cm² of breast, train-seg's hard negatives."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.segmentation import breast_mask
from analysis.segmentation.cnn import SegmentationModel
from analysis.segmentation.models import DEFAULT_SEGMENTATION_MODEL
from conftest import CALCNODE, INTEROP, ROOT
from training.segmentation.negatives import load_negative, negative_paths

ROWS, COLS = slice(1000, 1600), slice(None)   # a band of the real R-CC view: skin line, tissue, air
LESION = (slice(150, 450), slice(450, 750))   # a marked "lesion" in that band, stored orientation


def run(*args):
    result = subprocess.run(CALCNODE + list(map(str, args)), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def negative_views(tmp_path_factory) -> tuple[Path, Path]:
    """The same band of a real view twice: without and with a lesion mask of its own size."""
    source = INTEROP / "real-tissue" / "nyu_gmic_0_R-CC.png"
    if not source.is_file():
        pytest.skip(f"real-tissue views not found at {source.parent} (they ship in the project's shared/ folder)")
    band = np.asarray(Image.open(source))[ROWS, COLS]
    folder = tmp_path_factory.mktemp("negatives")
    plain, marked = folder / "plain" / "band_R-CC.png", folder / "marked" / "band_R-CC.png"
    mask = np.zeros(band.shape, np.uint8)
    mask[LESION] = 255
    for path in (plain, marked):
        path.parent.mkdir()
        Image.fromarray(band).save(path)
    Image.fromarray(mask).save(marked.with_name("band_R-CC_benign_lesion_mask.png"))
    return plain, marked


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "data"
    run("synth", "--out", out, "--cases", 2, "--seed", 7, "--size", "768x640", "--quiet",
        "--types", "amorphous,punctate")
    return out


def test_png_view_loads_as_12_bit_with_assumed_spacing(negative_views):
    plain, marked = negative_views
    view = load_negative(plain, 0.07)
    raw = np.asarray(Image.open(plain)).astype(np.float32)
    assert raw.max() <= 4095  # 12-bit data in a 16-bit file: scaled by 4095, not 65535
    np.testing.assert_allclose(view.pixels, raw / 4095.0, atol=1e-6)
    assert view.spacing_mm == (0.07, 0.07) and view.spacing_source == "assumed"
    assert view.excluded is None
    # the lesion mask beside a view, in the view's own (stored) orientation, grown by 3 mm
    excluded = load_negative(marked, 0.07).excluded
    assert excluded[LESION].all()
    grow = int(round(3.0 / 0.07))
    assert excluded[LESION[0].start - grow + 2, 600] and not excluded[LESION[0].start - grow - 3, 600]
    assert not excluded[:, : LESION[1].start - grow - 2].any()
    assert negative_paths([marked.parent]) == [marked]  # a folder: its views, not their masks


def test_gmic_frame_lesion_mask_lands_in_the_breast(interop):
    """The NYU masks are in GMIC's 2944 x 1920 frame; mapped back they lie inside the view's breast."""
    view = load_negative(interop / "real-tissue" / "nyu_gmic_0_R-CC.png", 0.07)
    breast = breast_mask(view.pixels, view.spacing_mm)
    assert view.excluded is not None and view.excluded.shape == view.pixels.shape
    area_cm2 = view.excluded.sum() * 0.07 ** 2 / 100
    assert 0.5 < area_cm2 < 10
    assert (view.excluded & breast).sum() > 0.9 * view.excluded.sum()
    assert load_negative(interop / "real-tissue" / "nyu_gmic_0_L-CC.png").excluded is None


def test_evaluate_seg_reports_false_objects_per_cm2_of_breast(small_data, negative_views, tmp_path):
    plain, marked = negative_views
    result = run("evaluate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data,
                 "--negatives", plain, marked, "--out", tmp_path)
    assert "ASSUMED 0.07 mm" in result.stderr
    summary = json.loads(result.stdout)
    report = json.loads((tmp_path / "segmentation_metrics.json").read_text())
    negatives = report["negatives"]
    plain_row, marked_row = negatives["views"]
    assert plain_row["spacing_source"] == "assumed" and "ASSUMED 0.07 mm" in negatives["note"]
    assert not plain_row["in_training"]  # the shipped model was trained on no negative view
    held_out = negatives["groups"]["held_out"]
    assert held_out["fp_per_cm2_breast"] == pytest.approx(
        held_out["objects_at_operating_point"] / held_out["breast_cm2"], rel=1e-2)
    assert plain_row["objects_at_operating_point"] > 0  # the old model does find things in real tissue
    # the lesion's region is left out: its area and its objects
    assert marked_row["excluded_lesion_cm2"] > 0.5
    assert marked_row["breast_cm2"] == pytest.approx(plain_row["breast_cm2"] - marked_row["excluded_lesion_cm2"],
                                                     abs=0.02)
    assert marked_row["objects_at_operating_point"] + marked_row["excluded_lesion_objects"] >= \
        plain_row["objects_at_operating_point"]
    assert marked_row["objects_at_operating_point"] <= plain_row["objects_at_operating_point"]
    # a curve over thresholds that falls as the threshold rises
    curve = [p["fp_per_cm2_breast"] for p in held_out["curve"]]
    assert curve[0] >= curve[-1] and all(a >= b for a, b in zip(curve, curve[1:]))
    assert summary["negatives"]["groups"]["held_out"]["fp_per_cm2_breast"] == held_out["fp_per_cm2_breast"]
    png = Image.open(tmp_path / "froc.png")
    assert png.size[0] > png.size[1] * 1.8  # two panels: the ROIs' FROC and the negatives'
    # the in-ROI report is still there
    assert report["hdog_cnn"]["operating_point"]["sensitivity"] >= 0


def test_evaluate_seg_with_ceiling_and_negatives_only(small_data, negative_views, tmp_path):
    ceiling = tmp_path / "ceiling.json"
    run("seg-ceiling", "--data", small_data, "--out", ceiling)
    result = run("evaluate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data,
                 "--ceiling", ceiling, "--out", tmp_path / "a")
    by_type = json.loads(result.stdout)["by_type"]
    bound = json.loads(ceiling.read_text())["by_type"]
    for kind, row in by_type.items():
        if kind in bound:
            assert row["ideal_observer_at_1_fp_per_cm2"] == bound[kind]["sensitivity_at_1_fp_per_cm2"]
    # negatives alone (no truth): the false objects and a one-panel picture
    result = run("evaluate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--negatives", negative_views[0],
                 "--out", tmp_path / "b")
    assert "fp_per_cm2_breast" in json.loads(result.stdout)["negatives"]["groups"]["held_out"]
    assert (tmp_path / "b" / "froc.png").is_file()


def test_train_seg_accepts_negatives(small_data, negative_views, tmp_path):
    plain, marked = negative_views
    model_path = tmp_path / "seg.pt"
    result = run("train-seg", "--data", small_data, "--negatives", marked, "--out", model_path,
                 "--max-epochs", 1, "--seed", 3, "--negatives-per-epoch", 300, "--patches-per-epoch", 300)
    assert "negatives: band_R-CC.png:" in result.stderr
    model = SegmentationModel.load(model_path)
    assert "real views used only as calcification-free tissue" in model.info["notice"]
    assert "NOT FOR CLINICAL USE" in model.info["notice"]
    (view,) = model.info["negative_views"]
    assert view["name"] == "band_R-CC.png" and view["excluded_lesion"] and view["spacing_source"] == "assumed"
    assert model.info["patches"]["negative_views"]["negative_view"] > 300  # more than one epoch draws
    assert model.info["negative_sampling"]["per_epoch"] == 300
    # evaluate-seg knows a view the model was trained on by its bytes (the same pixels under
    # another name too), and holds out any other
    other = tmp_path / "other_R-CC.png"
    Image.fromarray(np.asarray(Image.open(plain))[:, ::-1].copy()).save(other)
    result = run("evaluate-seg", "--model", model_path, "--negatives", marked, plain, other, "--out", tmp_path / "e")
    groups = json.loads(result.stdout)["negatives"]["groups"]
    assert groups["training"]["views"] == ["band_R-CC.png", "band_R-CC.png"]
    assert groups["held_out"]["views"] == ["other_R-CC.png"]


def test_cli_defaults_match_the_code():
    from dicom_node.commands import segmentation_training as cli
    from training.segmentation.negatives import DEFAULT_NEGATIVE_SPACING_MM
    from training.segmentation.train import NegativeSampling, TrainSettings

    assert cli.DEFAULT_NEGATIVE_SPACING_MM == DEFAULT_NEGATIVE_SPACING_MM == 0.07
    assert cli.DEFAULT_NEGATIVES_PER_EPOCH == NegativeSampling.per_epoch
    assert cli.DEFAULT_LEARNING_RATE == TrainSettings.learning_rate


def test_calibrate_seg_keeps_the_negative_views_breast_under_its_limit(small_data, negative_views, tmp_path):
    """With --negatives the threshold must also keep <= --max-negative-fp-per-cm2 objects per cm² of
    those views' breasts: a tight limit gives a stricter threshold than the ROI figure alone, and the
    report holds the curve it was read from."""
    from dicom_node.commands.segmentation_training import DEFAULT_CALIBRATION_NEGATIVE_FP_PER_CM2
    from training.segmentation.train import CALIBRATION_NEGATIVE_FP_PER_CM2
    assert DEFAULT_CALIBRATION_NEGATIVE_FP_PER_CM2 == CALIBRATION_NEGATIVE_FP_PER_CM2

    plain, _ = negative_views
    free = tmp_path / "free.pt"
    run("calibrate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data, "--out", free,
        "--max-fp-per-cm2", 50)
    free_cal = SegmentationModel.load(free).info["threshold_calibration"]
    assert "negative_views" not in free_cal
    # the limit: half the objects per cm² the ROI-only threshold keeps on the real band
    from training.segmentation.evaluate import negative_objects, negatives_curve
    view = negative_objects(load_negative(plain, 0.07), SegmentationModel.load(free))
    at_free = negatives_curve([view], np.array([free_cal["threshold"]]))[0]["fp_per_cm2_breast"]
    assert at_free > 0, "the real band must hold objects at the lenient threshold for this test to mean anything"
    limit = at_free / 2
    tight = tmp_path / "tight.pt"
    run("calibrate-seg", "--model", DEFAULT_SEGMENTATION_MODEL, "--data", small_data, "--out", tight,
        "--max-fp-per-cm2", 50, "--negatives", plain, "--max-negative-fp-per-cm2", limit)
    cal = SegmentationModel.load(tight).info["threshold_calibration"]
    assert cal["threshold"] > free_cal["threshold"]
    assert cal["negative_views"]["fp_per_cm2_breast"] <= limit
    assert cal["negative_views"]["views"] == [plain.name] and cal["negative_views"]["curve"]
    assert SegmentationModel.load(tight).params.prediction_threshold == cal["threshold"]
