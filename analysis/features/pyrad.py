"""pyradiomics features on per-object crops: the entry point.

:func:`radiomics_rows` computes the pyradiomics values (settings and feature names in
:mod:`analysis.features.pyrad_reference`) for all objects of a call at once
(:mod:`analysis.features.fastrad`: pyradiomics' preprocessing and C matrices per object, its
feature formulas once per batch), several times faster than one ``execute`` per object;
:func:`radiomics_rows_reference` is that per-object pyradiomics call, the definition the
batched values are tested against (within 1e-9 relative; most bit for bit).
:func:`_init_worker` prepares a worker process of the feature pool.
"""
from __future__ import annotations

from .fastrad import batched_radiomics_rows
from .pyrad_reference import (BACKGROUND_NAMES, FEATURE_CLASSES, FOREGROUND_NAMES, SHAPE2D_NAMES,
                              TEXTURE_NAMES, get_extractor, quiet_radiomics_logging,
                              radiomics_rows_reference)

__all__ = [
    "FEATURE_CLASSES", "SHAPE2D_NAMES", "TEXTURE_NAMES", "FOREGROUND_NAMES", "BACKGROUND_NAMES",
    "get_extractor", "quiet_radiomics_logging", "radiomics_rows", "radiomics_rows_reference",
]


def radiomics_rows(tasks, spacing_mm, bin_width: float, with_shape: bool):
    """pyradiomics features for a list of ``(image_crop, mask_crop)`` pairs.

    ``image_crop``: float32 stored-value-scale intensities; ``mask_crop``: bool, same shape.
    Returns ``(values (n, n_features), errors [(index, reason)], seconds)``.
    A module-level function (picklable): it runs unchanged in a worker process.

    The values (and errors) are those of :func:`radiomics_rows_reference` (one pyradiomics
    ``execute`` per object), computed for all objects at once by
    :func:`analysis.features.fastrad.batched_radiomics_rows`; each row depends only on its
    own task, so the result is the same however the tasks are split into calls.
    """
    return batched_radiomics_rows(tasks, spacing_mm, bin_width, with_shape)


def _init_worker() -> None:
    """Pool initializer: one thread per worker process (the pool is the parallelism)."""
    quiet_radiomics_logging()
    # Imported here, not at the top: threadpoolctl is optional, and SimpleITK is heavy and only
    # a worker process needs it set up.
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    get_extractor(25.0, True)  # the reference path, for the objects the batched path hands back
    get_extractor(25.0, False)
