"""The simulator (training.synth): DICOM validity, truth, determinism, outcome model."""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import PYDICOM_ROOT_UID, UID

from common.durable import atomic_path
from training.synth import anatomy, clusters
from training.synth.calcifications import TYPE_PROPERTIES, make_particle, render_particle
from training.synth.config import SynthConfig
from training.synth.dataset import Progress, generate_case, generate_dataset

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT.parent / "shared" / "interop"
DCIODVFY = "/usr/bin/dciodvfy"
DCENTVFY = "/usr/bin/dcentvfy"
ALL_TYPES = (("amorphous", 2.0), ("punctate", 1.0), ("fine_pleomorphic", 1.0), ("fine_linear_branching", 1.0))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def gsps_set(tmp_path_factory) -> Path:
    """3 cases x 4 views, 768x640 at 0.07 mm, every type, polylines/circles/ellipses. Smooth tissue:
    the model-free contrast check below fits the local background, which the processed tissue's
    grain swamps (the processed path: tests/test_synth_realism.py)."""
    out = tmp_path_factory.mktemp("synth_gsps")
    generate_dataset(SynthConfig(cases=3, seed=11, rows=768, columns=640, type_weights=ALL_TYPES,
                                 roi_shape="mixed", max_clusters=2, tissue="smooth"), out, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def polyline_set(tmp_path_factory) -> Path:
    """Amorphous only, polylines: the default kind of data."""
    out = tmp_path_factory.mktemp("synth_poly")
    generate_dataset(SynthConfig(cases=3, seed=5, rows=768, columns=640, max_clusters=2),
                     out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def seg_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_seg")
    generate_dataset(SynthConfig(cases=1, seed=3, rows=512, columns=384, roi_format="seg",
                                 lateralities=("L",)), out, workers=1, progress=False)
    return out


def need(tool: str) -> str:
    if not Path(tool).exists():
        pytest.skip(f"{tool} is not installed (apt-get install dicom3tools)")
    return tool


def dciodvfy_errors(path: Path) -> list[str]:
    res = subprocess.run([need(DCIODVFY), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (res.stdout + res.stderr).splitlines() if "Error" in line]


# --------------------------------------------------------------------------- CLI
def test_cli_registers_synth_subcommand(tmp_path):
    from dicom_node.commands import synth as cli

    parser = argparse.ArgumentParser(prog="calcnode")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path), "--cases", "2", "--size", "512x384",
                              "--seed", "4", "--roi-format", "seg", "--types", "amorphous:3,punctate"])
    assert args.func is cli.run
    config = cli.config_from_args(args)
    assert (config.rows, config.columns, config.cases, config.seed) == (512, 384, 2, 4)
    assert config.roi_format == "seg"
    assert dict(config.type_weights) == {"amorphous": 3.0, "punctate": 1.0}
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--size", "big"])


def test_cli_run_writes_a_data_set(tmp_path, capsys):
    from dicom_node.commands import synth as cli

    out = tmp_path / "ds"
    code = cli.main(["--out", str(out), "--cases", "1", "--size", "512x384", "--lateralities", "L",
                     "--workers", "1"])
    assert code == 0
    assert "best achievable AUC 0.800" in capsys.readouterr().out
    assert (out / "labels.csv").is_file() and (out / "dataset.json").is_file()
    assert len(list((out / "dicom" / "SYNTH0001").glob("MG_*.dcm"))) == 2
    assert cli.main(["--cases", "1"]) == 2  # neither --out nor --preview


def test_cli_is_reachable_from_calcnode():
    try:
        from dicom_node.cli import build_parser
    except ImportError as exc:  # the node's CLI may be mid-construction in this tree
        pytest.skip(f"dicom_node.cli not importable here: {exc}")
    args = build_parser().parse_args(["synth", "--out", "x"])
    assert args.command == "synth"


