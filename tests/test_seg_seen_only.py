"""Seen-only targets (``train-seg --seen-only``): a particle the ideal observer cannot find is not
taught as a calcification, and its neighbourhood is left out of the loss, not taught as background."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from training.datasets import scan_dataset
from training.segmentation.ceiling import item_observers, particles_found, synth_config
from training.segmentation.patches import IGNORE, image_patches, patches_at
from training.segmentation.train import dice_bce_loss

from test_seg_ceiling import small_set  # noqa: F401  (the same two-case synth set, a module fixture)


def test_ignored_pixels_do_not_move_the_loss():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.random((2, 1, 16, 16)).astype(np.float32) * (rng.random((2, 1, 16, 16)) < 0.2))
    logits = torch.from_numpy(rng.normal(size=(2, 1, 16, 16)).astype(np.float32))
    ignored = target.clone()
    ignored[:, :, :4] = IGNORE
    changed = logits.clone()
    changed[:, :, :4] += 5.0   # whatever the network says where nothing is taught
    assert float(dice_bce_loss(logits, ignored)) == pytest.approx(float(dice_bce_loss(changed, ignored)))
    # ... while the same change where the target is taught does move it
    assert float(dice_bce_loss(changed, target)) != pytest.approx(float(dice_bce_loss(logits, target)))
    # without ignored pixels it is the plain loss (the models trained before are unchanged)
    prob = torch.sigmoid(logits)
    plain = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1) + \
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(dice_bce_loss(logits, target)) == pytest.approx(float(plain))


def test_an_unseen_particle_is_left_out_of_the_loss_not_taught_as_background():
    pixels = np.full((200, 200), 0.4, np.float32)
    truth = np.zeros(pixels.shape, bool)
    truth[100:103, 60:63] = True       # taught
    unseen = np.zeros(pixels.shape, bool)
    unseen[100:103, 140:143] = True    # not seen by the ideal observer
    centres = [(101.0, 61.0, 0), (101.0, 141.0, 2)]
    patches = patches_at(pixels, truth, 0.07, centres, unseen=unseen)
    taught, other = patches.y
    assert taught.max() == pytest.approx(1.0) and not (taught == IGNORE).any()
    assert (other == IGNORE).any() and other.max() == 0.0   # nothing positive, nothing "background" there
    centre = other[other.shape[0] // 2 - 1:other.shape[0] // 2 + 2, other.shape[1] // 2 - 1:other.shape[1] // 2 + 2]
    assert (centre == IGNORE).all()
    everything = patches_at(pixels, truth | unseen, 0.07, centres)
    assert everything.y[1].max() == pytest.approx(1.0)   # the default teaches it


def test_only_the_particles_the_observer_finds_get_patches(small_set):
    config = synth_config(small_set)
    items = [i for i in scan_dataset(small_set, require_truth=True) if i.roi_paths]
    assert items
    checked = 0
    for item in items:
        found = particles_found(item_observers(item, config), 1.0)
        all_taught = image_patches(item, 7)
        none_seen = image_patches(item, 7, found={label: 0.0 for label in found})
        assert (all_taught.kind == 0).sum() > 0
        # every particle inside the ROIs unseen: no calcification patch is centred on one, nothing
        # near them is taught positive, and they are not turned into hard negatives either
        assert (none_seen.y > 0).sum() < (all_taught.y > 0).sum()
        assert (none_seen.y == IGNORE).any() and not (all_taught.y == IGNORE).any()
        assert (none_seen.kind == 1).sum() == (all_taught.kind == 1).sum()
        checked += 1
    assert checked


def test_train_seg_seen_only_records_what_it_taught(small_set, tmp_path):
    out = tmp_path / "seen.pt"
    run = subprocess.run([sys.executable, "-m", "dicom_node.cli", "train-seg", "--data", str(small_set),
                          "--out", str(out), "--max-epochs", "1", "--seen-only", "--workers", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    from analysis.segmentation.cnn import SegmentationModel

    seen = SegmentationModel.load(out).info["seen_only"]
    assert seen["particles_asked"] > 0 and 0 <= seen["particles_taught"] <= seen["particles_asked"]
    assert seen["seen_probability"] == 0.5
