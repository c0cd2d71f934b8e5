"""The views a cluster model is trained and evaluated on, with their truth clusters.

Two sources:

* **Simulated** (``calcnode synth`` folders, docs/simulator.md): every MG image with its
  ``*_labels.npz`` and ``*_particles.csv``. A truth cluster is the set of particles (``label`` > 0)
  of the view that share a ``cluster_id``; its type is their ``kind``. A view whose particles carry no
  cluster is a negative view (no truth cluster).
* **Real normal tissue** (16-bit PNGs, e.g. /work/shared/interop/real-tissue): no truth cluster at
  all, so every detected cluster is a false mark, except inside an ``*_benign_lesion_mask.png``
  region (the benign lesion of that exam: ignored, neither hit nor false mark). The PNGs state no
  spacing: **0.07 mm is assumed** (the simulator's and Hologic's). They hold 12-bit values (0..4095)
  and are scaled to [0, 1] as :func:`analysis.dicom_input.image.load_image` scales a 12-bit
  MONOCHROME2 image (value / 4095, calcifications bright).

  The lesion masks (2944 x 1920) are in GMIC's model-input frame, not the cropped PNGs' (e.g.
  2144 x 801): :func:`training.synth.backgrounds.stored_lesion_mask` maps them back (the same
  mapping the simulator uses to keep inserted clusters off the lesion). The excluded region is
  that mask grown by 5 mm. This only matters for the right breast's views (the left breast has
  no lesion).
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage

from analysis.dicom_input import load_image
from training.datasets import load_truth, scan_dataset
from training.segmentation.negatives import png_pixels
from training.synth.backgrounds import LESION_SUFFIX, stored_lesion_mask
from training.synth.config import canonical_type

REAL_SPACING_MM = 0.07          # assumed for PNGs without spacing
LESION_EXCLUSION_GROWTH_MM = 5.0


@dataclass(frozen=True)
class TruthCluster:
    """One cluster of a view's truth: its particles' centre points in the PIXEL convention
    (column + 0.5, row + 0.5 of each particle's pixel centroid), their labels in the truth label
    image and the calcification type."""

    cluster_id: str
    kind: str | None
    points_xy: np.ndarray
    particle_labels: tuple[int, ...]


@dataclass(eq=False)
class View:
    """One image to evaluate on."""

    name: str                            # "synthetic:<folder>/<case>/<view>" or "real:<file stem>"
    source: str                          # "synthetic" or "real"
    pixels: np.ndarray                   # float32 [0, 1], calcifications bright
    spacing_mm: tuple[float, float]
    clusters: list[TruthCluster] = field(default_factory=list)
    truth_labels: np.ndarray | None = None   # per-particle truth label image (simulated views)
    ignore: np.ndarray | None = None         # bool: detections centred here are neither hit nor false


def read_particles(path: Path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def truth_clusters(rows: list[dict]) -> list[TruthCluster]:
    """The view's truth clusters from its ``*_particles.csv`` rows (distractors, label 0, are not
    calcifications of a cluster)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if int(row["label"]) > 0 and row.get("cluster_id"):
            groups.setdefault(row["cluster_id"], []).append(row)
    out = []
    for cid, members in sorted(groups.items(), key=lambda kv: int(kv[0])):
        kinds = {canonical_type(m["kind"]) for m in members}
        points = np.array([[float(m["col"]) + 0.5, float(m["row"]) + 0.5] for m in members])
        out.append(TruthCluster(cluster_id=cid, kind=kinds.pop() if len(kinds) == 1 else None,
                                points_xy=points, particle_labels=tuple(int(m["label"]) for m in members)))
    return out


def synthetic_view_name(root: Path, truth_path: Path) -> str:
    """A simulated view's name, ``synthetic:<folder>/<case>/<view>``, from its truth label file."""
    rel = Path(truth_path).relative_to(root)
    return f"synthetic:{root.name}/{rel.parent}/{rel.name.replace('_labels.npz', '')}"


