"""A larger receptive field: train-seg --dilations / --patch-px (docs/segmentation.md, "A larger receptive
field"): larger patches carry the same input as the default ones, and a deepened model trains, records
what it grew from and analyses crops with the margin its field needs."""
import subprocess
import sys

import numpy as np
import pytest

from test_seg_ceiling import small_set  # noqa: F401  (the same two-case synth set, a module fixture)
from training.segmentation.patches import PATCH_PX, patches_at


def test_larger_patches_hold_the_default_patch_at_their_centre():
    rng = np.random.default_rng(0)
    pixels = (0.4 + 0.02 * rng.standard_normal((300, 300))).astype(np.float32)
    truth = np.zeros(pixels.shape, bool)
    truth[150:153, 140:143] = True
    centres = [(151.0, 141.0, 0), (90.0, 200.0, 2)]
    small = patches_at(pixels, truth, 0.07, centres)
    large = patches_at(pixels, truth, 0.07, centres, patch_px=64)
    assert small.x.shape == (2, PATCH_PX, PATCH_PX) and small.x.dtype == np.float32
    assert large.x.shape == (2, 64, 64) and large.x.dtype == np.float16 and large.y.dtype == np.float16
    inner = slice(8, 8 + PATCH_PX)
    # the input scaling reads the same image context whatever the patch size, so only half precision differs
    np.testing.assert_allclose(large.x[:, inner, inner].astype(np.float32), small.x, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(large.y[:, inner, inner].astype(np.float32), small.y, atol=1e-3)


def test_train_seg_deepens_a_model(small_set, tmp_path):  # noqa: F811
    base, deep = tmp_path / "base.pt", tmp_path / "deep.pt"
    common = [sys.executable, "-m", "dicom_node.cli", "train-seg", "--data", str(small_set), "--max-epochs", "1",
              "--workers", "1", "--width", "4"]
    run = subprocess.run(common + ["--out", str(base)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run = subprocess.run(common + ["--out", str(deep), "--init", str(base), "--dilations", "1,2,4,8,16,1",
                                   "--patch-px", "64", "--patch-context-px", "16", "--no-calibration"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    from analysis.segmentation.cnn import SegmentationModel

    model = SegmentationModel.load(deep)
    assert model.net.dilations == (1, 2, 4, 8, 16, 1) and model.net.receptive_field_px == 65
    assert model.params.crop_margin_mm == pytest.approx(2.52)  # 32 + 4 px at 0.07 mm
    assert SegmentationModel.load(base).params.crop_margin_mm == pytest.approx(1.4)
    assert model.info["init"]["deepened_to"] == [1, 2, 4, 8, 16, 1]
    assert model.info["settings"]["patch_px"] == 64 and model.info["settings"]["patch_context_px"] == 16
    # --no-calibration: the threshold is left to calibrate-seg, and the file says so
    assert model.info["threshold_calibration"]["calibrated"] is False
    assert SegmentationModel.load(base).info["threshold_calibration"]["calibrated"] is True
    # layers it cannot insert are refused before any patch is made
    run = subprocess.run(common + ["--out", str(tmp_path / "bad.pt"), "--init", str(base),
                                   "--dilations", "1,2,16,4,8,1"], capture_output=True, text=True)
    assert run.returncode != 0 and "before the last one" in run.stderr


def test_context_around_a_patch_is_input_only():
    """--patch-context-px: the input grows by the context on every side, the target does not, and
    the input's centre is the patch without context (the same image and scaling)."""
    rng = np.random.default_rng(1)
    pixels = (0.4 + 0.02 * rng.standard_normal((300, 300))).astype(np.float32)
    truth = np.zeros(pixels.shape, bool)
    truth[150:153, 140:143] = True
    centres = [(151.0, 141.0, 0), (120.0, 170.0, 2), (5.0, 5.0, 2)]  # the last would leave the image
    plain = patches_at(pixels, truth, 0.07, centres, patch_px=32)
    wide = patches_at(pixels, truth, 0.07, centres, patch_px=32, context_px=32)
    assert plain.x.shape == (2, 32, 32) and wide.x.shape == (2, 96, 96) and wide.y.shape == (2, 32, 32)
    assert wide.context_px == 32 and plain.context_px == 0
    np.testing.assert_allclose(wide.x[:, 32:64, 32:64].astype(np.float32), plain.x, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(wide.y, plain.y.astype(wide.y.dtype))
    assert wide.y.max() > 0.5  # the calcification is in the target


def test_the_loss_sees_only_the_patch_not_its_context():
    import torch

    from training.segmentation.train import centre

    logits = torch.arange(96 * 96, dtype=torch.float32).reshape(1, 1, 96, 96)
    inner = centre(logits, 32)
    assert inner.shape == (1, 1, 32, 32) and float(inner[0, 0, 0, 0]) == 32 * 96 + 32
    assert centre(logits, 0) is logits
