"""The case loop: anatomy -> clusters -> pixels -> DICOM + truth files, in parallel.

Output layout (see docs/simulator.md)::

    OUT/dataset.json                 run parameters, counts, expected Bayes AUC
    OUT/labels.csv                   one row per ROI (the outcome table)
    OUT/clusters.csv                 one row per cluster: latent and physical parameters
    OUT/dicom/SYNTH0001/MG_LCC.dcm   images (one study per patient, one MG series)
    OUT/dicom/SYNTH0001/PR_LCC.dcm   GSPS with the ROIs of that image (or SEG_LCC.dcm)
    OUT/truth/SYNTH0001/LCC_labels.npz     per-particle label image (uint16)
    OUT/truth/SYNTH0001/LCC_particles.csv  one row per particle and distractor

Per-case random streams come from ``SeedSequence(seed, spawn_key=(case,))`` (and
``(case, image)`` for each image) so a case is the same whatever the number of
workers or the order cases finish in.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.durable import atomic_path, remove_partials, write_text

from . import anatomy as anatomy_mod
from .anatomy import SUBCUTANEOUS_FAT_MM
from .calcifications import CALC_GAIN, paste, render_particle
from .processing import calcification_contrast_scale
from .clusters import FEATURES, Cluster, bayes_auc, make_cluster
from .config import SynthConfig
from .dicom_writer import ImageInfo, UidFactory, gsps_dataset, mg_dataset, save, seg_dataset, study_date
from .roi_outline import draw_outline

LABEL_COLUMNS = [
    "patient_id", "study_instance_uid", "series_instance_uid", "image_sop_instance_uid",
    "image_file", "roi_file", "roi_format", "roi_id", "roi_tracking_uid", "roi_graphic_type",
    "laterality", "view", "cluster_id", "outcome", "calcification_type", "distribution",
    "particle_count", "bayes_score", "bayes_llr", "layout_scale", "density_quantile",
    "pixel_spacing_mm", "spacing_source",
    "background", "truth_labels_file", "truth_particles_file",
]
CLUSTER_COLUMNS = (["patient_id", "cluster_id", "outcome", "calcification_type", "distribution",
                    "n_particles", "bayes_llr", "bayes_score"]
                   + [f"z_{f}" for f in FEATURES]
                   + ["size_cv", "irregularity", "aspect", "spread_mm", "density_quantile"])
PARTICLE_COLUMNS = [
    "label", "kind", "roi_id", "cluster_id", "x", "y", "row", "col", "diameter_mm", "length_mm",
    "thickness_mm", "mu_per_mm", "haze_mm", "peak_contrast", "rendered_peak", "rendered_mean",
    "area_px", "area_mm2", "equivalent_diameter_mm",
]


@dataclass
class CaseResult:
    case_index: int
    label_rows: list[dict] = field(default_factory=list)
    cluster_rows: list[dict] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0


def patient_id(case_index: int) -> str:
    return f"SYNTH{case_index + 1:04d}"


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _fmt(row.get(k)) for k in columns})
    return buf.getvalue()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    return str(v)


# --------------------------------------------------------------------------- placement
def place_cluster(anat: anatomy_mod.Anatomy, cluster: Cluster, spacing_mm: float,
                  rng: np.random.Generator, taken: list[tuple[np.ndarray, float]]
                  ) -> tuple[np.ndarray, float, float, float] | None:
    """Choose the cluster centre (row, col), axis angle and layout scale for one view.

    The centre is inside the breast, at least the cluster's extent + 4 mm from the image
    edges and the pectoral muscle, that + 6 mm (subcutaneous fat) from the skin, away
    from clusters already placed, and, among 64 candidates, the one whose local glandular
    density quantile is nearest the cluster's target (the "surrounding texture"
    feature). If the cluster does not fit (small test images), its layout is shrunk
    (``scale`` < 1, recorded in the truth). Works on a grid of every 8th pixel.
    Returns (centre, angle, scale, realised density quantile) or None.
    """
    from scipy import ndimage as ndi

    stride = 8
    rows, cols = anat.image.shape
    breast = anat.breast[::stride, ::stride]
    pect = anat.pectoral[::stride, ::stride]
    depth = anat.depth_mm[::stride, ::stride]
    density = anat.density[::stride, ::stride]
    pect_dist = (ndi.distance_transform_edt(~pect) * stride * spacing_mm if pect.any()
                 else np.full(breast.shape, np.inf))
    yy = (np.arange(breast.shape[0]) * stride)[:, None]
    xx = (np.arange(breast.shape[1]) * stride)[None, :]
    edge_dist = np.minimum(np.minimum(yy, rows - 1 - yy), np.minimum(xx, cols - 1 - xx)) * spacing_mm
    tissue = breast & ~pect
    ref = np.sort(density[tissue]) if tissue.any() else np.zeros(1)
    for scale in (1.0, 0.8, 0.6, 0.45, 0.3):
        ext = cluster.extent_mm * scale + 4.0
        # calcifications arise in the glandular tissue, not the subcutaneous fat
        ok = tissue & (depth >= ext + SUBCUTANEOUS_FAT_MM * scale) & (pect_dist >= ext) & (edge_dist >= ext)
        cand = np.argwhere(ok)
        if cand.size == 0:
            continue
        cand = cand[rng.integers(len(cand), size=min(64, len(cand)))]
        keep = [c for c in cand
                if all(np.hypot(*(c * stride - t)) * spacing_mm > ext + r + 2.0 for t, r in taken)]
        if not keep:
            continue
        cand = np.array(keep)
        q = np.searchsorted(ref, density[cand[:, 0], cand[:, 1]]) / len(ref)
        best = int(np.argmin(np.abs(q - cluster.params.density_quantile)))
        centre = cand[best].astype(float) * stride + rng.uniform(0, 1, 2)
        nr, nc = anat.nipple_rc
        angle = float(np.arctan2(centre[0] - nr, centre[1] - nc) + rng.normal(0, np.radians(15)))
        return centre, angle, scale, float(q[best])
    return None


def _rotated(p, angle: float, flip_v: bool):
    """A copy of particle ``p`` rotated by ``angle`` (radians) from the cluster frame."""
    ca, sa = np.cos(angle), np.sin(angle)
    s = -1.0 if flip_v else 1.0
    segs = [(x0 * ca - s * y0 * sa, x0 * sa + s * y0 * ca, x1 * ca - s * y1 * sa, x1 * sa + s * y1 * ca)
            for x0, y0, x1, y1 in p.segments]
    harm = [(k, a, s * ph + k * angle) for k, a, ph in p.harmonics]
    return replace(p, segments=segs, harmonics=harm)


# --------------------------------------------------------------------------- one case
def _image_plan(config: SynthConfig, case_index: int) -> list[tuple[str, str, str | None]]:
    """(laterality, view, background path) per image of the case."""
    if config.backgrounds:
        return [("?", "?", config.backgrounds[case_index % len(config.backgrounds)])]
    return [(lat, view, None) for lat in config.lateralities for view in config.views]


def image_rng(config: SynthConfig, case_index: int, image_index: int) -> np.random.Generator:
    """The random stream of one image: its anatomy is drawn first from it, so
    ``make_anatomy(..., image_rng(...))`` re-creates the calcification-free background."""
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(case_index, 1000 + image_index)))


def calcification_free_image(config: SynthConfig, case_index: int, laterality: str, view: str) -> np.ndarray:
    """The image ``calcnode synth`` wrote for (case, laterality, view) before its calcifications were
    added, mirrored and quantised as the written image (float64, 12-bit values): the anatomy drawn
    again from the image's own random stream, or, in a background-inserted set, the case's real
    view prepared again (:func:`~training.synth.backgrounds.load_background` is deterministic;
    ``laterality`` and ``view`` are then the ones the written image states, and are not needed)."""
    if config.backgrounds:
        from .backgrounds import load_background

        (_, _, bg_path), = _image_plan(config, case_index)
        bg = load_background(bg_path, config.background_spacing_mm)
        return _written_values(bg.anatomy.image, mirror=bg.flipped)
    plan = _image_plan(config, case_index)
    index = plan.index((laterality, view, None))
    anat = anatomy_mod.make_anatomy((config.rows, config.columns), config.pixel_spacing_mm, view,
                                    image_rng(config, case_index, index), with_distractors=config.distractors,
                                    tissue=config.tissue)
    return _written_values(anat.image, mirror=laterality == "R")


def _written_values(image: np.ndarray, mirror: bool) -> np.ndarray:
    """The 12-bit values ``calcnode synth`` stores for ``image`` (float64), mirrored left-right
    when ``mirror`` (a right breast, or a real view stored with the chest wall on the right)."""
    return np.rint(np.clip(image[:, ::-1] if mirror else image, 0, 4095)).astype(np.float64)


def _n_clusters(rng: np.random.Generator, max_clusters: int) -> int:
    n = 1
    while n < max_clusters and rng.random() < 0.25:
        n += 1
    return n


def generate_case(config: SynthConfig, case_index: int, out: str | os.PathLike) -> CaseResult:
    """Generate every file of one case (patient) and return its table rows."""
    t0 = time.perf_counter()
    out = Path(out)
    pid = patient_id(case_index)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(case_index,)))
    uid = UidFactory(config.fingerprint(), config.seed)
    study_uid = uid(pid, "study")
    date, tod = study_date(config.seed, case_index)
    plan = _image_plan(config, case_index)
    negative = rng.random() < config.p_negative_case
    affected = str(rng.choice(list(config.lateralities))) if not config.backgrounds else "?"
    names = [n for n, _ in config.type_weights]
    weights = np.array([w for _, w in config.type_weights], dtype=float)
    clusters = []
    if not negative:
        for k in range(_n_clusters(rng, config.max_clusters)):
            kind = str(rng.choice(names, p=weights / weights.sum()))
            clusters.append(make_cluster(rng, k + 1, kind, config.difficulty, config.prevalence))
    result = CaseResult(case_index)
    for c in clusters:
        row = {"patient_id": pid, "cluster_id": c.cluster_id,
               "outcome": "actionable" if c.latent.actionable else "benign",
               "calcification_type": c.kind, "distribution": c.params.distribution,
               "n_particles": len(c.particles), "bayes_llr": c.latent.llr,
               "bayes_score": c.latent.posterior,
               "size_cv": c.params.size_cv, "irregularity": c.params.irregularity,
               "aspect": c.params.aspect, "spread_mm": c.params.spread_mm,
               "density_quantile": c.params.density_quantile}
        row.update({f"z_{f}": float(v) for f, v in zip(FEATURES, c.latent.z)})
        result.cluster_rows.append(row)

    dicom_dir = out / "dicom" / pid
    truth_dir = out / "truth" / pid
    for image_index, (lat, view, bg_path) in enumerate(plan):
        irng = image_rng(config, case_index, image_index)
        result.label_rows += _generate_image(config, case_index, image_index, lat, view, bg_path,
                                             clusters if (bg_path or lat == affected) else [],
                                             irng, uid, study_uid, date, tod, dicom_dir, truth_dir, out)
        result.images += 1
    result.seconds = time.perf_counter() - t0
    return result


def _generate_image(config, case_index, image_index, lat, view, bg_path, clusters, rng, uid,
                    study_uid, date, tod, dicom_dir: Path, truth_dir: Path, out: Path) -> list[dict]:
    pid = patient_id(case_index)
    gain = CALC_GAIN
    if bg_path:
        from .backgrounds import load_background

        bg = load_background(bg_path, config.background_spacing_mm, rng)
        anat, spacing, lat, view = bg.anatomy, bg.spacing_mm, bg.laterality, bg.view
        mirror = bg.flipped
        gain = CALC_GAIN * bg.contrast_scale
        spacing_source = bg.spacing_source
        derivation = (f"Synthetic calcification clusters inserted by calcnode synth into {bg.source_name} "
                      f"(SOP Instance {bg.source_sop_instance_uid}); pixel spacing "
                      f"{'assumed ' if spacing_source == 'assumed' else ''}{spacing:g} mm; rescaled to 12 bits")
        background = bg.source_name
    else:
        spacing = config.pixel_spacing_mm
        anat = anatomy_mod.make_anatomy((config.rows, config.columns), spacing, view, rng,
                                        with_distractors=config.distractors, tissue=config.tissue)
        if config.tissue == "processed":  # the processing's grain: calcifications scaled as on a real view
            gain = CALC_GAIN * calcification_contrast_scale(anat.image, anat.breast, spacing)
        mirror = lat == "R"
        spacing_source = "ImagerPixelSpacing"
        derivation = None
        background = ""
    tag = f"{lat}{view}"
    rows, cols = anat.image.shape
    labels = np.zeros((rows, cols), dtype=np.uint16)
    best_cov = np.zeros((rows, cols), dtype=np.float32)
    particles_out: list[dict] = []
    rois = []  # (roi_id, cluster, shape)
    taken: list[tuple[np.ndarray, float]] = []
    next_label = 1
    for cluster in clusters:
        placed = place_cluster(anat, cluster, spacing, rng, taken)
        if placed is None:
            continue
        centre, angle, scale, q = placed
        taken.append((centre, cluster.extent_mm * scale))
        flip_v = bool(rng.random() < 0.5)
        roi_id = len(rois) + 1
        ca, sa = np.cos(angle), np.sin(angle)
        u, v = cluster.offsets_mm[:, 0] * scale, cluster.offsets_mm[:, 1] * scale * (-1 if flip_v else 1)
        xs = centre[1] + (u * ca - v * sa) / spacing  # continuous pixel coordinates
        ys = centre[0] + (u * sa + v * ca) / spacing
        owned = []
        for p0, x, y in zip(cluster.particles, xs, ys):
            jitter = rng.normal(0, 0.05, 2)  # sub-pixel independent per view
            p = _rotated(p0, angle, flip_v)
            p.x, p.y = float(x + jitter[0]), float(y + jitter[1])
            rendered = render_particle(p, spacing, gain)
            paste(anat.image, labels, best_cov, rendered, next_label)
            m = rendered.mask
            contrib = rendered.contribution
            particles_out.append({
                "label": next_label, "kind": p.kind, "roi_id": roi_id, "cluster_id": cluster.cluster_id,
                "x": p.x, "y": p.y, "diameter_mm": p.diameter_mm,
                "length_mm": p.length_mm if p.kind == "fine_linear_branching" else None,
                "thickness_mm": p.thickness_mm, "mu_per_mm": p.mu_per_mm, "haze_mm": p.haze_mm,
                "peak_contrast": p.peak_contrast * gain / CALC_GAIN,
                "rendered_peak": float(contrib.max()),
                "rendered_mean": float(contrib[m].mean()) if m.any() else 0.0,
                "_radius_px": p.radius_mm / spacing})
            owned.append(next_label)
            next_label += 1
        rois.append((roi_id, cluster, scale, q, owned))

    # final pixel values: mirror right breasts, quantise to 12 bits
    if mirror:
        anat.image = anat.image[:, ::-1]
        labels = labels[:, ::-1]
    pixels = _written_values(anat.image, mirror=False).astype(np.uint16)  # mirrored above
    labels = np.ascontiguousarray(labels)
    _measure(labels, particles_out, spacing, cols, mirror)

    series_uid = uid(pid, "series", "MG")
    sop_uid = uid(pid, "image", image_index)
    info = ImageInfo(patient_id=pid, patient_name=f"SYNTH^CASE{case_index + 1:04d}", study_uid=study_uid,
                     series_uid=series_uid, sop_uid=sop_uid, study_id=f"S{case_index + 1:04d}",
                     study_date=date, study_time=tod, series_number=1, instance_number=image_index + 1,
                     laterality=lat, view=view, spacing_mm=spacing, manufacturer=config.manufacturer,
                     patient_age=f"{40 + (case_index * 7) % 35:03d}Y", derivation=derivation,
                     image_type=("DERIVED", "PRIMARY") if bg_path else ("ORIGINAL", "PRIMARY"))
    ds = mg_dataset(pixels, info)
    mg_path = dicom_dir / f"MG_{tag}.dcm"
    save(ds, mg_path)

    # ROI outlines, in the stored (possibly mirrored) orientation
    shapes = []
    for roi_id, cluster, scale, q, owned in rois:
        pts = np.array([[r["x"], r["y"]] for r in particles_out if r["roi_id"] == roi_id])
        radii = np.array([r["_radius_px"] for r in particles_out if r["roi_id"] == roi_id])
        shape_name = config.roi_shape
        if shape_name == "mixed":
            shape_name = str(rng.choice(["polyline", "ellipse", "circle"], p=[0.6, 0.25, 0.15]))
        shapes.append((f"ROI {roi_id}", uid(pid, "roi", image_index, roi_id),
                       draw_outline(pts, radii, spacing, rng, shape_name, (rows, cols))))
    roi_file = ""
    if rois:
        kw = dict(series_uid=uid(pid, "roi-series", config.roi_format, lat), sop_uid=uid(pid, "roi-object", image_index),
                  instance_number=image_index + 1, manufacturer=config.manufacturer, date=date, time=tod)
        if config.roi_format == "seg":
            roi_ds = seg_dataset(ds, shapes, series_number=200 + (lat == "R"), **kw)
            roi_path = dicom_dir / f"SEG_{tag}.dcm"
        else:
            roi_ds = gsps_dataset(ds, shapes, series_number=100 + (lat == "R"), **kw)
            roi_path = dicom_dir / f"PR_{tag}.dcm"
        save(roi_ds, roi_path)
        roi_file = roi_path.relative_to(out).as_posix()

    # truth
    labels_path = truth_dir / f"{tag}_labels.npz"
    with atomic_path(labels_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, labels=labels, pixel_spacing_mm=np.float64(spacing),
                                sop_instance_uid=np.str_(sop_uid))
    for d in anat.distractors:
        r, c = d["row"], d["col"]
        if mirror:
            c = cols - 1 - c
        particles_out.append({"label": 0, "kind": d["kind"], "row": r, "col": c, "x": c + 0.5, "y": r + 0.5,
                              "diameter_mm": d["diameter_mm"]})
    particles_path = truth_dir / f"{tag}_particles.csv"
    write_text(particles_path, _csv_text(PARTICLE_COLUMNS, particles_out))

    rows_out = []
    for (roi_id, cluster, scale, q, owned), (tid, tuid, shape) in zip(rois, shapes):
        count = sum(1 for r in particles_out if r.get("roi_id") == roi_id and r.get("area_px", 0) > 0)
        rows_out.append({
            "patient_id": pid, "study_instance_uid": study_uid, "series_instance_uid": series_uid,
            "image_sop_instance_uid": sop_uid, "image_file": mg_path.relative_to(out).as_posix(),
            "roi_file": roi_file, "roi_format": config.roi_format, "roi_id": roi_id,
            "roi_tracking_uid": tuid, "roi_graphic_type": shape.graphic_type, "laterality": lat,
            "view": view, "cluster_id": cluster.cluster_id,
            "outcome": "actionable" if cluster.latent.actionable else "benign",
            "calcification_type": cluster.kind, "distribution": cluster.params.distribution,
            "particle_count": count, "bayes_score": cluster.latent.posterior,
            "bayes_llr": cluster.latent.llr, "layout_scale": scale, "density_quantile": q,
            "pixel_spacing_mm": spacing,
            "spacing_source": spacing_source, "background": background,
            "truth_labels_file": labels_path.relative_to(out).as_posix(),
            "truth_particles_file": particles_path.relative_to(out).as_posix(),
        })
    return rows_out


def _measure(labels: np.ndarray, particles: list[dict], spacing: float, cols: int, mirror: bool) -> None:
    """Fill area, centroid and equivalent diameter of each particle from the label image,
    and mirror the requested coordinates if the image was mirrored."""
    from scipy import ndimage as ndi

    if not particles:
        return
    n = max(p["label"] for p in particles)
    slices = ndi.find_objects(labels, max_label=n)
    for p in particles:
        if mirror:
            p["x"] = cols - p["x"]
        sl = slices[p["label"] - 1]
        if sl is None:
            p.update(area_px=0, area_mm2=0.0, equivalent_diameter_mm=0.0, row=None, col=None)
            continue
        rr, cc = np.nonzero(labels[sl] == p["label"])
        area = int(rr.size)
        p.update(area_px=area, area_mm2=area * spacing * spacing,
                 equivalent_diameter_mm=2 * np.sqrt(area / np.pi) * spacing,
                 row=float(rr.mean() + sl[0].start), col=float(cc.mean() + sl[1].start))


# --------------------------------------------------------------------------- the run
class Progress:
    """One self-overwriting line on stderr (a new line per 10 % when not a terminal)."""

    def __init__(self, total: int, label: str = "synth", stream=None):
        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.done = 0
        self._last_decile = -1
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, n: int = 1) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        rate = elapsed / max(self.done, 1)
        eta = rate * (self.total - self.done)
        line = (f"{self.label}: {self.done}/{self.total} cases ({100 * self.done // self.total}%), "
                f"{elapsed:.0f} s elapsed, ~{eta:.0f} s left")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
            self.stream.flush()
        else:
            decile = 10 * self.done // self.total
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(line + "\n")
                self.stream.flush()


def _worker(args):
    config, case_index, out = args
    return generate_case(config, case_index, out)


def generate_dataset(config: SynthConfig, out: str | os.PathLike, workers: int = 2,
                     progress: bool = True) -> dict:
    """Generate ``config.cases`` cases into ``out`` and write the tables. Returns the summary
    written to dataset.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_partials(out)
    t0 = time.perf_counter()
    bar = Progress(config.cases) if progress else None
    results: dict[int, CaseResult] = {}
    jobs = [(config, i, str(out)) for i in range(config.cases)]
    workers = max(1, min(int(workers), config.cases))
    if workers == 1:
        for job in jobs:
            results[job[1]] = _worker(job)
            if bar:
                bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_worker, job): job[1] for job in jobs}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if bar:
                    bar.update()
    ordered = [results[i] for i in range(config.cases)]
    label_rows = [r for res in ordered for r in res.label_rows]
    cluster_rows = [r for res in ordered for r in res.cluster_rows]
    write_text(out / "labels.csv", _csv_text(LABEL_COLUMNS, label_rows))
    write_text(out / "clusters.csv", _csv_text(CLUSTER_COLUMNS, cluster_rows))
    n_images = sum(r.images for r in ordered)
    summary = {
        "generator": "calcnode synth",
        "format_version": 1,
        "config": config.to_json(),
        "config_fingerprint": config.fingerprint(),
        "cases": config.cases,
        "images": n_images,
        "rois": len(label_rows),
        "clusters": len(cluster_rows),
        "actionable_clusters": sum(r["outcome"] == "actionable" for r in cluster_rows),
        "expected_bayes_auc": bayes_auc(config.difficulty),
        "not_for_clinical_use": True,
    }
    write_text(out / "dataset.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    # timings are not in the file: it stays reproducible
    summary["seconds"] = time.perf_counter() - t0
    summary["worker_seconds_per_image"] = sum(r.seconds for r in ordered) / max(n_images, 1)
    return summary
