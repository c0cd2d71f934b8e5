"""The classifier model bundle: ROI features -> score in [0, 1], decision, contributions (docs/method.md §6, §7).

A bundle is one versioned folder (``calcnode train`` writes it)::

    NAME-VERSION/
      manifest.json        what the bundle is, and the SHA-256 of every other file
      aggregator.json      feature standardisation + k-means centroids per local set (analysis.aggregate)
      lightgbm.txt         the LightGBM model (text format, LightGBM's own)
      segmentation-cnn.pt  the HDoGReg selection CNN the features were extracted with (a copy)

``manifest.json`` holds: format and format version, name, version, training-data description,
``not_for_clinical_use``, the segmentation reference (file, segmentation identity, SHA-256 of the
CNN's weights, prediction threshold, source name, and the segmentation settings the features were
extracted with: HDoG parameters, ROI growth, breast mask parameters), the feature-extraction
parameters and their hash, the per-set feature names the aggregator was fitted on, the final
feature list (3K + 67 names in model column order), the missing-value fill (``impute``), the
decision threshold, the parameter set (LightGBM hyper-parameters, K, resampling) and a training
summary. Nothing in it depends on the time or the machine, so the same data, code and seed give
the same bundle, byte for byte.

Identity: the bundle's SHA-256 is the digest of ``manifest.json``; the manifest lists the
digest of each other file, and :meth:`ClassifierBundle.load` checks them all, so one hash names
the whole bundle (it is what the SR, the CAD SR and the logs quote).

Segmentation identity (:func:`segmentation_identity`): what the features depend on upstream of
feature extraction, i.e. everything that changes the segmented objects: the CNN's weights, its
selection parameters, and the settings of :mod:`analysis.segmentation.settings` (HDoG
parameters, ROI growth, breast mask parameters). The manifest records it and the settings;
analysis segments with the bundle's HDoG parameters (:attr:`ClassifierBundle.hdog_params`) and
warns when the identity it gets differs from the recorded one.

:meth:`ClassifierBundle.load` refuses (``BundleError``) a bundle of another format version,
with a file that does not match its digest, without valid segmentation settings, or whose
feature list differs from what this version of the code extracts (feature names per set,
topology radii, global features) or from the LightGBM model's own feature list: a model must never be fed columns it was not trained on.

Scoring: the ROI's features are aggregated (:mod:`analysis.aggregate`), non-finite values are
filled with the training medians (``impute``; LightGBM would accept NaN, but SMOTE in training
does not, so training and scoring see the same filled values), LightGBM gives P(actionable);
the decision is ``actionable`` when ``score >= threshold``. The top contributing features are
LightGBM's SHAP values (``pred_contrib=True``, log-odds units, positive = towards actionable).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from analysis.aggregate import Aggregator, MeanStdAggregator, aggregator_from_dict
from analysis.dicom_input import InputError
from analysis.features import (BACKGROUND_NAMES, DEFAULT_PARAMS, FOREGROUND_NAMES, HANDCRAFTED_NAMES,
                               LOCAL_SETS, REGIONPROP_NAMES, FeatureParams, RoiFeatures, topology_names)
from analysis.results import ModelIdentity
from analysis.segmentation.hdog import HDoGParams
from analysis.segmentation.settings import hdog_params_from, segmentation_settings

BUNDLE_FORMAT = "calcnode-classifier-bundle"
# 2: the segmentation settings are in the manifest and in the segmentation identity
BUNDLE_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
AGGREGATOR_FILE = "aggregator.json"
LIGHTGBM_FILE = "lightgbm.txt"
SEGMENTATION_FILE = "segmentation-cnn.pt"

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: The shipped demonstration bundle (trained on the simulator: NOT FOR CLINICAL USE).
DEFAULT_BUNDLE = MODELS_DIR / "calcnode-demo-1.5.0"
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE: research software; the model is not validated for clinical use."

#: Features a local set is extracted with, by set name (what this version of the code computes).
SET_FEATURE_NAMES = {"foreground": list(FOREGROUND_NAMES), "regionprops": list(REGIONPROP_NAMES),
                     "background": list(BACKGROUND_NAMES)}
TOP_FEATURES = 5


class BundleError(InputError):
    """A classifier bundle that cannot be used (reason: not_found, malformed, version,
    integrity, feature_mismatch)."""


# --------------------------------------------------------------------------- helpers

def segmentation_identity(model, hdog_params: HDoGParams = HDoGParams()) -> str:
    """SHA-256 naming everything that decides the objects ``segment(..., model, hdog_params)``
    returns, so everything the features depend on upstream of feature extraction: the CNN's
    weights, its selection parameters (the prediction threshold above all), and the segmentation
    settings (:func:`analysis.segmentation.settings.segmentation_settings`: ``hdog_params``, the
    ROI growth, the breast mask parameters). ``SegmentationModel.sha256`` covers the weights only.

    Hex digest of the sorted-key JSON of ``{"weights_sha256", "params", "settings"}``."""
    from dataclasses import asdict

    from analysis.segmentation.cnn import LEGACY_PARAMS

    params = asdict(model.params)
    for key, value in LEGACY_PARAMS.items():  # the identity models had before the parameter existed
        if key in params and params[key] == value:
            del params[key]
    spec = {"weights_sha256": model.sha256, "params": params, "settings": segmentation_settings(hdog_params)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def feature_params_dict(params: FeatureParams = DEFAULT_PARAMS) -> dict[str, Any]:
    return {"bin_width": float(params.bin_width), "ring_width_mm": float(params.ring_width_mm),
            "topology_radii_mm": [float(r) for r in params.topology_radii_mm]}


def feature_params_hash(params: FeatureParams = DEFAULT_PARAMS) -> str:
    """Digest of the feature-extraction parameters and of the feature lists this code computes
    with them (changes whenever a cached or bundled feature would mean something else)."""
    spec = {"params": feature_params_dict(params), "sets": SET_FEATURE_NAMES,
            "globals": expected_global_names(params)}
    return hashlib.sha256(_canonical(spec)).hexdigest()


def expected_global_names(params: FeatureParams = DEFAULT_PARAMS) -> list[str]:
    return topology_names(tuple(params.topology_radii_mm)) + list(HANDCRAFTED_NAMES)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1, allow_nan=False).encode() + b"\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _array_to_json(value: np.ndarray) -> dict:
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        return {"dtype": "str", "shape": list(arr.shape), "data": [str(v) for v in arr.reshape(-1)]}
    if arr.dtype.kind == "b":
        return {"dtype": "bool", "shape": list(arr.shape), "data": [bool(v) for v in arr.reshape(-1)]}
    if arr.dtype.kind in "iu":
        return {"dtype": "int64", "shape": list(arr.shape), "data": [int(v) for v in arr.reshape(-1)]}
    data = [float(v) for v in arr.reshape(-1)]
    if not all(math.isfinite(v) for v in data):
        raise ValueError("aggregator arrays must be finite to be stored in a bundle")
    return {"dtype": "float64", "shape": list(arr.shape), "data": data}


def _array_from_json(item: Mapping) -> np.ndarray:
    dtype = {"str": str, "bool": bool, "int64": np.int64, "float64": np.float64}[item["dtype"]]
    return np.array(item["data"], dtype=dtype).reshape(item["shape"])


def aggregator_to_json(aggregator) -> dict:
    return {key: _array_to_json(value) for key, value in sorted(aggregator.to_dict().items())}


def aggregator_from_json(obj: Mapping):
    return aggregator_from_dict({key: _array_from_json(value) for key, value in obj.items()})


def lightgbm_safe_names(names: list[str]) -> list[str]:
    """LightGBM refuses JSON special characters in feature names; ours have none, but a name
    it would change is replaced the same way here so the check on load compares like with like."""
    return [re.sub(r"[\[\]{}\":,\s]", "_", n) for n in names]


def finite_or_nan(x: np.ndarray) -> np.ndarray:
    x = np.array(x, dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    return x


def fill_missing(x: np.ndarray, impute: np.ndarray) -> np.ndarray:
    """Non-finite values -> the column's training median (``impute``)."""
    x = finite_or_nan(np.atleast_2d(x))
    bad = np.isnan(x)
    if bad.any():
        x[bad] = np.broadcast_to(np.asarray(impute, dtype=np.float64), x.shape)[bad]
    return x


