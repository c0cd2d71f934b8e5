"""A README-ready picture: a downsampled full generated image next to a zoomed cluster
with its ROI outline (and, in the zoom, the truth particle outlines).

    python -m training.synth.preview docs/img/synth_example.png [--seed S] [--size ROWSxCOLS]
    calcnode synth --preview docs/img/synth_example.png
"""
from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np

from .config import SynthConfig
from .dataset import generate_case


def _read_roi_polygon(path: Path, sop_uid: str, roi_id: int) -> np.ndarray:
    """The outline of ROI ``roi_id`` as a closed polygon (x, y), from our own GSPS or SEG."""
    import pydicom

    from .roi_outline import RoiShape

    ds = pydicom.dcmread(path)
    if "GraphicAnnotationSequence" in ds:
        for ann in ds.GraphicAnnotationSequence:
            if ann.ReferencedImageSequence[0].ReferencedSOPInstanceUID != sop_uid:
                continue
            obj = ann.GraphicObjectSequence[roi_id - 1]
            pts = np.array(obj.GraphicData, dtype=float).reshape(-1, 2)
            return RoiShape(str(obj.GraphicType), pts).polygon()
    from skimage import measure

    seg_frames = ds.pixel_array
    frame = seg_frames[roi_id - 1] if seg_frames.ndim == 3 else seg_frames
    contour = max(measure.find_contours(frame.astype(float), 0.5), key=len)
    return contour[:, ::-1] + 0.5


def render_preview(png: str | Path, seed: int = 2, rows: int = 3328, columns: int = 2560,
                   type_weights=(("amorphous", 1.0),), tissue: str = "smooth") -> Path:
    """Generate one case and draw its first ROI. Returns the PNG path. ``tissue`` defaults to
    ``smooth``: docs/img/synth_example.png was drawn with it (a processed image's grain makes the
    PNG several times larger)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pydicom

    png = Path(png)
    config = SynthConfig(cases=1, seed=seed, rows=rows, columns=columns, type_weights=tuple(type_weights),
                         lateralities=("L",), views=("CC",), max_clusters=1, tissue=tissue)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        res = generate_case(config, 0, out)
        row = res.label_rows[0]
        ds = pydicom.dcmread(out / row["image_file"])
        img = ds.pixel_array.astype(np.float32)
        poly = _read_roi_polygon(out / row["roi_file"], row["image_sop_instance_uid"], int(row["roi_id"]))
        labels = np.load(out / row["truth_labels_file"])["labels"]
        with open(out / row["truth_particles_file"]) as fh:
            parts = [p for p in csv.DictReader(fh) if p["roi_id"] == str(row["roi_id"])]
    spacing = float(ds.ImagerPixelSpacing[0])
    step = max(1, int(np.ceil(img.shape[0] / 700)))
    small = img[::step, ::step]
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    pad = 0.25 * max(x1 - x0, y1 - y0)
    c0, c1 = int(max(x0 - pad, 0)), int(min(x1 + pad, img.shape[1]))
    r0, r1 = int(max(y0 - pad, 0)), int(min(y1 + pad, img.shape[0]))
    crop = img[r0:r1, c0:c1]
    vmin, vmax = np.percentile(img[img > 200], [1, 99.8]) if (img > 200).any() else (0, 4095)
    tissue = crop[crop > 200]
    cmin, cmax = np.percentile(tissue if tissue.size else crop, [1, 99.95])
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 5.2), dpi=72,
                             gridspec_kw={"width_ratios": [small.shape[1] / small.shape[0], 1.0, 1.0]})
    axes[0].imshow(small, cmap="gray", vmin=vmin, vmax=vmax, interpolation="lanczos")
    axes[0].plot(poly[:, 0] / step, poly[:, 1] / step, color="#ffcc00", lw=1)
    axes[0].set_title(f"synthetic {ds.ImageLaterality}{ds.ViewPosition}, {img.shape[0]}x{img.shape[1]} "
                      f"at {spacing:g} mm", fontsize=10)
    for ax in axes[1:]:
        ax.imshow(crop, cmap="gray", vmin=cmin, vmax=cmax, interpolation="nearest",
                  extent=(c0, c1, r1, r0))
        ax.plot(poly[:, 0], poly[:, 1], color="#ffcc00", lw=1.5, label="ROI (GSPS POLYLINE)")
        bar_px = 2.0 / spacing
        bx = c0 + 0.05 * (c1 - c0)
        ax.plot([bx, bx + bar_px], [r1 - 0.05 * (r1 - r0)] * 2, color="white", lw=3)
        ax.text(bx, r1 - 0.08 * (r1 - r0), "2 mm", color="white", fontsize=9)
    axes[1].set_title(f"{row['outcome']} {row['calcification_type']} cluster, {row['distribution']}, "
                      f"{len(parts)} particles", fontsize=10)
    sub = labels[r0:r1, c0:c1] > 0
    axes[2].contour(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5, sub.astype(float), levels=[0.5],
                    colors="#00d0ff", linewidths=0.7)
    axes[2].plot([], [], color="#00d0ff", lw=0.7, label="truth particles")
    axes[2].set_title(f"truth; Bayes score {float(row['bayes_score']):.2f}", fontsize=10)
    axes[2].legend(loc="upper right", fontsize=8, framealpha=0.6)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    from common.durable import atomic_path

    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--size", default="3328x2560")
    args = parser.parse_args(argv)
    rows, cols = (int(v) for v in args.size.lower().split("x"))
    path = render_preview(args.png, seed=args.seed, rows=rows, columns=cols)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def draw_rois(out_dir: str | Path, label_rows: list[dict], png: str | Path, max_rois: int = 4) -> Path:
    """One row per ROI: the image around the ROI with its outline, and the truth label
    outlines on the same crop. For checking generated data by eye (tests use it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pydicom

    out_dir = Path(out_dir)
    rows = label_rows[:max_rois]
    fig, axes = plt.subplots(len(rows), 2, figsize=(7, 3.4 * len(rows)), dpi=72, squeeze=False)
    for (a0, a1), row in zip(axes, rows):
        ds = pydicom.dcmread(out_dir / row["image_file"])
        img = ds.pixel_array.astype(np.float32)
        poly = _read_roi_polygon(out_dir / row["roi_file"], row["image_sop_instance_uid"], int(row["roi_id"]))
        labels = np.load(out_dir / row["truth_labels_file"])["labels"]
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        c0, c1 = int(max(x0 - 10, 0)), int(min(x1 + 10, img.shape[1]))
        r0, r1 = int(max(y0 - 10, 0)), int(min(y1 + 10, img.shape[0]))
        crop = img[r0:r1, c0:c1]
        lo, hi = np.percentile(crop, [1, 99.95])
        for ax in (a0, a1):
            ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", extent=(c0, c1, r1, r0))
            ax.plot(poly[:, 0], poly[:, 1], color="#ffcc00", lw=1)
            ax.set_xticks([])
            ax.set_yticks([])
        a1.contour(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5, (labels[r0:r1, c0:c1] > 0).astype(float),
                   levels=[0.5], colors="#00d0ff", linewidths=0.7)
        a0.set_title(f"{row['patient_id']} {row['laterality']}{row['view']} ROI {row['roi_id']}", fontsize=9)
        a1.set_title(f"truth: {row['particle_count']} {row['calcification_type']}, {row['outcome']}", fontsize=9)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, format="png")
    plt.close(fig)
    return png