def insertion_backgrounds(root: str | Path) -> dict[str, Path]:
    """The real views a ``calcnode synth --background`` folder inserted its clusters into, by file
    name (its ``dataset.json``), or {} for a folder of simulated tissue."""
    meta = Path(root) / "dataset.json"
    if not meta.is_file():
        return {}
    config = json.loads(meta.read_text()).get("config", {})
    return {Path(p).name: Path(p) for p in config.get("backgrounds") or []}


def insertion_background(image_path: str | Path, backgrounds: dict[str, Path]) -> Path | None:
    """The real view one image's clusters were inserted into: the simulator names it in the image's
    Derivation Description ("... inserted by calcnode synth into NAME (...")."""
    if not backgrounds:
        return None
    text = str(pydicom.dcmread(image_path, stop_before_pixels=True).get("DerivationDescription", ""))
    match = re.search(r"inserted by calcnode synth into (.+?) \(", text)
    return backgrounds.get(match.group(1)) if match else None


def synthetic_views(root: str | Path):
    """Yield the :class:`View` of every MG image with truth under ``root`` (sorted by path).

    An image whose clusters were inserted into a real view with a marked lesion ignores that lesion
    as the real view itself does (:func:`lesion_exclusion`): its calcifications are real, not in the
    truth, and a detection there is neither a hit nor a false mark (it was labelled false before
    2026-12-07, and a model trained so learnt to drop the one real calcification cluster it had)."""
    root = Path(root)
    backgrounds = insertion_backgrounds(root)
    exclusions: dict[Path, np.ndarray | None] = {}  # one per real view: every insertion into it shares it
    for item in scan_dataset(root, require_truth=True):
        image = load_image(item.image_path)
        truth_path = Path(item.truth_path)
        table = truth_path.with_name(truth_path.name.replace("_labels.npz", "_particles.csv"))
        rows = read_particles(table) if table.is_file() else []
        background = insertion_background(item.image_path, backgrounds)
        if background is not None and background.suffix.lower() == ".png" and background not in exclusions:
            exclusions[background] = lesion_exclusion(background, image.pixels, float(np.mean(image.pixel_spacing_mm)))
        ignore = exclusions.get(background)
        yield View(name=synthetic_view_name(root, truth_path),
                   source="synthetic", pixels=image.pixels, spacing_mm=tuple(image.pixel_spacing_mm),
                   clusters=truth_clusters(rows), truth_labels=load_truth(truth_path, image.pixels.shape),
                   ignore=ignore)


def real_png_paths(items: list[str | Path]) -> list[Path]:
    """The real views among ``items`` (PNG files, or folders of them), lesion masks left out."""
    out: list[Path] = []
    for item in map(Path, items):
        files = sorted(item.glob("*.png")) if item.is_dir() else [item]
        out += [f for f in files if not f.name.endswith(LESION_SUFFIX)]
    if not out:
        raise FileNotFoundError(f"no PNG views in {', '.join(map(str, items))}")
    return out


def lesion_exclusion(path: Path, pixels: np.ndarray, spacing_mm: float = REAL_SPACING_MM) -> np.ndarray | None:
    """The region to ignore on a real view (module docstring), or None without a lesion mask."""
    mask = stored_lesion_mask(path, pixels)
    if mask is None:
        return None
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    return distance <= LESION_EXCLUSION_GROWTH_MM


def real_view(path: str | Path, spacing_mm: float = REAL_SPACING_MM) -> View:
    path = Path(path)
    pixels = png_pixels(path)
    return View(name=f"real:{path.stem}", source="real", pixels=pixels, spacing_mm=(spacing_mm, spacing_mm),
                ignore=lesion_exclusion(path, pixels, spacing_mm))


def view_label(name: str) -> str:
    """A short label of a view for tables: the view code (e.g. ``LCC``, ``R-MLO``)."""
    match = re.search(r"([LR]-?(?:CC|MLO))$", name)
    return match.group(1) if match else name