# --------------------------------------------------------------------------- DICOM
def test_images_load_with_the_project_reader(gsps_set):
    from analysis.dicom_input import load_image

    mgs = sorted((gsps_set / "dicom").glob("*/MG_*.dcm"))
    assert len(mgs) == 12
    for path in mgs:
        image = load_image(path)
        ds = pydicom.dcmread(path)
        assert image.pixels.dtype == np.float32 and image.shape == (768, 640)
        np.testing.assert_allclose(image.pixels, ds.pixel_array / 4095.0, atol=1e-6)
        assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
        assert image.pixel_spacing_mm == (0.07, 0.07)
        assert image.geometry.spacing_source == "ImagerPixelSpacing"
        assert image.presentation_intent == "FOR PRESENTATION"
        assert not image.inverted and image.bits_stored == 12
        lat, view = re.match(r"MG_([LR])(CC|MLO)\.dcm", path.name).groups()
        assert (image.laterality, image.view) == (lat, view)
        assert "HOLOGIC" in image.manufacturer
        assert ds.BurnedInAnnotation == "NO"
        assert re.fullmatch(r"SYNTH\^CASE\d{4}", str(ds.PatientName))
        assert re.fullmatch(r"SYNTH\d{4}", ds.PatientID)
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert UID(uid).is_valid and uid.startswith(PYDICOM_ROOT_UID + "11.")  # seed 11


def test_breast_is_on_the_chest_wall_side(gsps_set):
    """Left breasts have the chest wall at column 0, right breasts at the last column."""
    for path in sorted((gsps_set / "dicom").glob("*/MG_*.dcm")):
        px = pydicom.dcmread(path).pixel_array
        left, right = px[:, :40].mean(), px[:, -40:].mean()
        assert (left > right) == ("MG_L" in path.name), path.name


def test_study_structure(gsps_set):
    for patient in sorted((gsps_set / "dicom").iterdir()):
        mgs = [pydicom.dcmread(p, stop_before_pixels=True) for p in patient.glob("MG_*.dcm")]
        assert len({d.StudyInstanceUID for d in mgs}) == 1
        assert len({d.SeriesInstanceUID for d in mgs}) == 1
        assert sorted(int(d.InstanceNumber) for d in mgs) == [1, 2, 3, 4]
        assert {(d.ImageLaterality, d.ViewPosition) for d in mgs} == {
            ("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")}
        for pr in patient.glob("PR_*.dcm"):
            prd = pydicom.dcmread(pr)
            assert prd.StudyInstanceUID == mgs[0].StudyInstanceUID
            assert prd.PatientID == mgs[0].PatientID


def test_mg_and_gsps_pass_dciodvfy(gsps_set):
    files = sorted((gsps_set / "dicom").glob("*/*.dcm"))
    shapes = {str(pydicom.dcmread(p).GraphicAnnotationSequence[0].GraphicObjectSequence[0].GraphicType)
              for p in files if p.name.startswith("PR_")}
    assert shapes  # at least one GSPS
    for path in files:
        assert dciodvfy_errors(path) == [], path


def test_gsps_of_every_graphic_type_passes_dciodvfy(tmp_path):
    from training.synth.dicom_writer import ImageInfo, UidFactory, gsps_dataset, mg_dataset, save
    from training.synth.roi_outline import draw_outline

    uid = UidFactory("test", 0)
    info = ImageInfo("SYNTH0001", "SYNTH^CASE0001", uid("st"), uid("se"), uid("im"), "S0001", "20200101",
                     "093000", 1, 1, "R", "MLO", 0.07, "CALCNODE SYNTH (HOLOGIC-LIKE)")
    ds = mg_dataset(np.full((300, 200), 1000, np.uint16), info)
    rng = np.random.default_rng(0)
    pts, radii = np.array([[90.0, 140.0], [110.0, 150.0], [100.0, 130.0]]), np.full(3, 3.0)
    rois = [(f"ROI {i + 1}", uid("roi", i), draw_outline(pts, radii, 0.07, rng, shape, (300, 200)))
            for i, shape in enumerate(["polyline", "circle", "ellipse"])]
    save(ds, tmp_path / "mg.dcm")
    save(gsps_dataset(ds, rois, uid("prs"), uid("pr"), 1, "X", "20200101", "093000"), tmp_path / "pr.dcm")
    assert dciodvfy_errors(tmp_path / "pr.dcm") == []
    types = [str(o.GraphicType) for o in
             pydicom.dcmread(tmp_path / "pr.dcm").GraphicAnnotationSequence[0].GraphicObjectSequence]
    assert types == ["POLYLINE", "CIRCLE", "ELLIPSE"]


