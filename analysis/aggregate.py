"""ROI vectors from per-calcification features (docs/method.md §5, Marathe et al. 2022).

k-means histogram aggregation (the method)
    For each of the three local sets -- ``foreground`` (102 pyradiomics features),
    ``regionprops`` (13) and ``background`` (93) -- the features are standardised with the
    mean and standard deviation of the *training objects* and k-means (K = 15 by default)
    is fitted on all training objects.  An ROI's vector is, per set, the fraction of its
    objects in each cluster (K values summing to 1), followed by the 67 global features
    (64 topology + 3 handcrafted) unchanged: 3K + 67 values.

mean-and-standard-deviation aggregation (the paper's baseline)
    Per set and feature, the mean and the standard deviation (ddof=0) over the ROI's
    objects, followed by the 67 globals: 2 x (102 + 13 + 93) + 67 = 483 values.

Deterministic handling of awkward data (fixed at fit time, stored in the model):

- inf and -inf are treated as missing (NaN);
- a column with no finite training value, or with zero variance on the training objects
  (|std| <= 1e-12 x max(1, |mean|)), is dropped from clustering (``keep`` = False);
- after standardisation a missing value is set to 0, i.e. the training mean;
- an object whose kept features are *all* missing (a one-pixel object in the pyradiomics
  sets) is left out of that set's histogram: fractions are over the measured objects;
- an ROI with no measured object in a set gets K zeros for that set (sum 0, not 1) and
  its global features are NaN (0 objects) -- LightGBM treats NaN as missing.  docs/method.md §4.1
  reports ROIs with < 2 calcifications as not assessable before any scoring.
- cluster assignment is the nearest centroid in float64 (ties -> lowest cluster index),
  so ``transform`` needs only the stored arrays and is reproducible bit for bit.

Both aggregators serialise to/from a flat dict of numpy arrays (no pickle: ``np.savez``
with ``allow_pickle=False`` can store it in a model bundle).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from analysis.features import GLOBAL_NAMES, LOCAL_SETS, FeatureTable, RoiFeatures

FORMAT_VERSION = 1


def _local_tables(item) -> dict[str, FeatureTable]:
    if hasattr(item, "local_sets"):
        return item.local_sets()
    if isinstance(item, dict):
        missing = [s for s in LOCAL_SETS if s not in item]
        if missing:
            raise ValueError(f"local feature tables missing: {missing}")
        return {s: item[s] for s in LOCAL_SETS}
    raise TypeError(f"expected RoiFeatures or a dict of FeatureTable, got {type(item).__name__}")


def _finite_or_nan(values: np.ndarray) -> np.ndarray:
    x = np.array(values, dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    return x


def _stack(items, set_name: str) -> tuple[list[str], np.ndarray]:
    names, blocks = None, []
    for it in items:
        t = _local_tables(it)[set_name]
        if names is None:
            names = list(t.names)
        elif list(t.names) != names:
            raise ValueError(f"feature names of set {set_name!r} differ between ROIs")
        blocks.append(np.asarray(t.values, dtype=np.float64).reshape(-1, len(names)))
    if names is None:
        raise ValueError("no ROIs to fit on")
    return names, np.concatenate(blocks, axis=0)


@dataclass(frozen=True, eq=False)
class SetModel:
    """Standardisation and k-means centroids of one local feature set."""

    feature_names: list[str]
    mean: np.ndarray  # (F,), 0 for dropped columns
    scale: np.ndarray  # (F,), 1 for dropped columns
    keep: np.ndarray  # (F,) bool
    centroids: np.ndarray  # (K, keep.sum()) in standardised units

    def standardise(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z with missing -> 0, measured-row mask) for a (n, F) table."""
        x = _finite_or_nan(np.asarray(values).reshape(-1, len(self.feature_names)))[:, self.keep]
        measured = np.isfinite(x).any(axis=1) if x.shape[1] else np.zeros(x.shape[0], bool)
        z = (x - self.mean[self.keep]) / self.scale[self.keep]
        z[~np.isfinite(z)] = 0.0
        return z, measured

    def assign(self, z: np.ndarray) -> np.ndarray:
        d2 = ((z[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=-1)
        return np.argmin(d2, axis=1)

    def histogram(self, values: np.ndarray) -> np.ndarray:
        k = self.centroids.shape[0]
        z, measured = self.standardise(values)
        if not measured.any():
            return np.zeros(k)
        counts = np.bincount(self.assign(z[measured]), minlength=k).astype(np.float64)
        return counts / counts.sum()


def _fit_scaler(names: list[str], x: np.ndarray):
    x = _finite_or_nan(x)
    count = np.isfinite(x).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.where(count > 0, np.nanmean(x, axis=0), 0.0)
        std = np.where(count > 0, np.nanstd(x, axis=0), 0.0)
    keep = (count > 0) & (std > 1e-12 * np.maximum(1.0, np.abs(mean)))
    mean = np.where(keep, mean, 0.0)
    scale = np.where(keep, std, 1.0)
    return mean, scale, keep


@dataclass(frozen=True, eq=False)
class Aggregator:
    """k-means histogram aggregation fitted on training objects (see module docstring)."""

    k: int
    seed: int
    sets: dict[str, SetModel]
    global_names: list[str]

    @property
    def feature_names(self) -> list[str]:
        names = [f"{s}.cluster{j:02d}" for s in LOCAL_SETS for j in range(self.k)]
        return names + list(self.global_names)

    @property
    def n_features(self) -> int:
        return 3 * self.k + len(self.global_names)

    def histograms(self, local_tables) -> dict[str, np.ndarray]:
        tables = _local_tables(local_tables)
        return {s: self.sets[s].histogram(tables[s].values) for s in LOCAL_SETS}

    def transform(self, roi: RoiFeatures) -> np.ndarray:
        g = roi.global_features()
        if list(g.names) != list(self.global_names):
            raise ValueError("global feature names differ from the fitted aggregator's")
        h = self.histograms(roi)
        return np.concatenate([h[s] for s in LOCAL_SETS] + [g.values])

    def transform_many(self, rois) -> np.ndarray:
        return np.stack([self.transform(r) for r in rois]) if rois else np.zeros((0, self.n_features))

    def to_dict(self) -> dict[str, np.ndarray]:
        d = {"kind": np.array("kmeans_histogram"), "version": np.array(FORMAT_VERSION),
             "k": np.array(self.k), "seed": np.array(self.seed),
             "sets": np.array(LOCAL_SETS), "global_names": np.array(self.global_names, dtype=str)}
        for s, m in self.sets.items():
            d[f"{s}/feature_names"] = np.array(m.feature_names, dtype=str)
            d[f"{s}/mean"] = m.mean
            d[f"{s}/scale"] = m.scale
            d[f"{s}/keep"] = m.keep
            d[f"{s}/centroids"] = m.centroids
        return d

    @classmethod
    def from_dict(cls, d) -> "Aggregator":
        if str(np.asarray(d["kind"])) != "kmeans_histogram":
            raise ValueError(f"not a k-means aggregator: {d['kind']!r}")
        if int(d["version"]) != FORMAT_VERSION:
            raise ValueError(f"unsupported aggregator format version {int(d['version'])}")
        k = int(d["k"])
        sets = {}
        for s in (str(v) for v in d["sets"]):
            keep = np.asarray(d[f"{s}/keep"], dtype=bool)
            cen = np.asarray(d[f"{s}/centroids"], dtype=np.float64).reshape(k, int(keep.sum()))
            sets[s] = SetModel([str(n) for n in d[f"{s}/feature_names"]],
                               np.asarray(d[f"{s}/mean"], dtype=np.float64),
                               np.asarray(d[f"{s}/scale"], dtype=np.float64), keep, cen)
        if tuple(sets) != LOCAL_SETS:
            raise ValueError(f"aggregator sets {tuple(sets)} != {LOCAL_SETS}")
        return cls(k=k, seed=int(d["seed"]), sets=sets,
                   global_names=[str(n) for n in d["global_names"]])


def fit_aggregator(rois, k: int = 15, seed: int = 0, n_init: int = 10) -> Aggregator:
    """Fit the per-set scalers and k-means on all objects of the training ROIs.

    ``rois``: RoiFeatures (or dicts {set name: FeatureTable}; then the aggregator cannot
    know the global names and ``transform`` needs RoiFeatures with the standard 67).
    Raises ValueError when a set has fewer measured training objects than ``k``.
    """
    from sklearn.cluster import KMeans  # deferred: scikit-learn is slow to import, and only fitting needs it

    rois = list(rois)
    if not rois:
        raise ValueError("no ROIs to fit on")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sets = {}
    for s in LOCAL_SETS:
        names, x = _stack(rois, s)
        mean, scale, keep = _fit_scaler(names, x)
        if not keep.any():
            raise ValueError(f"set {s!r}: no feature varies over the training objects")
        proto = SetModel(names, mean, scale, keep, np.zeros((0, int(keep.sum()))))
        z, measured = proto.standardise(x)
        z = z[measured]
        if z.shape[0] < k:
            raise ValueError(f"set {s!r}: {z.shape[0]} measured training objects, fewer than k={k}")
        km = KMeans(n_clusters=int(k), random_state=int(seed), n_init=int(n_init)).fit(z)
        sets[s] = SetModel(names, mean, scale, keep, np.asarray(km.cluster_centers_, dtype=np.float64))
    first = rois[0]
    if hasattr(first, "global_features"):
        global_names = list(first.global_features().names)
    else:
        global_names = list(GLOBAL_NAMES)
    return Aggregator(k=int(k), seed=int(seed), sets=sets, global_names=global_names)


@dataclass(frozen=True, eq=False)
class MeanStdAggregator:
    """The baseline: per set and feature, mean and std (ddof=0) over the ROI's objects
    (missing/inf values ignored; NaN when no object has a value), + the 67 globals."""

    set_feature_names: dict[str, list[str]]
    global_names: list[str]

    @property
    def feature_names(self) -> list[str]:
        names = [f"{s}.{f}.{stat}" for s in LOCAL_SETS for f in self.set_feature_names[s]
                 for stat in ("mean", "std")]
        return names + list(self.global_names)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def transform(self, roi: RoiFeatures) -> np.ndarray:
        tables = _local_tables(roi)
        parts = []
        for s in LOCAL_SETS:
            t = tables[s]
            if list(t.names) != self.set_feature_names[s]:
                raise ValueError(f"feature names of set {s!r} differ from the fitted aggregator's")
            x = _finite_or_nan(np.asarray(t.values).reshape(-1, len(t.names)))
            ok = np.isfinite(x).any(axis=0)
            mean = np.full(x.shape[1], np.nan)
            std = np.full(x.shape[1], np.nan)
            if ok.any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean[ok] = np.nanmean(x[:, ok], axis=0)
                    std[ok] = np.nanstd(x[:, ok], axis=0)
            parts.append(np.stack([mean, std], axis=1).reshape(-1))
        g = roi.global_features()
        if list(g.names) != list(self.global_names):
            raise ValueError("global feature names differ from the fitted aggregator's")
        return np.concatenate(parts + [g.values])

    def transform_many(self, rois) -> np.ndarray:
        return np.stack([self.transform(r) for r in rois]) if rois else np.zeros((0, self.n_features))

    def to_dict(self) -> dict[str, np.ndarray]:
        d = {"kind": np.array("mean_std"), "version": np.array(FORMAT_VERSION),
             "sets": np.array(LOCAL_SETS), "global_names": np.array(self.global_names, dtype=str)}
        for s in LOCAL_SETS:
            d[f"{s}/feature_names"] = np.array(self.set_feature_names[s], dtype=str)
        return d

    @classmethod
    def from_dict(cls, d) -> "MeanStdAggregator":
        if str(np.asarray(d["kind"])) != "mean_std":
            raise ValueError(f"not a mean-std aggregator: {d['kind']!r}")
        return cls({s: [str(n) for n in d[f"{s}/feature_names"]] for s in (str(v) for v in d["sets"])},
                   [str(n) for n in d["global_names"]])


def fit_mean_std_aggregator(rois) -> MeanStdAggregator:
    """Record the feature names (nothing is learned from the values)."""
    rois = list(rois)
    if not rois:
        raise ValueError("no ROIs to fit on")
    names = {s: _stack(rois, s)[0] for s in LOCAL_SETS}
    return MeanStdAggregator(names, list(rois[0].global_features().names))


def aggregator_from_dict(d):
    """Load whichever aggregator a dict holds."""
    kind = str(np.asarray(d["kind"]))
    if kind == "kmeans_histogram":
        return Aggregator.from_dict(d)
    if kind == "mean_std":
        return MeanStdAggregator.from_dict(d)
    raise ValueError(f"unknown aggregator kind {kind!r}")
