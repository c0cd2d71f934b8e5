"""Tissue realism of the simulator (issue 20): the processed tissue's noise power spectrum against
real For Presentation views, the smooth tissue unchanged, and real PNG views as backgrounds.

The real views (../shared/interop/real-tissue, NYU GMIC sample) state no pixel spacing: 0.07 mm
(Hologic-like) is assumed, as in docs/simulator.md.
"""
from __future__ import annotations

import csv
import hashlib

import numpy as np
import pydicom
import pytest
from PIL import Image

from training.synth import anatomy
from training.synth.backgrounds import find_breast, lesion_mask, load_background
from training.synth.config import SynthConfig
from training.synth.dataset import generate_case, generate_dataset
from training.synth.processing import calcification_band_rms, calcification_contrast_scale
from training.synth.tissue_stats import BANDS, band_nps, mean_nps, view_nps

SPACING_MM = 0.07  # assumed for the real views
VIEWS = ("L-CC", "L-MLO", "R-CC", "R-MLO")


def _real_view(interop, view: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(interop / "real-tissue" / f"nyu_gmic_0_{view}.png")).astype(np.float32)
    small = find_breast(image[::4, ::4])
    breast = np.repeat(np.repeat(small, 4, 0), 4, 1)[: image.shape[0], : image.shape[1]]
    return image, breast


def test_band_nps_of_white_noise_is_its_variance():
    """The NPS unit: white noise of variance s² has NPS s² (DU² · px²) in every band."""
    rng = np.random.default_rng(0)
    patches = 2048.0 + rng.normal(0, 30.0, (8, 256, 256))
    for value in band_nps(patches).values():
        assert value == pytest.approx(900.0, rel=0.1)


@pytest.mark.interop
def test_processed_tissue_nps_matches_real_views(interop):
    """Per band from 0.05 to 0.5 cycles/pixel: 0.5 <= NPS(simulated) / NPS(real) <= 2, with the same
    function, at the same mean level. The smooth tissue fails it (it is 20-400x too quiet)."""
    real = mean_nps([view_nps(*_real_view(interop, v), SPACING_MM, max_patches=12)[0] for v in VIEWS])
    sims, smooth = [], []
    for seed, view in ((1, "CC"), (2, "MLO")):
        for tissue, into in (("processed", sims), ("smooth", smooth)):
            a = anatomy.make_anatomy((1600, 1200), SPACING_MM, view, np.random.default_rng(seed), tissue=tissue)
            into.append(view_nps(a.image, a.breast, SPACING_MM, exclude=a.pectoral, max_patches=12)[0])
    sim, old = mean_nps(sims), mean_nps(smooth)
    for band in BANDS:
        assert 0.5 <= sim[band] / real[band] <= 2.0, (band, sim[band], real[band])
    assert all(old[band] / real[band] < 0.1 for band in BANDS)


# The pixels, truth labels and particle tables of one small case, hashed before --tissue existed.
SMOOTH_CASE_SHA256 = "5634b4cbec2e6bb486696b0c4fb945416e774fa209380ba7d493555ec71adf1f"
SMOOTH_CONFIG_FINGERPRINT = "23c98013c0525839"