def test_seg_passes_dciodvfy_and_reads_back_with_highdicom(seg_set):
    import highdicom as hd

    segs = sorted((seg_set / "dicom").glob("*/SEG_*.dcm"))
    assert segs
    rows = _rows(seg_set / "labels.csv")
    for path in segs:
        assert dciodvfy_errors(path) == [], path
        seg = hd.seg.segread(path)
        mine = [r for r in rows if r["roi_file"].endswith(path.name)]
        assert seg.number_of_segments == len(mine)
        mg = pydicom.dcmread(seg_set / mine[0]["image_file"], stop_before_pixels=True)
        assert seg.PatientOrientation == mg.PatientOrientation
        assert seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing == [0.07, 0.07]


def test_patient_objects_are_consistent_for_dcentvfy(gsps_set):
    need(DCENTVFY)
    files = sorted(str(p) for p in (gsps_set / "dicom" / "SYNTH0001").glob("*.dcm"))
    res = subprocess.run([DCENTVFY, *files], capture_output=True, text=True, timeout=120)
    assert [line for line in (res.stdout + res.stderr).splitlines() if "Error" in line] == []


# --------------------------------------------------------------------------- truth
def _roi_polygon(path: Path, roi_id: int) -> np.ndarray:
    from training.synth.roi_outline import RoiShape

    obj = pydicom.dcmread(path).GraphicAnnotationSequence[0].GraphicObjectSequence[roi_id - 1]
    return RoiShape(str(obj.GraphicType), np.array(obj.GraphicData, float).reshape(-1, 2)).polygon()


def test_truth_matches_what_was_asked(gsps_set, tmp_path):
    """Counts, sizes (mm) and contrasts measured from the files against the request."""
    from scipy import ndimage as ndi

    from training.synth.dataset import image_rng
    from training.synth.preview import draw_rois

    rows = _rows(gsps_set / "labels.csv")
    assert len(rows) >= 6
    png = draw_rois(gsps_set, rows, tmp_path / "rois_vs_truth.png", max_rois=4)
    assert png.stat().st_size > 10_000
    cfg = SynthConfig(cases=3, seed=11, rows=768, columns=640, tissue="smooth")
    plan = [(lat, view) for lat in cfg.lateralities for view in cfg.views]
    exact, local, requested, sizes = [], [], [], []
    for row in rows:
        px = pydicom.dcmread(gsps_set / row["image_file"]).pixel_array.astype(float)
        labels = np.load(gsps_set / row["truth_labels_file"])["labels"]
        assert labels.shape == px.shape and labels.dtype == np.uint16
        # the calcification-free background, re-drawn from the image's own random stream
        case, image = int(row["patient_id"][5:]) - 1, plan.index((row["laterality"], row["view"]))
        bg = anatomy.make_anatomy(px.shape, 0.07, row["view"], image_rng(cfg, case, image), tissue=cfg.tissue).image
        bg = np.clip(bg, 0, 4095)[:, ::-1] if row["laterality"] == "R" else np.clip(bg, 0, 4095)
        parts = [p for p in _rows(gsps_set / row["truth_particles_file"]) if p["roi_id"] == row["roi_id"]]
        present = [p for p in parts if int(p["area_px"]) > 0]
        # count: table == labels.csv == distinct labels inside the ROI in the label image
        assert int(row["particle_count"]) == len(present) >= 4
        roi_mask = _mask_of(_roi_polygon(gsps_set / row["roi_file"], int(row["roi_id"])), px.shape)
        assert {int(p["label"]) for p in present} <= set(np.unique(labels[roi_mask])) - {0}
        for p in present:
            m = labels == int(p["label"])
            assert int(m.sum()) == int(p["area_px"])
            # size: equivalent diameter of the truth mask vs the requested diameter (blobs >= 0.2 mm)
            if p["kind"] != "fine_linear_branching" and float(p["diameter_mm"]) >= 0.2:
                sizes.append(2 * np.sqrt(m.sum() / np.pi) * 0.07 / float(p["diameter_mm"]))
            requested.append(float(p["rendered_mean"]))
            # contrast 1: image minus the true background under the particle
            exact.append((px[m] - bg[m]).mean())
            # contrast 2, model-free: minus a quadratic fitted to a ring 3-6 px out
            sl = tuple(slice(max(s.start - 8, 0), s.stop + 8) for s in ndi.find_objects(m.astype(np.uint8))[0])
            ring = ndi.binary_dilation(m[sl], iterations=6) & ~ndi.binary_dilation(m[sl], iterations=3)
            ring &= ~ndi.binary_dilation(labels[sl] > 0, iterations=3)
            yy, xx = np.nonzero(ring)
            coef = np.linalg.lstsq(np.c_[np.ones(yy.size), yy, xx, yy * yy, xx * xx, yy * xx],
                                   px[sl][ring], rcond=None)[0]
            my, mx = np.nonzero(m[sl])
            fit = np.c_[np.ones(my.size), my, mx, my * my, mx * mx, my * mx] @ coef
            local.append((px[sl][m[sl]] - fit).mean())
    sizes, exact, local, requested = map(np.array, (sizes, exact, local, requested))
    assert len(sizes) >= 20
    assert abs(np.median(sizes) - 1.0) < 0.12 and np.all(np.abs(sizes - 1.0) < 0.45)
    # exact up to 12-bit rounding and neighbours' blur tails
    assert np.all(np.abs(exact - requested) < 1.0 + 0.05 * requested)
    # against the local background: texture and noise blur it, but on average it holds
    assert 0.7 < np.median(local / requested) < 1.3
    assert np.corrcoef(local, requested)[0, 1] > 0.7


