"""Widening or deepening a trained selection network without changing what it computes (Net2Net).

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
    wide = ProximityNet(width=width, dilations=net.dilations, line_filters=net.line_filters)
    old, new = _convolutions(net), _convolutions(wide)
    # which old input channel each new input channel copies (the image and any line filters: themselves)
    source = np.arange(old[0].in_channels)
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


def deepen(net: ProximityNet, dilations: tuple[int, ...], seed: int = 0, noise: float = 1e-3) -> ProximityNet:
    """A :class:`ProximityNet` with the layers ``dilations`` computing ``net``'s function (Net2DeeperNet).

    ``dilations`` is ``net.dilations`` with layers inserted before its last one, e.g.
    (1, 2, 4, 8, 1) -> (1, 2, 4, 8, 16, 1); they have twice the width in and out. An inserted layer
    starts as the identity: its centre tap passes each channel through, and since its input has
    been through a ReLU (>= 0), its own ReLU changes nothing. ``noise`` (standard deviation of
    what is added to its weights) breaks the symmetry so that training can use it. Why: a wider
    view (docs/segmentation.md, "A larger receptive field") that starts at the trained network's
    quality instead of from scratch.
    """
    dilations = tuple(int(d) for d in dilations)
    old = tuple(net.dilations)
    if len(dilations) <= len(old) or dilations[:len(old) - 1] != old[:-1] or dilations[-1] != old[-1]:
        raise ValueError(f"cannot deepen layers {old} to {dilations}: new layers go before the last one")
    if len(old) < 4:  # the layer before the last must have twice the width (the middle layers' channels)
        raise ValueError(f"cannot deepen a {len(old)}-layer network")
    deep = ProximityNet(width=net.width, dilations=dilations, line_filters=net.line_filters)
    old_convs, new_convs = _convolutions(net), _convolutions(deep)
    inserted = len(dilations) - len(old)
    source = list(range(len(old) - 1)) + [None] * inserted + [len(old) - 1, len(old)]  # + the 1x1 head
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, k in zip(new_convs, source):
            if k is not None:
                n.weight.copy_(old_convs[k].weight)
                n.bias.copy_(old_convs[k].bias)
                continue
            weight = torch.zeros_like(n.weight)
            weight[torch.arange(n.out_channels), torch.arange(n.in_channels), 1, 1] = 1.0
            n.weight.copy_(weight + noise * torch.randn(weight.shape, generator=generator))
            n.bias.zero_()
    return deep.eval()


def with_line_filters(net: ProximityNet, orientations: int, seed: int = 0, noise: float = 0.0) -> ProximityNet:
    """``net`` with ``orientations`` fixed line filters added to its input, computing ``net``'s function.

    Every layer keeps its weights; the first one gets an input channel per filter whose weights
    start at 0 (or, with ``noise``, at normal values of that standard deviation), so the output is
    the trained network's and training decides how much the line evidence counts.
    Why: a faint thin line the 3x3 layers miss stands out once summed along it (docs/segmentation.md,
    "Line filters"), and fine-tuning starts at the shipped model's quality instead of from scratch.
    """
    if net.line_filters:
        raise ValueError(f"the network already has {net.line_filters} line filters")
    lined = ProximityNet(width=net.width, dilations=net.dilations, line_filters=orientations)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for o, n in zip(_convolutions(net), _convolutions(lined)):
            if o.in_channels == n.in_channels:
                n.weight.copy_(o.weight)
            else:  # the first layer: the image's weights, then the filters' (0 without noise)
                n.weight.copy_(noise * torch.randn(n.weight.shape, generator=generator))
                n.weight[:, :o.in_channels] = o.weight
            n.bias.copy_(o.bias)
    return lined.eval()
