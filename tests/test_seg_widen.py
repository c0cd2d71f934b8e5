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