def _mask_of(poly: np.ndarray, shape) -> np.ndarray:
    from skimage.draw import polygon

    m = np.zeros(shape, bool)
    rr, cc = polygon(poly[:, 1] - 0.5, poly[:, 0] - 0.5, shape)
    m[rr, cc] = True
    return m


def test_particle_contrast_is_physical():
    """Peak contrast grows with size, and amorphous particles are fainter than punctate ones."""
    rng = np.random.default_rng(0)
    peaks = {}
    for kind in ("amorphous", "punctate"):
        ps = [make_particle(kind, rng, 0.3, 0.2) for _ in range(200)]
        d = np.array([p.diameter_mm for p in ps])
        peak = np.array([render_particle(p, 0.07).contribution.max() for p in ps])
        assert np.corrcoef(d, peak)[0, 1] > 0.6
        assert d.min() >= TYPE_PROPERTIES[kind]["lo"] and d.max() <= TYPE_PROPERTIES[kind]["hi"]
        peaks[kind] = np.median(peak / d)
    assert peaks["amorphous"] < 0.6 * peaks["punctate"]
    # the same particle at a coarser spacing is blurred more: lower peak, same integral
    p = make_particle("punctate", rng, 0.0, 0.0)
    fine, coarse = render_particle(p, 0.05), render_particle(p, 0.1)
    assert coarse.contribution.max() < fine.contribution.max()
    np.testing.assert_allclose(coarse.contribution.sum() * 0.1 ** 2, fine.contribution.sum() * 0.05 ** 2, rtol=0.03)


def test_roi_contains_its_particles_and_is_loose(polyline_set):
    rows = _rows(polyline_set / "labels.csv")
    assert rows and {r["roi_graphic_type"] for r in rows} == {"POLYLINE"}
    from scipy.spatial import ConvexHull

    for row in rows:
        labels = np.load(polyline_set / row["truth_labels_file"])["labels"]
        poly = _roi_polygon(polyline_set / row["roi_file"], int(row["roi_id"]))
        assert np.allclose(poly[0], poly[-1])  # closed
        parts = [p for p in _rows(polyline_set / row["truth_particles_file"]) if p["roi_id"] == row["roi_id"]]
        mask = np.isin(labels, [int(p["label"]) for p in parts])
        rr, cc = np.nonzero(mask)
        from training.synth.roi_outline import points_inside

        assert points_inside(poly, np.stack([cc + 0.5, rr + 0.5], axis=1)).all()
        hull = ConvexHull(np.stack([cc, rr], axis=1))
        roi_area = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
        assert roi_area > 2.0 * hull.volume  # loose, not the convex hull