def test_smooth_tissue_reproduces_the_earlier_images(tmp_path):
    config = SynthConfig(cases=1, seed=5, rows=512, columns=384, tissue="smooth",
                         type_weights=(("amorphous", 1.0), ("punctate", 1.0)))
    assert config.fingerprint() == SMOOTH_CONFIG_FINGERPRINT  # so every UID is the same too
    assert "tissue" not in config.to_json()
    assert SynthConfig.from_json(config.to_json()).tissue == "smooth"
    generate_case(config, 0, tmp_path)
    h = hashlib.sha256()
    for p in sorted((tmp_path / "dicom").rglob("MG_*.dcm")):
        h.update(p.name.encode())
        h.update(pydicom.dcmread(p).pixel_array.tobytes())
    for p in sorted((tmp_path / "truth").rglob("*.npz")):
        h.update(p.name.encode())
        h.update(np.load(p)["labels"].tobytes())
    for p in sorted((tmp_path / "truth").rglob("*.csv")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    assert h.hexdigest() == SMOOTH_CASE_SHA256


def test_processed_tissue_is_deterministic_and_keeps_the_anatomy():
    # smooth stays the default until the segmentation is retrained on processed tissue (docs/simulator.md)
    assert SynthConfig().tissue == "smooth" and "tissue" not in SynthConfig().to_json()
    assert SynthConfig(tissue="processed").to_json()["tissue"] == "processed"
    a = anatomy.make_anatomy((512, 384), SPACING_MM, "MLO", np.random.default_rng(7), tissue="processed")
    b = anatomy.make_anatomy((512, 384), SPACING_MM, "MLO", np.random.default_rng(7), tissue="processed")
    s = anatomy.make_anatomy((512, 384), SPACING_MM, "MLO", np.random.default_rng(7), tissue="smooth")
    assert np.array_equal(a.image, b.image)
    # same outline and masks (the processing draws from its own child stream), other pixels
    assert np.array_equal(a.breast, s.breast) and np.array_equal(a.pectoral, s.pectoral)
    assert not np.array_equal(a.image, s.image)
    # a brighter skin line than the smooth model's
    rim = a.breast & (a.depth_mm < 1.0) & ~a.pectoral
    assert a.image[rim].mean() > s.image[rim].mean() + 100
    with pytest.raises(ValueError):
        SynthConfig(tissue="grainy")


def test_processed_dataset_background_is_redrawable(tmp_path):
    """calcification_free_image follows --tissue: image minus background is only the particles."""
    from training.synth.dataset import calcification_free_image

    config = SynthConfig(cases=1, seed=3, rows=512, columns=384, lateralities=("L",), views=("CC",))
    generate_dataset(config, tmp_path, workers=1, progress=False)
    ds = pydicom.dcmread(tmp_path / "dicom" / "SYNTH0001" / "MG_LCC.dcm")
    labels = np.load(tmp_path / "truth" / "SYNTH0001" / "LCC_labels.npz")["labels"]
    diff = ds.pixel_array.astype(float) - calcification_free_image(config, 0, "L", "CC")
    from scipy import ndimage as ndi
    near = ndi.binary_dilation(labels > 0, iterations=6)
    assert np.abs(diff[~near]).max() <= 1.0


def test_calcification_contrast_scale_follows_the_grain():
    """The smooth model's calcification-band noise is the reference (scale ~1); the processed tissue's
    grain is ~5x it, and its calcifications are scaled by as much (docs/simulator.md)."""
    smooth = [anatomy.make_anatomy((1600, 1200), SPACING_MM, view, np.random.default_rng(seed))
              for seed, view in ((11, "CC"), (12, "MLO"))]
    for a in smooth:
        assert 0.6 <= calcification_contrast_scale(a.image, a.breast, SPACING_MM) <= 1.4
    processed = anatomy.make_anatomy((1600, 1200), SPACING_MM, "CC", np.random.default_rng(11), tissue="processed")
    assert 3.0 <= calcification_contrast_scale(processed.image, processed.breast, SPACING_MM) <= 8.0
    # the measure is of noise, not of the image's grey levels: the same image shifted reads the same
    a = smooth[0]
    assert calcification_band_rms(a.image + 300.0, a.breast, SPACING_MM) == pytest.approx(
        calcification_band_rms(a.image, a.breast, SPACING_MM), rel=1e-3)


def test_processed_tissue_calcifications_are_scaled_to_its_grain(tmp_path):
    """The same case drawn on smooth and on processed tissue: the same particles in the same places,
    their contrast multiplied by the processed image's contrast scale (> 3), nothing else."""
    tables = {}
    for tissue in ("smooth", "processed"):
        config = SynthConfig(cases=1, seed=9, rows=1024, columns=768, lateralities=("L",), views=("CC",),
                             tissue=tissue, type_weights=(("punctate", 1.0),))
        generate_dataset(config, tmp_path / tissue, workers=1, progress=False)
        tables[tissue] = list(csv.DictReader(open(tmp_path / tissue / "truth" / "SYNTH0001" / "LCC_particles.csv")))
    # label 0: the distractors (skin marks, noise peaks), which the processed tissue adds to
    smooth = {r["label"]: r for r in tables["smooth"] if r["label"] != "0"}
    processed = {r["label"]: r for r in tables["processed"] if r["label"] != "0"}
    assert len(smooth) >= 5 and set(smooth) == set(processed)
    ratios = [float(processed[k]["peak_contrast"]) / float(s["peak_contrast"]) for k, s in smooth.items()]
    assert all((s["x"], s["y"], s["kind"]) == (processed[k]["x"], processed[k]["y"], processed[k]["kind"])
               for k, s in smooth.items())
    assert 3.0 <= min(ratios) and max(ratios) - min(ratios) < 1e-3 * max(ratios)


@pytest.mark.interop
def test_png_views_as_backgrounds(interop, tmp_path):
    """16-bit PNG views: assumed spacing, laterality/view from the name, lesion kept free of clusters."""
    folder = interop / "real-tissue"
    r_cc = folder / "nyu_gmic_0_R-CC.png"
    bg = load_background(r_cc, SPACING_MM)
    assert (bg.laterality, bg.view, bg.flipped, bg.spacing_source) == ("R", "CC", True, "assumed")
    lesion = lesion_mask(r_cc, bg.anatomy.image.shape, "CC", True)
    assert lesion is not None and lesion.sum() > 10000
    assert bg.anatomy.pectoral[lesion].all()  # the kept-out region holds the lesion
    # the mapped lesion holds the brightest specks of its neighbourhood (its calcifications)
    assert np.percentile(bg.anatomy.image[lesion], 99.9) > np.percentile(bg.anatomy.image[bg.anatomy.breast], 99)
    left = load_background(folder / "nyu_gmic_0_L-MLO.png", SPACING_MM)
    assert (left.laterality, left.view, left.flipped) == ("L", "MLO", False)
    # a real For Presentation view's grain is several times the smooth model's noise: calcifications
    # inserted into it are scaled by as much (they were scaled by at most 2, and buried in it)
    for view in (bg, left):
        assert 3.0 <= view.contrast_scale <= 8.0

    out = tmp_path / "bg"
    views = tuple(str(folder / f"nyu_gmic_0_{v}.png") for v in VIEWS)
    generate_dataset(SynthConfig(cases=4, seed=4, max_clusters=3, backgrounds=views, background_spacing_mm=SPACING_MM),
                     out, workers=1, progress=False)
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert rows and {r["background"] for r in rows} <= {f"nyu_gmic_0_{v}.png" for v in VIEWS}
    for r in rows:
        assert r["spacing_source"] == "assumed" and float(r["pixel_spacing_mm"]) == SPACING_MM
        assert r["laterality"] + "-" + r["view"] in r["background"]
        if r["background"] == "nyu_gmic_0_R-CC.png":
            labels = np.load(out / r["truth_labels_file"])["labels"]  # stored orientation
            assert not (labels[:, ::-1] > 0)[lesion].any()
        ds = pydicom.dcmread(out / r["image_file"])
        assert "assumed 0.07 mm" in ds.DerivationDescription
