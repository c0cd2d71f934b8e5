"""The analysis a worker runs on one study: an *engine*.

An engine has two methods:

``analyze(images: list[Path], roi_files: list[Path]) -> analysis.results.StudyResult``
    the MG images of the study (spool paths) and its ROI objects (GSPS / SEG);
``model_identity() -> analysis.results.ModelIdentity``
    the model the results are attributed to (also used for a failure report).

The default engine is calcnode's own analysis (``analysis.study.analyze_study`` with the
configured segmentation CNN and classifier bundle); ``analysis.engine = "module:callable"``
names a factory ``callable(config) -> engine`` instead (site-specific analyses, tests).
Engines are built once per worker process, when it starts (before its first job: a PACS's first
study after a restart does not wait for the models), so a model is loaded once.
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from analysis.results import ModelIdentity

from .config import Config


class EngineError(RuntimeError):
    """The engine cannot be built (missing analysis, unreadable model); the message says why."""


def unavailable_identity(reason: str) -> ModelIdentity:
    """Identity used in a failure report when no model could be loaded."""
    return ModelIdentity(name="calcnode (no model loaded)", version="-",
                         sha256=hashlib.sha256(reason.encode()).hexdigest(),
                         training_data="none: the model could not be loaded", not_for_clinical_use=True)


class CalcnodeEngine:
    """calcnode's analysis: ``analysis.study.analyze_study`` (docs/method.md §2.3) with the configured models.

    ``analysis.model_bundle`` "" = the shipped demonstration bundle (analysis/models/);
    ``analysis.segmentation_model`` "" = the CNN inside the bundle (the one its features were
    trained with). Both are loaded once per worker process, when it starts.
    """

    def __init__(self, config: Config):
        try:
            study = importlib.import_module("analysis.study")
            classify = importlib.import_module("analysis.classify")
            self._analyze = study.analyze_study
        except (ImportError, AttributeError) as exc:
            raise EngineError("the study analysis (analysis.study.analyze_study) is not available in "
                              f"this installation ({type(exc).__name__}: {exc})") from exc
        self.config = config
        bundle_path = config.analysis.model_bundle or None
        try:
            self.bundle = classify.load_bundle(bundle_path)
        except Exception as exc:  # noqa: BLE001 - BundleError, OSError, a half-written bundle
            where = bundle_path or getattr(classify, "DEFAULT_BUNDLE", "the demonstration bundle")
            raise EngineError(f"the model bundle {where} cannot be loaded: {exc}") from exc
        self.seg_model = None
        if not config.analysis.segmentation_model:
            try:  # once here, not once per study (it also brings torch in before the first job)
                self.seg_model = self.bundle.segmentation_model()
            except Exception as exc:  # noqa: BLE001 - OSError, a damaged weights file
                raise EngineError(f"the segmentation CNN of the model bundle cannot be loaded: {exc}") from exc
        else:
            from analysis.segmentation.cnn import SegmentationModel

            path = Path(config.analysis.segmentation_model)
            try:
                self.seg_model = SegmentationModel.load(path)
            except (OSError, ValueError) as exc:
                raise EngineError(f"the segmentation model {path} cannot be loaded: {exc}") from exc
        identity = self.bundle.identity
        self._identity = identity() if callable(identity) else identity
        if not isinstance(self._identity, ModelIdentity):
            raise EngineError("the model bundle does not state its identity (name, version, SHA-256)")

    def model_identity(self) -> ModelIdentity:
        return self._identity

    def analyze(self, images: list[Path], roi_files: list[Path]):
        analysis = self.config.analysis
        return self._analyze([str(p) for p in images], [str(p) for p in roi_files], self.seg_model, self.bundle,
                             no_roi=self.config.assembly.no_roi_policy,
                             point_radius_mm=analysis.point_roi_radius_mm,
                             default_pixel_spacing_mm=analysis.default_pixel_spacing_mm or None)


def build_engine(config: Config):
    """The configured engine; raises :class:`EngineError` with the reason."""
    spec = config.analysis.engine
    if not spec:
        return CalcnodeEngine(config)
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"analysis.engine {spec!r} cannot be imported ({type(exc).__name__}: {exc})") from exc
    try:
        return factory(config)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(f"analysis.engine {spec!r} failed to start ({type(exc).__name__}: {exc})") from exc