def test_rois_read_back_with_the_project_roi_reader(polyline_set, seg_set):
    try:
        from analysis.dicom_input.rois import read_rois
    except ImportError as exc:
        pytest.skip(f"analysis.dicom_input.rois not available: {exc}")
    from analysis.dicom_input import read_geometry

    for ds_dir in (polyline_set, seg_set):
        rows = _rows(ds_dir / "labels.csv")
        for row in rows:
            geometry = read_geometry(ds_dir / row["image_file"])
            rois = read_rois(ds_dir / row["roi_file"], images=[geometry])
            mine = [r for r in rois if r.referenced_sop_instance_uid == row["image_sop_instance_uid"]]
            roi = mine[int(row["roi_id"]) - 1]
            assert roi.kind == ("seg" if row["roi_format"] == "seg" else "polygon")
            mask = roi.rasterise(geometry)
            labels = np.load(ds_dir / row["truth_labels_file"])["labels"]
            parts = [int(p["label"]) for p in _rows(ds_dir / row["truth_particles_file"])
                     if p["roi_id"] == row["roi_id"]]
            inside = np.isin(labels, parts)
            assert inside.any() and not (inside & ~mask).any()


# --------------------------------------------------------------------------- determinism
def _hashes(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix == ".npz":  # compare the arrays, not the zip container's metadata
                with np.load(p) as z:
                    data = b"".join(z[k].tobytes() for k in sorted(z.files))
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def test_same_seed_same_files_parallel_equals_serial(tmp_path):
    cfg = SynthConfig(cases=3, seed=21, rows=512, columns=384, lateralities=("L",), views=("CC",))
    generate_dataset(cfg, tmp_path / "a", workers=1, progress=False)
    generate_dataset(cfg, tmp_path / "b", workers=2, progress=False)
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha and ha == hb
    assert (tmp_path / "a" / "truth" / "SYNTH0001" / "LCC_labels.npz").read_bytes() == \
        (tmp_path / "b" / "truth" / "SYNTH0001" / "LCC_labels.npz").read_bytes()
    other = SynthConfig(cases=3, seed=22, rows=512, columns=384, lateralities=("L",), views=("CC",))
    generate_dataset(other, tmp_path / "c", workers=2, progress=False)
    hc = _hashes(tmp_path / "c")
    assert hc.keys() == ha.keys()
    differing = [k for k in ha if ha[k] != hc[k] and k != "dataset.json"]
    assert any(k.endswith("MG_LCC.dcm") for k in differing)
    assert any(k.endswith("_labels.npz") for k in differing)
    uids = lambda d: pydicom.dcmread(d / "dicom" / "SYNTH0001" / "MG_LCC.dcm").SOPInstanceUID  # noqa: E731
    assert uids(tmp_path / "a") == uids(tmp_path / "b") != uids(tmp_path / "c")


def test_per_case_streams_do_not_depend_on_other_cases(tmp_path):
    """Case 2 of a 3-case run is the same as case 2 generated alone."""
    cfg = SynthConfig(cases=3, seed=8, rows=512, columns=384, lateralities=("R",), views=("MLO",))
    generate_dataset(cfg, tmp_path / "all", workers=1, progress=False)
    generate_case(cfg, 1, tmp_path / "one")
    a = (tmp_path / "all" / "dicom" / "SYNTH0002" / "MG_RMLO.dcm").read_bytes()
    b = (tmp_path / "one" / "dicom" / "SYNTH0002" / "MG_RMLO.dcm").read_bytes()
    assert a == b


# --------------------------------------------------------------------------- outcome model
def test_bayes_auc_falls_with_difficulty_and_is_below_one_by_default():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(123)
    aucs = []
    for d in (0.1, 0.4, 0.7, 0.95):
        y, z, llr = clusters.draw_latents(600, rng, d)
        auc = roc_auc_score(y, llr)
        aucs.append(auc)
        assert abs(auc - clusters.bayes_auc(d)) < 0.06  # the documented formula
    assert all(a > b for a, b in zip(aucs, aucs[1:]))
    assert aucs[1] < 1.0 and clusters.bayes_auc(SynthConfig().difficulty) == pytest.approx(0.8)
    # no classifier on z beats the LLR: e.g. the best single feature is worse
    y, z, llr = clusters.draw_latents(3000, rng, 0.4)
    best_single = max(roc_auc_score(y, z[:, k]) for k in range(z.shape[1]))
    assert best_single < roc_auc_score(y, llr)


def test_class_shifts_the_features_the_paper_uses():
    """Actionable clusters: more size variability, more elongated, wider spread, denser
    surroundings (measured on drawn particles, not on the latent parameters)."""
    rng = np.random.default_rng(7)
    stats = {True: [], False: []}
    for i in range(300):
        c = clusters.make_cluster(rng, 1, "amorphous", 0.2, 0.5)
        d = np.array([p.diameter_mm for p in c.particles])
        off = c.offsets_mm
        ev = np.sort(np.linalg.eigvalsh(np.cov(off.T)))
        pair = np.mean([np.hypot(*(a - b)) for k, a in enumerate(off) for b in off[:k]])
        stats[c.latent.actionable].append((d.std() / d.mean(), np.sqrt(ev[1] / max(ev[0], 1e-9)), pair,
                                           c.params.density_quantile))
    pos, neg = np.array(stats[True]), np.array(stats[False])
    assert len(pos) > 50 and len(neg) > 50
    assert np.all(pos.mean(axis=0) > neg.mean(axis=0))
    # ... with real overlap: each feature alone is far from separating the classes
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    for k in range(4):
        assert 0.55 < roc_auc_score(y, np.r_[pos[:, k], neg[:, k]]) < 0.9


def test_labels_csv_scores_match_the_latent_parameters(gsps_set):
    cl = {(r["patient_id"], r["cluster_id"]): r for r in _rows(gsps_set / "clusters.csv")}
    cfg = SynthConfig()
    for row in _rows(gsps_set / "labels.csv"):
        c = cl[(row["patient_id"], row["cluster_id"])]
        z = np.array([float(c[f"z_{f}"]) for f in clusters.FEATURES])
        llr = float(clusters.bayes_llr(z, cfg.difficulty))
        assert float(row["bayes_llr"]) == pytest.approx(llr, abs=1e-4)
        assert float(row["bayes_score"]) == pytest.approx(float(clusters.bayes_posterior(llr, 0.3)), abs=1e-5)
        assert row["outcome"] == c["outcome"] in ("benign", "actionable")
        assert row["distribution"] in clusters.DISTRIBUTIONS


# --------------------------------------------------------------------------- anatomy
def test_texture_has_a_power_law_spectrum():
    rng = np.random.default_rng(0)
    field = anatomy.power_law_field((1024, 1024), 0.14, rng, beta=3.0)
    assert abs(anatomy.spectrum_slope(field, 0.14) - 3.0) < 0.15
    a = anatomy.make_anatomy((1536, 1280), 0.07, "CC", rng)
    r, c = (np.array(a.nipple_rc) * [1.0, 0.45]).astype(int)
    patch = a.image[r - 256:r + 256, c - 256:c + 256]
    assert a.breast[r - 256:r + 256, c - 256:c + 256].all()
    assert 2.4 < anatomy.spectrum_slope(patch, 0.07, (0.1, 1.0)) < 3.6


def test_anatomy_has_pectoral_on_mlo_only_and_distractors():
    rng = np.random.default_rng(2)
    cc = anatomy.make_anatomy((1024, 768), 0.07, "CC", rng)
    mlo = anatomy.make_anatomy((1024, 768), 0.07, "MLO", rng)
    assert not cc.pectoral.any() and mlo.pectoral.any()
    assert mlo.image[mlo.pectoral].mean() > mlo.image[mlo.breast & ~mlo.pectoral].mean()
    assert cc.image[~cc.breast].mean() < 200 < cc.image[cc.breast].mean()
    kinds = {d["kind"] for d in cc.distractors + mlo.distractors}
    assert "noise_peak" in kinds


# --------------------------------------------------------------------------- real backgrounds
@pytest.mark.interop
@pytest.mark.parametrize("name,expected_shape", [
    ("MG1_J2KI.dcm", (4664, 3064)),
    ("cbis_ddsm/benign_1-130.dcm", (4432, 2864)),
])
def test_clusters_inserted_into_real_mammograms(interop, tmp_path, name, expected_shape):
    from analysis.dicom_input import load_image

    src = interop / "mg" / name
    out = tmp_path / "bg"
    generate_dataset(SynthConfig(cases=1, seed=2, backgrounds=(str(src),)), out, workers=1, progress=False)
    rows = _rows(out / "labels.csv")
    assert rows and all(r["pixel_spacing_mm"] == "0.05" and r["spacing_source"] == "assumed" for r in rows)
    mg = out / rows[0]["image_file"]
    image = load_image(mg)
    ds = pydicom.dcmread(mg)
    assert image.shape == expected_shape and image.pixel_spacing_mm == (0.05, 0.05)
    assert ds.BitsStored == 12 and int(ds.pixel_array.max()) <= 4095
    assert "assumed 0.05 mm" in ds.DerivationDescription
    assert str(ds.PatientName).startswith("SYNTH^") and "DERIVED" in ds.ImageType
    assert dciodvfy_errors(mg) == []
    assert dciodvfy_errors(out / rows[0]["roi_file"]) == []
    # inserted particles at 0.05 mm: diameters in mm preserved
    parts = [p for p in _rows(out / rows[0]["truth_particles_file"]) if p["label"] != "0"]
    ratio = [float(p["equivalent_diameter_mm"]) / float(p["diameter_mm"]) for p in parts
             if float(p["diameter_mm"]) >= 0.2]
    assert ratio and abs(np.median(ratio) - 1.0) < 0.12


# --------------------------------------------------------------------------- files and progress
def test_atomic_writes_leave_nothing_behind(tmp_path, gsps_set):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    assert not list(gsps_set.rglob("*.partial"))


def test_progress_line():
    stream = io.StringIO()
    bar = Progress(20, stream=stream)
    for _ in range(20):
        bar.update()
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 11 and lines[-1].startswith("synth: 20/20 cases (100%)")


def test_preview_picture(tmp_path):
    from training.synth.preview import render_preview

    png = render_preview(tmp_path / "p.png", seed=1, rows=1024, columns=768)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 300_000
    committed = ROOT / "docs" / "img" / "synth_example.png"
    assert committed.is_file() and committed.stat().st_size < 300_000


@pytest.mark.interop
def test_background_right_breast_monochrome1_with_stated_spacing(interop, tmp_path):
    """A right-breast MONOCHROME1 background that states its spacing: the spacing is used,
    the image keeps its orientation, the clusters land inside the breast."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    src = pydicom.dcmread(interop / "mg" / "MG1_J2KI.dcm").pixel_array[::2, ::2][:, ::-1]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.ImageLaterality, ds.ViewPosition = "MG", "R", "MLO"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.Rows, ds.Columns = src.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(4095 - src).astype(np.uint16).tobytes()
    path = tmp_path / "rmlo.dcm"
    ds.save_as(path, enforce_file_format=True)

    out = tmp_path / "out"
    generate_dataset(SynthConfig(cases=1, seed=4, backgrounds=(str(path),)), out, workers=1, progress=False)
    rows = _rows(out / "labels.csv")
    assert rows and rows[0]["spacing_source"] == "ImagerPixelSpacing" and rows[0]["pixel_spacing_mm"] == "0.1"
    assert (rows[0]["laterality"], rows[0]["view"]) == ("R", "MLO")
    mg = pydicom.dcmread(out / rows[0]["image_file"])
    assert mg.PhotometricInterpretation == "MONOCHROME2" and mg.PatientOrientation == ["P", "FL"]
    px = mg.pixel_array.astype(float)
    assert np.corrcoef(px[::8, ::8].ravel(), src[::8, ::8].astype(float).ravel())[0, 1] > 0.95
    labels = np.load(out / rows[0]["truth_labels_file"])["labels"]
    rr, cc = np.nonzero(labels)
    assert rr.size and np.median(src[rr, cc]) > np.percentile(src, 40)  # in the breast, not the air
    assert dciodvfy_errors(out / rows[0]["image_file"]) == []


def test_generated_studies_are_stored_whole_by_a_running_node(gsps_set, seg_set, node):
    """What a site does to smoke-test a deployment: send a generated study with DCMTK storescu."""
    import pydicom

    files = sorted((gsps_set / "dicom").rglob("*.dcm")) + sorted((seg_set / "dicom").rglob("*.dcm"))
    assert any(f.name.startswith("PR_") for f in files) and any(f.name.startswith("SEG_") for f in files)
    result = node.storescu(*files)
    assert result.returncode == 0, result.stderr
    sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert {p.stem for p in node.stored_files()} == sent
    studies = {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
    assert {p.parent.name for p in node.stored_files()} == studies


def test_calcification_types_use_the_writers_names_and_accept_the_old_one():
    from analysis.results import CALCIFICATION_TYPES as WRITER_TYPES
    from training.synth.config import CALCIFICATION_TYPES, parse_type_weights

    assert set(CALCIFICATION_TYPES) <= set(WRITER_TYPES)  # every simulated type can be coded in an SR
    assert parse_type_weights("amorphous:3,fine_linear") == (("amorphous", 3.0), ("fine_linear_branching", 1.0))
