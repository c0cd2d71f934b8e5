"""Widening a trained selection network without changing what it computes (Net2WiderNet).

Chen, Goodfellow & Shlens, "Net2Net: accelerating learning via knowledge transfer" (ICLR 2016):
each added channel of a layer copies an existing one (its filter and bias), and the next layer's
weights on every copy of a channel are divided by the number of copies, so with ReLU between them
the wider network's output is the narrow one's. A little noise on the copies lets training pull
them apart. Why here: fine-tuning the shipped width-8 network with more data left it where it was
(docs/segmentation.md, "What was tried"), and training a wider one from scratch costs about an
hour on two cores; a widened copy starts at the shipped model's quality and has room to improve.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from analysis.segmentation.cnn import ProximityNet


def _convolutions(net: ProximityNet) -> list[nn.Conv2d]:
    return [m for m in net.body if isinstance(m, nn.Conv2d)]


def widen(net: ProximityNet, width: int, seed: int = 0, noise: float = 0.01) -> ProximityNet:
    """A :class:`ProximityNet` of ``width`` computing ``net``'s function.

    Parameters
    ----------
    net : the trained network (its width <= ``width``).
    width : the new width (channels of the first layers; the middle ones are twice that).
    seed : which existing channels the added ones copy, and the noise.
    noise : standard deviation of the noise added to the copied weights, relative to each
        layer's weight spread (0: the outputs are equal up to rounding).
    """
    if width < net.width:
        raise ValueError(f"cannot widen a width-{net.width} network to {width}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    wide = ProximityNet(width=width)
    old, new = _convolutions(net), _convolutions(wide)
    source = np.zeros(1, int)  # which old input channel each new input channel copies (1: the image)
    with torch.no_grad():
        for k, (o, n) in enumerate(zip(old, new)):
            last = k == len(old) - 1
            mapping = (np.arange(n.out_channels) if last else
                       np.concatenate([np.arange(o.out_channels),
                                       rng.integers(0, o.out_channels, n.out_channels - o.out_channels)]))
            copies = torch.tensor(np.bincount(source, minlength=o.in_channels)[source], dtype=o.weight.dtype)
            weight = (o.weight[:, source] / copies[None, :, None, None])[mapping]
            if noise and not last:
                weight = weight + noise * float(weight.std()) * torch.randn(weight.shape, generator=generator)
            n.weight.copy_(weight)
            n.bias.copy_(o.bias[mapping])
            source = mapping
    return wide.eval()
