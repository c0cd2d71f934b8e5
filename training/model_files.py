"""Writing the trained models to disk, durably: the segmentation CNN file and the classifier bundle.

``analysis`` turns a model into bytes (:meth:`SegmentationModel.to_bytes`,
:meth:`ClassifierBundle.file_contents` + :meth:`ClassifierBundle.manifest_bytes`) but writes no
files itself (it imports nothing of ours); the writing is here, through :mod:`common.durable`,
so a model that was reported written is complete on disk even after a power cut, and a model
replaced in place is the old one or the new one, never a mix.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.classify import MANIFEST, ClassifierBundle
from common.durable import atomic_dir, write_bytes

if TYPE_CHECKING:  # importing it loads torch, which writing a bundle does not need
    from analysis.segmentation.cnn import SegmentationModel


def save_segmentation_model(model: SegmentationModel, path: str | Path) -> str:
    """Write ``model`` (weights + params + info) to the file ``path``; returns the file's SHA-256."""
    data = model.to_bytes()
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def save_bundle(bundle: ClassifierBundle, path: str | Path) -> Path:
    """Write ``bundle`` as the folder ``path`` (every file, then ``manifest.json``), replacing a
    bundle already there as a whole. Returns ``path``.

    The folder is built beside ``path`` and renamed into place
    (:func:`common.durable.atomic_dir`), so a reader never loads half a bundle.
    ``ClassifierBundle.load(path)`` gives a bundle that knows its folder; ``bundle`` is unchanged.
    """
    path = Path(path)
    with atomic_dir(path) as tmp:
        for name, data in bundle.file_contents().items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_bytes(bundle.manifest_bytes())
    return path
