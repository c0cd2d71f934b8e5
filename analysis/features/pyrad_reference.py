"""pyradiomics itself: the feature settings, the names, and one ``execute`` per object.

One :class:`radiomics.featureextractor.RadiomicsFeatureExtractor` per process and per
configuration is built once and reused.  Settings: pyradiomics defaults for the feature
classes shape2D, firstorder, glcm, glrlm, glszm, gldm, ngtdm (deprecated features
off, as by default) -> 102 features; ``binWidth`` 25 on stored-value-scale intensities;
``additionalInfo`` off (no diagnostics); ``minimumROIDimensions`` 1 so a one-pixel-thick
object (a 2- or 3-pixel line) is measured (this only widens which masks are accepted,
not any feature value).  The image is a native 2D SimpleITK image with the pixel
spacing set (x = column spacing, y = row spacing) and force2D off: a one-slice volume
with force2D=True, force2Ddimension=0 gives the same 102 values, while force2D on a
native 2D image changes 71 of them (tests/test_features_radiomics.py checks both).

A one-pixel object cannot be measured (pyradiomics refuses a single voxel): its row is
NaN and the reason is returned; it is detected before pyradiomics is called.

:func:`radiomics_rows_reference` is the definition the batched values of
:mod:`analysis.features.fastrad` are tested against, and the path fastrad hands the
objects it does not batch to.  radiomics and SimpleITK are imported inside the functions
that use them, on purpose: together they take about a quarter of a second to import, which a
process that only reads the feature names (or never measures an object) should not pay.
"""
from __future__ import annotations

import logging
import time
import warnings

import numpy as np

FEATURE_CLASSES = ("shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")

SHAPE2D_NAMES = [
    "shape2D_Elongation", "shape2D_MajorAxisLength", "shape2D_MaximumDiameter", "shape2D_MeshSurface",
    "shape2D_MinorAxisLength", "shape2D_Perimeter", "shape2D_PerimeterSurfaceRatio",
    "shape2D_PixelSurface", "shape2D_Sphericity",
]
TEXTURE_NAMES = [
    "firstorder_10Percentile", "firstorder_90Percentile", "firstorder_Energy", "firstorder_Entropy",
    "firstorder_InterquartileRange", "firstorder_Kurtosis", "firstorder_Maximum",
    "firstorder_MeanAbsoluteDeviation", "firstorder_Mean", "firstorder_Median", "firstorder_Minimum",
    "firstorder_Range", "firstorder_RobustMeanAbsoluteDeviation", "firstorder_RootMeanSquared",
    "firstorder_Skewness", "firstorder_TotalEnergy", "firstorder_Uniformity", "firstorder_Variance",
    "glcm_Autocorrelation", "glcm_ClusterProminence", "glcm_ClusterShade", "glcm_ClusterTendency",
    "glcm_Contrast", "glcm_Correlation", "glcm_DifferenceAverage", "glcm_DifferenceEntropy",
    "glcm_DifferenceVariance", "glcm_Id", "glcm_Idm", "glcm_Idmn", "glcm_Idn", "glcm_Imc1", "glcm_Imc2",
    "glcm_InverseVariance", "glcm_JointAverage", "glcm_JointEnergy", "glcm_JointEntropy", "glcm_MCC",
    "glcm_MaximumProbability", "glcm_SumAverage", "glcm_SumEntropy", "glcm_SumSquares",
    "glrlm_GrayLevelNonUniformity", "glrlm_GrayLevelNonUniformityNormalized", "glrlm_GrayLevelVariance",
    "glrlm_HighGrayLevelRunEmphasis", "glrlm_LongRunEmphasis", "glrlm_LongRunHighGrayLevelEmphasis",
    "glrlm_LongRunLowGrayLevelEmphasis", "glrlm_LowGrayLevelRunEmphasis", "glrlm_RunEntropy",
    "glrlm_RunLengthNonUniformity", "glrlm_RunLengthNonUniformityNormalized", "glrlm_RunPercentage",
    "glrlm_RunVariance", "glrlm_ShortRunEmphasis", "glrlm_ShortRunHighGrayLevelEmphasis",
    "glrlm_ShortRunLowGrayLevelEmphasis",
    "glszm_GrayLevelNonUniformity", "glszm_GrayLevelNonUniformityNormalized", "glszm_GrayLevelVariance",
    "glszm_HighGrayLevelZoneEmphasis", "glszm_LargeAreaEmphasis", "glszm_LargeAreaHighGrayLevelEmphasis",
    "glszm_LargeAreaLowGrayLevelEmphasis", "glszm_LowGrayLevelZoneEmphasis",
    "glszm_SizeZoneNonUniformity", "glszm_SizeZoneNonUniformityNormalized", "glszm_SmallAreaEmphasis",
    "glszm_SmallAreaHighGrayLevelEmphasis", "glszm_SmallAreaLowGrayLevelEmphasis", "glszm_ZoneEntropy",
    "glszm_ZonePercentage", "glszm_ZoneVariance",
    "gldm_DependenceEntropy", "gldm_DependenceNonUniformity", "gldm_DependenceNonUniformityNormalized",
    "gldm_DependenceVariance", "gldm_GrayLevelNonUniformity", "gldm_GrayLevelVariance",
    "gldm_HighGrayLevelEmphasis", "gldm_LargeDependenceEmphasis",
    "gldm_LargeDependenceHighGrayLevelEmphasis", "gldm_LargeDependenceLowGrayLevelEmphasis",
    "gldm_LowGrayLevelEmphasis", "gldm_SmallDependenceEmphasis",
    "gldm_SmallDependenceHighGrayLevelEmphasis", "gldm_SmallDependenceLowGrayLevelEmphasis",
    "ngtdm_Busyness", "ngtdm_Coarseness", "ngtdm_Complexity", "ngtdm_Contrast", "ngtdm_Strength",
]
#: foreground (object) features: 9 shape2D + 93 intensity/texture = 102
FOREGROUND_NAMES = SHAPE2D_NAMES + TEXTURE_NAMES
#: background (ring) features: no shape2D -> 93
BACKGROUND_NAMES = list(TEXTURE_NAMES)