def fit_impute(x: np.ndarray) -> np.ndarray:
    """Column medians over finite values (0 for a column with none)."""
    import warnings

    x = finite_or_nan(np.atleast_2d(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, axis=0) if x.shape[0] else np.zeros(x.shape[1])
    return np.where(np.isfinite(med), med, 0.0)


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Contribution:
    """One feature's share of a score: SHAP value in log-odds (positive = towards actionable)."""

    feature: str
    value: float | None  # the ROI's (filled) feature value
    contribution: float

    def to_json(self) -> dict:
        return {"feature": self.feature, "value": self.value, "contribution": round(self.contribution, 6)}


@dataclass(frozen=True)
class Score:
    score: float
    threshold: float
    decision: str  # "actionable" when score >= threshold, else "benign"
    top_features: tuple[Contribution, ...] = ()

    def to_json(self) -> dict:
        return {"score": self.score, "threshold": self.threshold, "decision": self.decision,
                "top_features": [c.to_json() for c in self.top_features]}


def decide(score: float, threshold: float) -> str:
    return "actionable" if score >= threshold else "benign"


# --------------------------------------------------------------------------- the bundle

@dataclass(frozen=True, eq=False, kw_only=True)
class ClassifierBundle:
    """A trained classifier (see the module docstring). Build with :meth:`create`, write with
    :meth:`save`, read with :meth:`load`."""

    name: str
    version: str
    threshold: float
    aggregator: Aggregator | MeanStdAggregator
    lightgbm_text: str
    feature_names: tuple[str, ...]
    impute: np.ndarray
    feature_params: FeatureParams
    parameters: Mapping[str, Any]
    training_summary: Mapping[str, Any]
    training_data: str
    segmentation_weights: bytes  # the CNN file, as SegmentationModel.to_bytes gives it
    segmentation_sha256: str  # segmentation_identity() of that CNN with the settings below
    segmentation_source: str = ""
    # weights sha, threshold, "settings" (segmentation_settings(): HDoG, ROI growth, breast mask)
    segmentation_info: Mapping[str, Any] = field(default_factory=dict)
    not_for_clinical_use: bool = True
    path: Path | None = None
    _booster: Any = field(default=None, repr=False)

    # ------------------------------------------------------------ construction

    @classmethod
    def create(cls, *, name: str, version: str, threshold: float, aggregator, booster,
               impute: np.ndarray, feature_params: FeatureParams, parameters: Mapping[str, Any],
               training_summary: Mapping[str, Any], training_data: str, segmentation_model_path: str | Path,
               hdog_params: HDoGParams = HDoGParams(), not_for_clinical_use: bool = True) -> "ClassifierBundle":
        """``hdog_params``: the HDoG parameters the training features were segmented with."""
        from analysis.segmentation.cnn import SegmentationModel  # deferred: it imports torch (over a second)

        seg_path = Path(segmentation_model_path)
        seg = SegmentationModel.load(seg_path)
        seg_info = {"weights_sha256": seg.sha256,
                    "prediction_threshold": float(seg.params.prediction_threshold),
                    "settings": segmentation_settings(hdog_params)}
        text = booster.model_to_string() if not isinstance(booster, str) else booster
        bundle = cls(name=name, version=version, threshold=float(threshold), aggregator=aggregator,
                     lightgbm_text=text, feature_names=tuple(aggregator.feature_names),
                     impute=np.asarray(impute, dtype=np.float64), feature_params=feature_params,
                     parameters=dict(parameters), training_summary=dict(training_summary),
                     training_data=training_data, segmentation_weights=seg_path.read_bytes(),
                     segmentation_sha256=segmentation_identity(seg, hdog_params), segmentation_source=seg_path.name,
                     segmentation_info=seg_info,
                     not_for_clinical_use=bool(not_for_clinical_use))
        bundle._check()
        return bundle

    @property
    def hdog_params(self) -> HDoGParams:
        """The HDoG parameters the training features were segmented with (analysis uses them)."""
        return hdog_params_from(self.segmentation_info["settings"])

    # ------------------------------------------------------------ identity

    def manifest(self) -> dict:
        agg = self.aggregator
        aggregation = {"kind": "kmeans_histogram", "k": agg.k, "seed": agg.seed} if isinstance(agg, Aggregator) \
            else {"kind": "mean_std"}
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "not_for_clinical_use": self.not_for_clinical_use,
            "notice": NOT_FOR_CLINICAL_USE if self.not_for_clinical_use else "",
            "training_data": self.training_data,
            "files": self._file_digests(),
            "segmentation_model": {"file": SEGMENTATION_FILE, "sha256": self.segmentation_sha256,
                                   "source": self.segmentation_source, **dict(self.segmentation_info)},
            "feature_extraction": {"params": feature_params_dict(self.feature_params),
                                   "hash": feature_params_hash(self.feature_params),
                                   "local_sets": {s: list(SET_FEATURE_NAMES[s]) for s in LOCAL_SETS},
                                   "global_names": expected_global_names(self.feature_params)},
            "aggregation": aggregation,
            "feature_names": list(self.feature_names),
            "impute": [float(v) for v in self.impute],
            "threshold": self.threshold,
            "parameters": dict(self.parameters),
            "training_summary": dict(self.training_summary),
        }

    def file_contents(self) -> dict[str, bytes]:
        """Every file of the bundle folder but the manifest (:meth:`manifest_bytes`), name -> bytes.

        ``analysis`` writes no files of its own: ``training.model_files.save_bundle`` writes
        these durably."""
        return {AGGREGATOR_FILE: _canonical(aggregator_to_json(self.aggregator)),
                LIGHTGBM_FILE: self.lightgbm_text.encode(),
                SEGMENTATION_FILE: self.segmentation_weights}

    def _file_digests(self) -> dict[str, str]:
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.file_contents().items()}

    def manifest_bytes(self) -> bytes:
        return _canonical(self.manifest())

    @cached_property
    def sha256(self) -> str:
        """The bundle's identity: SHA-256 of its manifest (which lists every file's digest).

        Computed once: the bundle is frozen, and hashing its files (the CNN weights among them)
        took ~6 ms of every study's analysis."""
        return hashlib.sha256(self.manifest_bytes()).hexdigest()

    def identity(self):
        """The :class:`analysis.results.ModelIdentity` the DICOM writers quote."""
        return ModelIdentity(name=self.name[:64], version=self.version[:64], sha256=self.sha256,
                             training_data=_one_line(self.training_data)[:1024],
                             not_for_clinical_use=self.not_for_clinical_use)

    def describe(self) -> str:
        flag = " - NOT FOR CLINICAL USE" if self.not_for_clinical_use else ""
        return f"{self.name} {self.version} (sha256 {self.sha256[:12]}; {self.training_data}){flag}"

    # ------------------------------------------------------------ files

    @classmethod
    def load(cls, path: str | Path) -> "ClassifierBundle":
        path = Path(path)
        if path.is_file() and path.name == MANIFEST:
            path = path.parent
        where = str(path)
        if not (path / MANIFEST).is_file():
            raise BundleError("is not a classifier bundle (no manifest.json); train one with "
                              "`calcnode train` or pass --model", reason="not_found", source=where)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"manifest.json cannot be read ({exc})", reason="malformed", source=where) from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError("manifest.json is not a calcnode classifier bundle manifest",
                              reason="malformed", source=where)
        if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise BundleError(f"bundle format version {manifest.get('format_version')!r}; this calcnode reads "
                              f"version {BUNDLE_FORMAT_VERSION} only: retrain with this version",
                              reason="version", source=where)
        try:
            files = dict(manifest["files"])
            contents = {}
            for name in (AGGREGATOR_FILE, LIGHTGBM_FILE, SEGMENTATION_FILE):
                data = (path / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != files[name]:
                    raise BundleError(f"{name} does not match the digest in manifest.json (the bundle was "
                                      "modified or is incomplete)", reason="integrity", source=where)
                contents[name] = data
            fp = manifest["feature_extraction"]["params"]
            params = FeatureParams(bin_width=float(fp["bin_width"]), ring_width_mm=float(fp["ring_width_mm"]),
                                   topology_radii_mm=tuple(float(r) for r in fp["topology_radii_mm"]))
            aggregator = aggregator_from_json(json.loads(contents[AGGREGATOR_FILE]))
            bundle = cls(name=str(manifest["name"]), version=str(manifest["version"]),
                         threshold=float(manifest["threshold"]), aggregator=aggregator,
                         lightgbm_text=contents[LIGHTGBM_FILE].decode(),
                         feature_names=tuple(str(n) for n in manifest["feature_names"]),
                         impute=np.asarray(manifest["impute"], dtype=np.float64), feature_params=params,
                         parameters=dict(manifest.get("parameters", {})),
                         training_summary=dict(manifest.get("training_summary", {})),
                         training_data=str(manifest["training_data"]),
                         segmentation_weights=contents[SEGMENTATION_FILE],
                         segmentation_sha256=str(manifest["segmentation_model"]["sha256"]),
                         segmentation_source=str(manifest["segmentation_model"].get("source", "")),
                         segmentation_info={k: v for k, v in manifest["segmentation_model"].items()
                                            if k not in ("file", "sha256", "source")},
                         not_for_clinical_use=bool(manifest["not_for_clinical_use"]), path=path)
            hdog_params_from(manifest["segmentation_model"]["settings"])  # recorded and valid, else malformed
        except BundleError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"is incomplete or malformed ({type(exc).__name__}: {exc})",
                              reason="malformed", source=where) from None
        stored = manifest["feature_extraction"]
        if stored.get("hash") != feature_params_hash(params):
            raise BundleError("its feature list differs from the features this version of calcnode extracts "
                              "(feature-extraction hash mismatch): retrain the model",
                              reason="feature_mismatch", source=where)
        bundle._check(where)
        if bundle.manifest_bytes() != (path / MANIFEST).read_bytes():
            # Same content in another layout is fine; different content is not.
            if _canonical(manifest) != bundle.manifest_bytes():
                raise BundleError("manifest.json has fields this version does not reproduce "
                                  "(edited by hand?)", reason="integrity", source=where)
        return bundle

    def _check(self, where: str = "bundle") -> None:
        """The feature list must be what this code extracts and what the booster was trained on."""
        agg = self.aggregator
        expected_globals = expected_global_names(self.feature_params)
        if list(agg.global_names) != expected_globals:
            raise BundleError("its global features differ from those this version extracts: retrain the model",
                              reason="feature_mismatch", source=where)
        for s in LOCAL_SETS:
            names = agg.sets[s].feature_names if isinstance(agg, Aggregator) else agg.set_feature_names[s]
            if list(names) != SET_FEATURE_NAMES[s]:
                raise BundleError(f"its {s} features differ from those this version extracts: retrain the model",
                                  reason="feature_mismatch", source=where)
        if list(self.feature_names) != list(agg.feature_names):
            raise BundleError("its feature list does not match its aggregator's columns",
                              reason="feature_mismatch", source=where)
        booster = self.booster
        if list(booster.feature_name()) != lightgbm_safe_names(list(self.feature_names)):
            raise BundleError(f"the LightGBM model has {booster.num_feature()} features that differ from the "
                              f"bundle's feature list of {len(self.feature_names)}",
                              reason="feature_mismatch", source=where)
        if self.impute.shape != (len(self.feature_names),) or not np.all(np.isfinite(self.impute)):
            raise BundleError("its missing-value fill does not match the feature list",
                              reason="malformed", source=where)
        if not 0.0 <= self.threshold <= 1.0:
            raise BundleError(f"threshold {self.threshold} is outside [0, 1]", reason="malformed", source=where)

    @property
    def booster(self):
        if self._booster is None:
            import lightgbm as lgb  # deferred: about a second to import, needed only to score

            try:
                booster = lgb.Booster(model_str=self.lightgbm_text)
            except Exception as exc:  # LightGBM raises its own error type on a bad model text
                raise BundleError(f"the LightGBM model cannot be read ({exc})", reason="malformed",
                                  source=str(self.path or "bundle")) from None
            object.__setattr__(self, "_booster", booster)
        return self._booster

    def segmentation_model(self):
        """The selection CNN the bundle's features were extracted with."""
        from analysis.segmentation.cnn import SegmentationModel  # deferred: it imports torch

        if self.path is not None:
            return SegmentationModel.load(self.path / SEGMENTATION_FILE)
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / SEGMENTATION_FILE
            weights.write_bytes(self.segmentation_weights)
            return SegmentationModel.load(weights)

    # ------------------------------------------------------------ scoring

    def vectors(self, rois: list[RoiFeatures]) -> np.ndarray:
        """Model input rows (aggregated, missing values filled) for some ROIs."""
        raw = self.aggregator.transform_many(list(rois))
        return fill_missing(raw, self.impute) if len(raw) else raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = fill_missing(np.asarray(x, dtype=np.float64), self.impute)
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP values, (n, n_features + 1): the last column is the expected value (bias)."""
        x = fill_missing(np.asarray(x, dtype=np.float64), self.impute)
        return np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=1), dtype=np.float64)

    def score_vector(self, x: np.ndarray, top: int = TOP_FEATURES) -> Score:
        x = fill_missing(np.asarray(x, dtype=np.float64).reshape(1, -1), self.impute)
        score = float(np.clip(self.predict(x)[0], 0.0, 1.0))
        contrib = self.contributions(x)[0, :-1]
        order = np.argsort(-np.abs(contrib), kind="stable")[:top]
        tops = tuple(Contribution(self.feature_names[i], float(x[0, i]), float(contrib[i]))
                     for i in order if abs(contrib[i]) > 1e-9)
        return Score(score=score, threshold=self.threshold, decision=decide(score, self.threshold),
                     top_features=tops)

    def score(self, roi: RoiFeatures, top: int = TOP_FEATURES) -> Score:
        """Score of one ROI (at least 2 calcifications: check before, see analysis.study)."""
        return self.score_vector(self.aggregator.transform(roi), top=top)


def _one_line(text: str) -> str:
    return " ".join(str(text).replace("\\", "/").split())


def load_bundle(path: str | Path | None = None) -> ClassifierBundle:
    """The bundle at ``path``, or the shipped demonstration bundle."""
    return ClassifierBundle.load(DEFAULT_BUNDLE if path is None else path)
