"""Fixed oriented line filters on the selection network's input (analysis.segmentation.cnn.line_kernels,
ProximityNet(line_filters=n), training.segmentation.widen.with_line_filters; docs/segmentation.md,
"Line filters")."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from analysis.segmentation.cnn import LINE_SIGMA_ALONG_MM, NET_SPACING_MM, ProximityNet, line_kernels
from training.segmentation.widen import deepen, widen, with_line_filters
from test_seg_ceiling import small_set  # noqa: F401  (the same two-case synth set, a module fixture)


def _line(angle_deg: float, size: int = 61, width_px: float = 1.5) -> np.ndarray:
    """A bright line through the centre at ``angle_deg`` from the column axis, counter-clockwise
    on the screen (rows point down)."""
    r, c = np.mgrid[:size, :size] - size // 2
    a = np.deg2rad(angle_deg)
    across = c * np.sin(a) + r * np.cos(a)
    return (np.abs(across) <= width_px / 2).astype(np.float64)


def test_line_kernels_are_zero_mean_unit_norm_and_as_long_as_their_sigma():
    bank = line_kernels(8)
    half = int(np.ceil(3 * LINE_SIGMA_ALONG_MM / NET_SPACING_MM))
    assert bank.shape == (8, 2 * half + 1, 2 * half + 1) and bank.dtype == np.float32
    np.testing.assert_allclose(bank.sum(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose((bank.astype(np.float64) ** 2).sum(axis=(1, 2)), 1, rtol=1e-5)
    # a flat image and a linear ramp give nothing
    ramp = np.add.outer(np.arange(41.0), 0.5 * np.arange(41.0))
    for k in bank:
        assert abs(ndimage.correlate(ramp, k.astype(np.float64))[20, 20]) < 1e-4  # float32 taps
    with pytest.raises(ValueError):
        line_kernels(0)


@pytest.mark.parametrize("index", range(8))
def test_each_filter_answers_most_to_a_line_of_its_own_orientation(index):
    bank = line_kernels(8).astype(np.float64)
    image = _line(22.5 * index)
    responses = [ndimage.correlate(image, k)[30, 30] for k in bank]
    assert int(np.argmax(responses)) == index
    assert responses[index] > 0                               # a bright line is a positive response
    assert responses[index] > 3 * responses[(index + 4) % 8]  # and the crossing orientation a weak one
    # a dark line (a gap) gives the opposite sign
    assert ndimage.correlate(-image, bank[index])[30, 30] < 0


def test_the_filters_sum_a_faint_line_out_of_the_noise():
    """Why they are there: lines at 0.5 noise SD per pixel stand ~2.8 times clearer after the filter
    (the row sum of a unit-norm filter of sigma 3 px along the line, across 1 px)."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((420, 420))
    line = np.zeros_like(noise)
    rows = np.arange(30, 400, 40)   # ten lines, farther apart than the filter is long
    line[rows, 30:390] = 0.5
    k = line_kernels(8)[0].astype(np.float64)
    response = ndimage.correlate(noise + line, k)
    background = ndimage.correlate(noise, k)
    on_line = response[rows, 50:370].mean() / background.std()
    assert 2 * 0.5 < on_line < 4 * 0.5


def test_adding_line_filters_keeps_the_trained_function_and_the_filters_are_used_after_training():
    torch.manual_seed(0)
    net = ProximityNet(width=4, dilations=(1, 2, 4, 8, 16, 1)).eval()
    lined = with_line_filters(net, 8)
    assert lined.line_filters == 8 and lined.body[0].in_channels == 9
    assert lined.receptive_field_px == net.receptive_field_px + line_kernels(8).shape[-1] - 1
    x = torch.randn(2, 1, 90, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(lined(x), net(x))
        lined.body[0].weight[:, 1:].normal_(0, 0.3)  # what training can do
        assert not torch.allclose(lined(x), net(x))
    # the filters are fixed: a buffer (in the model file), not a parameter training moves
    assert "line_bank" in lined.state_dict()
    assert all(p.shape != lined.line_bank.shape for p in lined.parameters())
    with pytest.raises(ValueError, match="already has"):
        with_line_filters(lined, 8)


def test_the_receptive_field_includes_the_filters_radius():
    torch.manual_seed(2)
    net = ProximityNet(width=4, dilations=(1, 2, 4), line_filters=8).eval()
    radius = net.receptive_field_px // 2
    with torch.no_grad():
        net.body[0].weight[:, 0] = 0  # only the filters feed the first layer
        centre = 60
        zero = net(torch.zeros(1, 1, 121, 121))[0, 0, centre, centre]
        for offset, changes in ((radius, True), (radius + 1, False)):
            probe = torch.zeros(1, 1, 121, 121)
            probe[0, 0, centre, centre + offset] = 100.0
            assert bool(net(probe)[0, 0, centre, centre] != zero) is changes, offset


def test_widening_and_deepening_keep_the_filters():
    torch.manual_seed(3)
    net = ProximityNet(width=4, dilations=(1, 2, 4, 8, 1), line_filters=8).eval()
    x = torch.randn(1, 1, 90, 90, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        wide = widen(net, 6, noise=0.0)
        deep = deepen(net, (1, 2, 4, 8, 16, 1), noise=0.0)
        assert wide.line_filters == deep.line_filters == 8
        assert torch.allclose(wide(x), net(x), atol=1e-5)
        assert torch.allclose(deep(x), net(x), atol=1e-5)


def test_model_file_round_trip(tmp_path):
    from analysis.segmentation.cnn import SegmentationModel
    from training.model_files import save_segmentation_model
    torch.manual_seed(5)
    net = ProximityNet(width=4, line_filters=8).eval()
    save_segmentation_model(SegmentationModel(net=net, info={"notice": "test"}), tmp_path / "lined.pt")
    back = SegmentationModel.load(tmp_path / "lined.pt")
    assert back.net.line_filters == 8
    x = torch.randn(1, 1, 70, 70, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(back.net(x), net(x))
    # a file without filters stores no line_filters key: byte-for-byte what it was before they existed
    plain = SegmentationModel(net=ProximityNet(width=4), info={"notice": "test"})
    assert b"line_filters" not in plain.to_bytes() and plain.net.line_filters == 0


def test_train_seg_adds_line_filters_to_a_model(small_set, tmp_path):  # noqa: F811
    base, lined = tmp_path / "base.pt", tmp_path / "lined.pt"
    common = [sys.executable, "-m", "dicom_node.cli", "train-seg", "--data", str(small_set), "--max-epochs", "1",
              "--workers", "1", "--width", "4", "--no-calibration"]
    run = subprocess.run(common + ["--out", str(base)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    run = subprocess.run(common + ["--out", str(lined), "--init", str(base), "--line-filters", "8",
                                   "--patch-context-px", "12"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    from analysis.segmentation.cnn import SegmentationModel

    model = SegmentationModel.load(lined)
    assert model.net.line_filters == 8 and model.net.receptive_field_px == 33 + 18
    assert model.params.crop_margin_mm == pytest.approx((25 + 4) * 0.07)  # the field's radius + 4 px
    assert model.info["init"]["line_filters_added"] == 8 and model.info["settings"]["line_filters"] == 8
    # a model with filters cannot be fine-tuned with another number of them
    run = subprocess.run(common + ["--out", str(tmp_path / "bad.pt"), "--init", str(lined),
                                   "--line-filters", "4"], capture_output=True, text=True)
    assert run.returncode != 0 and "line filters" in run.stderr