# Messages pyradiomics logs at WARNING for every small object with default settings; they
# say nothing about the data (SumAverage is a default feature; eigenvalue round-off).
_BENIGN = ("GLCM is symmetrical, therefore Sum Average", "eigenvalues < 0 and > -1e-10")


class _DropBenign(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not any(b in msg for b in _BENIGN)


_EXTRACTORS: dict = {}
_LOGGING_DONE = False


def quiet_radiomics_logging() -> None:
    """radiomics logs INFO by default: keep WARNING and up, minus the per-object noise.

    ``import radiomics`` itself sets its logger to INFO, so it is imported first."""
    global _LOGGING_DONE
    import radiomics  # noqa: F401  (its import resets the level; heavy, so deferred)

    logging.getLogger("radiomics").setLevel(logging.WARNING)
    if not _LOGGING_DONE:
        for name in ("radiomics.glcm", "radiomics.shape2D"):
            logging.getLogger(name).addFilter(_DropBenign())
        _LOGGING_DONE = True


def get_extractor(bin_width: float, with_shape: bool):
    """The process-wide extractor for this configuration (built on first use)."""
    key = (float(bin_width), bool(with_shape))
    ext = _EXTRACTORS.get(key)
    if ext is None:
        quiet_radiomics_logging()
        from radiomics import featureextractor

        ext = featureextractor.RadiomicsFeatureExtractor(
            binWidth=float(bin_width), additionalInfo=False, minimumROIDimensions=1)
        ext.disableAllFeatures()
        for cls in FEATURE_CLASSES:
            if cls == "shape2D" and not with_shape:
                continue
            ext.enableFeatureClassByName(cls)
        _EXTRACTORS[key] = ext
    return ext


def radiomics_rows_reference(tasks, spacing_mm, bin_width: float, with_shape: bool):
    """:func:`radiomics_rows` by pyradiomics itself: one ``RadiomicsFeatureExtractor.execute``
    per object (the definition of the values; kept for tests, benchmarks and the objects the
    batched path hands back to it)."""
    import SimpleITK as sitk

    names = FOREGROUND_NAMES if with_shape else BACKGROUND_NAMES
    ext = get_extractor(bin_width, with_shape)
    out = np.full((len(tasks), len(names)), np.nan)
    errors: list[tuple[int, str]] = []
    sx, sy = float(spacing_mm[1]), float(spacing_mm[0])
    t0 = time.perf_counter()
    # Per-object crops are tiny: SimpleITK's multi-threading only adds overhead.
    old_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        for i, (img, msk) in enumerate(tasks):
            n = int(np.count_nonzero(msk))
            if n == 0:
                errors.append((i, "empty mask"))
                continue
            if n == 1:
                errors.append((i, "single pixel: pyradiomics cannot measure a one-pixel region"))
                continue
            si = sitk.GetImageFromArray(np.ascontiguousarray(img, dtype=np.float32))
            si.SetSpacing((sx, sy))
            sm = sitk.GetImageFromArray(np.ascontiguousarray(msk, dtype=np.uint8))
            sm.CopyInformation(si)
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    res = ext.execute(si, sm, label=1)
            except Exception as exc:  # pyradiomics raises ValueError for masks it rejects
                errors.append((i, f"pyradiomics: {exc}"))
                continue
            out[i] = [float(res[f"original_{name}"]) for name in names]
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old_threads)
    return out, errors, time.perf_counter() - t0
