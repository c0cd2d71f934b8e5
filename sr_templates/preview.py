"""A PNG of what a viewer shows: the source image, the SEG segments and the GSPS
graphics and texts drawn from the written objects (not from the result), so the
picture documents the DICOM actually sent. Used for the README and for eyeballing.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

SEGMENT_COLOURS = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#64d2ff"]


def _display_pixels(source: Dataset) -> np.ndarray:
    pixels = source.pixel_array.astype(np.float32)
    low, high = np.percentile(pixels, [1, 99.5])
    pixels = np.clip((pixels - low) / max(high - low, 1e-6), 0, 1)
    if str(source.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = 1.0 - pixels
    return pixels


def segment_masks(seg: Dataset) -> dict[int, np.ndarray]:
    """Segment number -> bool mask (rows, columns) of a single-source-frame BINARY SEG."""
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    masks: dict[int, np.ndarray] = {}
    shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    for index, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ident = group.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
        number = int(ident[0].ReferencedSegmentNumber)
        masks[number] = masks.get(number, np.zeros(frames.shape[1:], bool)) | (frames[index] > 0)
    return masks


def gsps_graphics(gsps: Dataset) -> tuple[list[np.ndarray], list[tuple[float, float, str]]]:
    """(polylines as (N, 2) (column, row), texts as (x, y, text)) of a GSPS in PIXEL units."""
    lines, texts = [], []
    for annotation in gsps.get("GraphicAnnotationSequence", []):
        for graphic in annotation.get("GraphicObjectSequence", []):
            if graphic.GraphicAnnotationUnits == "PIXEL":
                lines.append(np.asarray(graphic.GraphicData, dtype=float).reshape(-1, 2))
        for text in annotation.get("TextObjectSequence", []):
            if "AnchorPoint" in text:
                x, y = (float(v) for v in text.AnchorPoint)
            else:
                x, y = (float(v) for v in text.BoundingBoxTopLeftHandCorner)
            texts.append((x, y, str(text.UnformattedTextValue)))
    return lines, texts


def render_overlay_png(source: Dataset, path: str | os.PathLike, *, seg: Dataset | None = None,
                       gsps: Dataset | None = None, title: str | None = None,
                       crop_px: tuple[int, int, int, int] | None = None, dpi: int = 90,
                       width_in: float = 6.0) -> Path:
    """Write a PNG: ``source`` in grey, SEG segments in colour, GSPS outlines and texts.

    ``crop_px`` = (row0, col0, row1, col1) limits the view (numpy slice bounds).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = _display_pixels(source)
    rows, cols = pixels.shape
    r0, c0, r1, c1 = crop_px if crop_px is not None else (0, 0, rows, cols)
    height_in = width_in * (r1 - r0) / max(c1 - c0, 1)
    fig, ax = plt.subplots(figsize=(width_in, height_in + (0.4 if title else 0)), dpi=dpi)
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=1, interpolation="nearest",
              extent=(0, cols, rows, 0))  # pixel (r, c) covers [c, c+1] x [r, r+1]: GSPS PIXEL units
    if seg is not None:
        for k, (number, mask) in enumerate(sorted(segment_masks(seg).items())):
            overlay = np.zeros((rows, cols, 4), dtype=float)
            colour = matplotlib.colors.to_rgb(SEGMENT_COLOURS[k % len(SEGMENT_COLOURS)])
            overlay[mask] = (*colour, 0.55)
            ax.imshow(overlay, interpolation="nearest", extent=(0, cols, rows, 0))
    if gsps is not None:
        lines, texts = gsps_graphics(gsps)
        for line in lines:
            ax.plot(line[:, 0], line[:, 1], color="#ffd60a", linewidth=1.0)
        for x, y, text in texts:
            ax.text(x, y, text, color="#ffd60a", fontsize=7, va="bottom", ha="left", wrap=True,
                    bbox=dict(facecolor="black", alpha=0.5, pad=1.5, linewidth=0))
    ax.set_xlim(c0, c1)
    ax.set_ylim(r1, r0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
