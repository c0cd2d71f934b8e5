"""Widening the selection network keeps its function (training.segmentation.widen)."""
import pytest
import torch

from analysis.segmentation.cnn import ProximityNet
from training.segmentation.widen import widen


def _net(width: int, seed: int) -> ProximityNet:
    torch.manual_seed(seed)
    return ProximityNet(width=width).eval()


def test_widened_network_computes_the_same_map():
    net = _net(8, 0)
    x = torch.randn(2, 1, 40, 40, generator=torch.Generator().manual_seed(1))
    wide = widen(net, 12, seed=3, noise=0.0)
    assert wide.width == 12
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        assert torch.allclose(wide(x), net(x), atol=1e-4)


def test_noise_moves_the_copies_apart_but_only_a_little():
    net = _net(8, 0)
    x = torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact, noisy = widen(net, 12, noise=0.0)(x), widen(net, 12, noise=0.01)(x)
        assert not torch.equal(exact, noisy)
        assert float((exact - noisy).abs().max()) < 0.1 * float(exact.abs().max())
        # the same seed gives the same network
        assert torch.equal(noisy, widen(net, 12, noise=0.01)(x))


def test_narrowing_is_refused():
    with pytest.raises(ValueError, match="cannot widen"):
        widen(_net(8, 0), 6)


# --- deepening: a larger receptive field (training.segmentation.widen.deepen) ---

def test_deepened_network_computes_the_same_map_and_sees_farther():
    from training.segmentation.widen import deepen
    net = _net(4, 0)
    x = torch.randn(2, 1, 80, 80, generator=torch.Generator().manual_seed(4))
    deep = deepen(net, (1, 2, 4, 8, 16, 1), noise=0.0)
    assert deep.dilations == (1, 2, 4, 8, 16, 1)
    assert (net.receptive_field_px, deep.receptive_field_px) == (33, 65)
    with torch.no_grad():
        assert torch.allclose(deep(x), net(x), atol=1e-5)
        # after training moves the new layer, a pixel depends on input 30 px away (the old net cannot)
        probe = torch.zeros(1, 1, 81, 81)
        probe[0, 0, 40, 10] = 50.0
        torch.manual_seed(5)
        for conv in deep.body:
            if isinstance(conv, torch.nn.Conv2d) and conv.dilation == (16, 16):
                conv.weight.normal_(0, 0.3)
        assert deep(probe)[0, 0, 40, 40] != deep(torch.zeros_like(probe))[0, 0, 40, 40]
        assert net(probe)[0, 0, 40, 40] == net(torch.zeros_like(probe))[0, 0, 40, 40]


def test_deepening_only_inserts_before_the_last_layer():
    from training.segmentation.widen import deepen
    with pytest.raises(ValueError, match="before the last one"):
        deepen(_net(4, 0), (1, 2, 4, 16, 8, 1))
    with pytest.raises(ValueError, match="before the last one"):
        deepen(_net(4, 0), (1, 2, 4, 8))


def test_deep_model_file_round_trip(tmp_path):
    from analysis.segmentation.cnn import DILATIONS, SegmentationModel
    from training.model_files import save_segmentation_model
    from training.segmentation.widen import deepen
    deep = deepen(_net(4, 0), (1, 2, 4, 8, 16, 1))
    save_segmentation_model(SegmentationModel(net=deep, info={"notice": "test"}), tmp_path / "deep.pt")
    back = SegmentationModel.load(tmp_path / "deep.pt")
    assert back.net.dilations == (1, 2, 4, 8, 16, 1)
    x = torch.randn(1, 1, 70, 70, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(back.net(x), deep(x))
    # a default-layout file stores no dilations: byte-for-byte what it was before deepening existed
    plain = SegmentationModel(net=_net(4, 0), info={"notice": "test"})
    assert b"dilations" not in plain.to_bytes() and plain.net.dilations == DILATIONS
