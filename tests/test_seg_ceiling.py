"""The ideal-observer bound (training/segmentation/ceiling.py, `calcnode seg-ceiling`)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from training.segmentation.ceiling import (RoiObserver, detectability_index, noise_power_spectrum,
                                           noise_windows, particles_found, prewhitened_filter, roi_observer,
                                           search_threshold)
from training.synth.config import SynthConfig
from training.synth.dataset import generate_dataset

ALL_TYPES = (("amorphous", 1.0), ("punctate", 1.0), ("fine_pleomorphic", 1.0), ("fine_linear_branching", 1.0))


def _blob(size: int, sigma: float, amplitude: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - size // 2
    return amplitude * np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))


def test_white_noise_gives_the_textbook_dprime():
    """In white noise of sigma s the matched filter's d' is ||t|| / s."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 10.0, (512, 512))
    windows = noise_windows(noise, 32)
    template = _blob(32, 1.5, 30.0)
    d = detectability_index(prewhitened_filter(template, noise_power_spectrum(windows)), template, windows)
    assert d == pytest.approx(np.linalg.norm(template) / 10.0, rel=0.08)


def test_correlated_noise_prewhitening_beats_plain_matching():
    """Low-frequency texture: the prewhitened filter finds the blob better than the blob itself as filter."""
    rng = np.random.default_rng(1)
    from scipy import ndimage
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (512, 512)), 3) * 60 + rng.normal(0, 3, (512, 512))
    windows = noise_windows(texture, 32)
    template = _blob(32, 1.2, 20.0)
    whitened = detectability_index(prewhitened_filter(template, noise_power_spectrum(windows)), template, windows)
    plain = detectability_index(template, template, windows)
    assert whitened > 1.3 * plain


def test_search_threshold_counts_false_positives_per_area():
    maxima = np.arange(100, dtype=float)       # 100 background peaks in 10 cm²
    assert search_threshold(maxima, 10.0, 1.0) == 89.0     # 10 peaks above it
    assert search_threshold(maxima, 10.0, 0.0) == 99.0
    assert search_threshold(np.zeros(0), 10.0, 1.0) == 0.0


def test_a_bright_particle_is_found_and_a_faint_one_mostly_not():
    rng = np.random.default_rng(2)
    background = rng.normal(0, 10.0, (256, 256))
    signal = np.zeros_like(background)
    truth = np.zeros(background.shape, np.int64)
    for label, (r, c, amp) in enumerate(((80, 80, 200.0), (170, 170, 12.0)), 1):
        blob = _blob(15, 1.2, amp)
        signal[r - 7:r + 8, c - 7:c + 8] += blob
        truth[r - 7:r + 8, c - 7:c + 8][blob > amp / 2] = label
    roi = np.zeros(background.shape, bool)
    roi[40:216, 40:216] = True
    obs = roi_observer(signal, background, truth, roi, {1: "punctate", 2: "amorphous"}, 0.07)
    assert obs.kinds == ["punctate", "amorphous"]
    bright, faint = obs.found(1.0)
    assert bright > 0.99 and faint < 0.5
    assert obs.dprime[0] > 10 * obs.dprime[1]
    assert obs.found(100.0)[1] >= faint  # more false positives allowed: never less sensitive


def test_particles_found_takes_the_best_of_overlapping_rois():
    """A particle in two ROIs is found with the better of the two probabilities (keyed by truth label)."""
    quiet = RoiObserver(kinds=["punctate", "amorphous"], dprime=[6.0, 0.5], maxima=[np.zeros(3), np.zeros(3)],
                        area_cm2=1.0, labels=[4, 7])
    busy = RoiObserver(kinds=["amorphous"], dprime=[0.5], maxima=[np.full(50, -3.0)], area_cm2=1.0, labels=[7])
    found = particles_found([quiet, busy], 1.0)
    assert set(found) == {4, 7}
    assert found[4] > 0.99
    assert found[7] == pytest.approx(float(busy.found(1.0)[0])) and found[7] > quiet.found(1.0)[1]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("ceiling_set")
    generate_dataset(SynthConfig(cases=2, seed=31, rows=768, columns=640, type_weights=ALL_TYPES,
                                 lateralities=("L",), views=("CC",)), out, workers=1, progress=False)
    return out


def test_seg_ceiling_command_on_a_synth_set(small_set, tmp_path):
    """The background drawn again is the image minus its calcifications, exactly: so every
    particle's d' is finite and positive, and bright types are more detectable than amorphous."""
    out = tmp_path / "ceiling.json"
    run = subprocess.run([sys.executable, "-m", "dicom_node.cli", "seg-ceiling", "--data", str(small_set),
                          "--fp-per-cm2", "1", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["overall"]["particles"] >= 4 and report["skipped"] == []
    for row in report["by_type"].values():
        assert 0.0 <= row["sensitivity_at_1_fp_per_cm2"] <= 1.0
        assert row["dprime_p25_p50_p75"][0] > 0


def test_seg_ceiling_refuses_a_folder_it_cannot_use(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dicom_node.cli", "seg-ceiling", "--data", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "dataset.json" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.interop
def test_seg_ceiling_measures_a_background_inserted_set(interop, tmp_path):
    """An inserted real view is prepared again exactly as the simulator prepared it: image minus
    that background is only the particles, so the bound covers the real-background insertions that
    evaluate-seg counts too (at the view's own spacing)."""
    import pydicom
    from scipy import ndimage

    from training.synth.dataset import calcification_free_image

    data = tmp_path / "inserted"
    config = SynthConfig(cases=1, seed=5, type_weights=ALL_TYPES, backgrounds=(str(interop / "mg" / "MG1_J2KI.dcm"),))
    generate_dataset(config, data, workers=1, progress=False)
    (image,) = sorted((data / "dicom").rglob("MG_*.dcm"))
    (labels_file,) = sorted((data / "truth").rglob("*_labels.npz"))
    ds = pydicom.dcmread(image)
    labels = np.load(labels_file)["labels"]
    diff = ds.pixel_array.astype(float) - calcification_free_image(config, 0, "?", "?")
    near = ndimage.binary_dilation(labels > 0, iterations=6)
    assert labels.any() and np.abs(diff[~near]).max() <= 1.0 and diff[near].max() > 20
    out = tmp_path / "ceiling.json"
    run = subprocess.run([sys.executable, "-m", "dicom_node.cli", "seg-ceiling", "--data", str(data),
                          "--fp-per-cm2", "1", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["skipped"] == [] and report["overall"]["particles"] >= 3
    assert all(row["dprime_p25_p50_p75"][0] > 0 for row in report["by_type"].values())
    # moved away from its real views, the set is skipped with the reason, not a traceback
    meta = json.loads((data / "dataset.json").read_text())
    meta["config"]["backgrounds"] = [str(tmp_path / "gone.dcm")]
    (data / "dataset.json").write_text(json.dumps(meta))
    run = subprocess.run([sys.executable, "-m", "dicom_node.cli", "seg-ceiling", "--data", str(data)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "not found" in run.stderr and "gone.dcm" in run.stderr
    assert "Traceback" not in run.stderr
