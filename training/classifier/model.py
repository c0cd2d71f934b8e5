"""The classifier's training procedure (docs/method.md §6).

Everything that is learned from data is learned on training folds only, in this order, per fold:

1. the aggregation (per-set feature standardisation + k-means with K clusters, or the mean/std
   baseline) is fitted on the training ROIs' objects; training and validation ROIs are
   transformed with it;
2. missing values are filled with the training rows' medians (``impute``);
3. SMOTE + Edited Nearest Neighbours (imblearn ``SMOTEENN``) resamples the *training* rows only
   (in standardised units, so no feature dominates the neighbour search, then mapped back);
   validation rows are never resampled, created or removed;
4. LightGBM is fitted on the resampled rows; the validation rows are scored as they are.

Grid search: 5-fold ``StratifiedGroupKFold`` grouped by patient over K, num_leaves, max_depth,
learning_rate, n_estimators, lambda_l2 (regularisation) and the decision threshold. Out-of-fold
scores are pooled over the folds. Selection, "sensitivity first, then AUC":
among the settings whose pooled specificity is at least ``min_specificity`` (without a floor the
rule always picks the lowest threshold, which calls everything actionable), those within
``sensitivity_tolerance`` of the best sensitivity are tied and the highest AUC wins (then the
higher specificity, then the simpler model).

Nested CV: 4 outer ``StratifiedGroupKFold`` splits grouped by patient; in each, the whole grid
search runs on the outer-training part (5 inner folds), the selected setting is refitted on it
and scores the outer-test part. The pooled outer-test scores give the honest estimate.
The mean/std baseline is evaluated in the same outer folds with the LightGBM setting the
k-means model selected there (only its threshold is tuned in the inner folds): a comparison of
the aggregations at equal model capacity, and 5x cheaper (483 columns instead of 3K + 67).
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from analysis.aggregate import fit_aggregator, fit_mean_std_aggregator
from analysis.classify import fill_missing, fit_impute, lightgbm_safe_names
from analysis.dicom_input import InputError


class TrainingError(InputError):
    """Training data that cannot support the requested procedure."""


@dataclass(frozen=True)
class Grid:
    k: tuple[int, ...] = (10, 15)
    num_leaves: tuple[int, ...] = (7, 15)
    max_depth: tuple[int, ...] = (4, -1)
    learning_rate: tuple[float, ...] = (0.05, 0.1)
    n_estimators: tuple[int, ...] = (100, 300)
    reg_lambda: tuple[float, ...] = (0.0, 5.0)
    threshold: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5)
    min_child_samples: int = 10  # fixed (LightGBM min_data_in_leaf)

    def boosters(self) -> list[dict]:
        """LightGBM settings that need their own fit (n_estimators is read off one fit)."""
        return [dict(num_leaves=nl, max_depth=md, learning_rate=lr, reg_lambda=rl)
                for nl, md, lr, rl in itertools.product(self.num_leaves, self.max_depth, self.learning_rate,
                                                        self.reg_lambda)]

    @property
    def size(self) -> int:
        return len(self.k) * len(self.boosters()) * len(self.n_estimators) * len(self.threshold)


GRIDS = {
    # the default: 2 K x 16 LightGBM fits x 5 folds per search, thresholds read off the same scores
    "small": Grid(),
    # for tests and smoke runs on a handful of ROIs
    "tiny": Grid(k=(4,), num_leaves=(4,), max_depth=(-1,), learning_rate=(0.1,), n_estimators=(20, 50),
                 reg_lambda=(0.0,), threshold=(0.3, 0.5), min_child_samples=3),
}


@dataclass(frozen=True)
class Settings:
    seed: int = 0
    folds: int = 5
    outer_folds: int = 4  # 0: no nested CV
    grid: Grid = field(default_factory=Grid)
    min_specificity: float = 0.25
    sensitivity_tolerance: float = 0.02
    feature_fraction: float = 0.8
    resampling: str = "smoteenn"  # or "none"
    kmeans_n_init: int = 10
    baseline: bool = True

    def to_json(self) -> dict:
        d = asdict(self)
        d["grid"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.grid).items()}
        return d


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """ROIs with their features, outcome (1 = actionable), patient and optional Bayes score."""

    rois: list  # RoiFeatures
    y: np.ndarray
    groups: np.ndarray
    ids: list
    bayes: np.ndarray  # NaN where unknown

    def __post_init__(self):
        object.__setattr__(self, "y", np.asarray(self.y, dtype=np.int64))
        object.__setattr__(self, "groups", np.asarray(self.groups, dtype=str))
        object.__setattr__(self, "bayes", np.asarray(self.bayes, dtype=np.float64))
        n = len(self.rois)
        if not (len(self.y) == len(self.groups) == len(self.ids) == len(self.bayes) == n):
            raise ValueError("rois, y, groups, ids and bayes must have the same length")

    def __len__(self) -> int:
        return len(self.rois)

    def subset(self, index) -> "TrainingSet":
        index = np.asarray(index)
        return TrainingSet([self.rois[i] for i in index], self.y[index], self.groups[index],
                           [self.ids[i] for i in index], self.bayes[index])


# --------------------------------------------------------------------------- pieces

def smoteenn_resample(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """SMOTE + ENN on training rows (standardised for the neighbour search, mapped back).

    Returns (x, y, info). Left as is (``info["applied"] = False``) when a class has fewer than
    2 rows or resampling would leave a single class."""
    from imblearn.combine import SMOTEENN
    from imblearn.over_sampling import SMOTE
    from imblearn.under_sampling import EditedNearestNeighbours

    counts = np.bincount(y, minlength=2)
    info = {"before": counts.tolist(), "applied": False}
    if counts.min() < 2:
        info["note"] = "a class has fewer than 2 training rows"
        return x, y, info
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    sampler = SMOTEENN(random_state=seed,
                       smote=SMOTE(k_neighbors=int(min(5, counts.min() - 1)), random_state=seed),
                       enn=EditedNearestNeighbours(n_neighbors=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zr, yr = sampler.fit_resample(z, y)
    after = np.bincount(yr, minlength=2)
    if after.min() == 0:
        info["note"] = "resampling left a single class; training rows used as they are"
        return x, y, info
    info.update(after=after.tolist(), applied=True)
    return zr * scale + mean, np.asarray(yr, dtype=np.int64), info


def no_resample(x, y, seed):
    return x, y, {"before": np.bincount(y, minlength=2).tolist(), "applied": False, "note": "resampling off"}


def fit_aggregation(train_rois, method: str, k: int | None, seed: int, n_init: int):
    if method == "kmeans":
        # One OpenMP/BLAS thread: k-means on tables this small is ~10x slower when threads compete
        # for 2 busy cores, and the centroids do not depend on it.
        with threadpool_limits(1):
            return fit_aggregator(train_rois, k=int(k), seed=seed, n_init=n_init)
    if method == "mean_std":
        return fit_mean_std_aggregator(train_rois)
    raise ValueError(f"unknown aggregation {method!r}")


def lightgbm_params(booster: dict, settings: Settings, seed: int) -> dict:
    return {"objective": "binary", "num_leaves": int(booster["num_leaves"]),
            "max_depth": int(booster["max_depth"]), "learning_rate": float(booster["learning_rate"]),
            "lambda_l2": float(booster["reg_lambda"]), "min_data_in_leaf": int(settings.grid.min_child_samples),
            "feature_fraction": float(settings.feature_fraction), "seed": int(seed),
            "feature_fraction_seed": int(seed), "bagging_seed": int(seed), "data_random_seed": int(seed),
            "deterministic": True, "force_col_wise": True, "num_threads": 1, "verbose": -1}


def train_lightgbm(x, y, names, booster: dict, n_estimators: int, settings: Settings, seed: int):
    import lightgbm as lgb

    data = lgb.Dataset(np.asarray(x, dtype=np.float64), label=np.asarray(y), feature_name=lightgbm_safe_names(names),
                       params={"feature_pre_filter": False, "verbose": -1}, free_raw_data=True)
    return lgb.train(lightgbm_params(booster, settings, seed), data, num_boost_round=int(n_estimators))


@dataclass(frozen=True, eq=False)
class FoldData:
    """What one (fold, K) saw: for checks (``on_fold``) and diagnostics."""

    fold: int
    k: int | None
    train_index: np.ndarray
    validation_index: np.ndarray
    x_train: np.ndarray  # aggregated + filled training rows, before resampling
    x_fit: np.ndarray  # what LightGBM was fitted on (after resampling)
    y_fit: np.ndarray
    x_validation: np.ndarray  # exactly what was scored
    aggregator: object
    impute: np.ndarray
    resampling: dict


def config_key(k, booster: dict, n_estimators: int) -> tuple:
    return (k, booster["num_leaves"], booster["max_depth"], booster["learning_rate"], booster["reg_lambda"],
            int(n_estimators))


def key_config(key: tuple) -> dict:
    k, nl, md, lr, rl, ne = key
    return {"k": k, "num_leaves": nl, "max_depth": md, "learning_rate": lr, "reg_lambda": rl, "n_estimators": ne}


def cross_validate(data: TrainingSet, splits, settings: Settings, *, method: str = "kmeans",
                   ks=None, boosters=None, n_estimators=None, seed: int = 0,
                   resample: Callable = None, on_fold: Callable | None = None) -> dict[tuple, np.ndarray]:
    """Out-of-fold scores for every setting: {config_key: scores (n,)}.

    Per fold: aggregation, fill and resampling are fitted on the training rows only (module
    docstring); ``on_fold(FoldData)`` is called with exactly what was fitted and scored."""
    resample = resample or (smoteenn_resample if settings.resampling == "smoteenn" else no_resample)
    grid = settings.grid
    ks = list(ks if ks is not None else (grid.k if method == "kmeans" else [None]))
    boosters = list(boosters if boosters is not None else grid.boosters())
    n_estimators = sorted(n_estimators if n_estimators is not None else grid.n_estimators)
    n = len(data)
    oof = {config_key(k, b, ne): np.full(n, np.nan) for k in ks for b in boosters for ne in n_estimators}
    for fold, (train, val) in enumerate(splits):
        train, val = np.asarray(train), np.asarray(val)
        train_rois = [data.rois[i] for i in train]
        val_rois = [data.rois[i] for i in val]
        for k in ks:
            agg = fit_aggregation(train_rois, method, k, seed, settings.kmeans_n_init)
            impute = fit_impute(agg.transform_many(train_rois))
            x_train = fill_missing(agg.transform_many(train_rois), impute)
            x_val = fill_missing(agg.transform_many(val_rois), impute)
            x_fit, y_fit, info = resample(x_train, data.y[train], seed + fold)
            if on_fold is not None:
                on_fold(FoldData(fold, k, train, val, x_train, x_fit, y_fit, x_val, agg, impute, info))
            for b in boosters:
                model = train_lightgbm(x_fit, y_fit, agg.feature_names, b, n_estimators[-1], settings, seed)
                for ne in n_estimators:
                    oof[config_key(k, b, ne)][val] = model.predict(x_val, num_iteration=ne, num_threads=1)
    return oof


# --------------------------------------------------------------------------- metrics used for selection

def auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half); NaN with a single class."""
    from scipy.stats import rankdata

    y = np.asarray(y)
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def sens_spec(y, decisions) -> tuple[float, float]:
    y = np.asarray(y)
    d = np.asarray(decisions, bool)
    pos, neg = y == 1, y == 0
    sens = float(d[pos].mean()) if pos.any() else float("nan")
    spec = float((~d[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def score_table(oof: dict, y: np.ndarray, thresholds) -> list[dict]:
    rows = []
    for key, scores in oof.items():
        a = auc(y, scores)
        for t in thresholds:
            sens, spec = sens_spec(y, scores >= t)
            rows.append({**key_config(key), "threshold": float(t), "sensitivity": sens, "specificity": spec,
                         "auc": a})
    return rows


def select(rows: list[dict], settings: Settings) -> dict:
    """Sensitivity first (within a tolerance, at a specificity floor), then AUC (module docstring)."""
    if not rows:
        raise ValueError("no setting to select from")

    def num(v):
        return -1.0 if v is None or not np.isfinite(v) else float(v)

    eligible = [r for r in rows if num(r["specificity"]) >= settings.min_specificity]
    floor_met = bool(eligible)
    pool = eligible or rows
    best_sens = max(num(r["sensitivity"]) for r in pool)
    tied = [r for r in pool if num(r["sensitivity"]) >= best_sens - settings.sensitivity_tolerance - 1e-12]
    tied.sort(key=lambda r: (-num(r["auc"]), -num(r["specificity"]), -num(r["sensitivity"]), r["n_estimators"],
                             r["num_leaves"], r["max_depth"] if r["max_depth"] > 0 else 10 ** 6,
                             r["reg_lambda"], r["learning_rate"], r["k"] or 0, -r["threshold"]))
    chosen = dict(tied[0])
    chosen["specificity_floor_met"] = floor_met
    return chosen


def splits_for(data: TrainingSet, n_splits: int, seed: int) -> list:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(data.groups.tolist()))
    if n_groups < n_splits:
        raise TrainingError(f"{n_groups} patients cannot be split into {n_splits} folds grouped by patient; "
                            "use fewer folds or more data", reason="too_few_patients")
    if len(set(data.y.tolist())) < 2:
        raise TrainingError("the outcomes hold a single class; both benign and actionable ROIs are needed",
                            reason="single_class")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The least populated class has only N members"
        return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(len(data)), data.y, data.groups)]


def grid_search(data: TrainingSet, settings: Settings, seed: int, *, method: str = "kmeans", fixed: dict | None = None,
                resample: Callable = None, on_fold: Callable | None = None) -> tuple[dict, list[dict]]:
    """The selected setting and the table of every setting's CV figures."""
    splits = splits_for(data, settings.folds, seed)
    if fixed is None:
        oof = cross_validate(data, splits, settings, method=method, seed=seed, resample=resample, on_fold=on_fold)
    else:
        booster = {k: fixed[k] for k in ("num_leaves", "max_depth", "learning_rate", "reg_lambda")}
        oof = cross_validate(data, splits, settings, method=method, ks=[fixed.get("k")] if method == "kmeans" else None,
                             boosters=[booster], n_estimators=[fixed["n_estimators"]], seed=seed,
                             resample=resample, on_fold=on_fold)
    rows = score_table(oof, data.y, settings.grid.threshold)
    return select(rows, settings), rows


# --------------------------------------------------------------------------- final models

@dataclass(frozen=True, eq=False)
class FittedModel:
    aggregator: object
    impute: np.ndarray
    booster: object  # lightgbm.Booster
    config: dict
    threshold: float
    resampling: dict

    def predict(self, rois) -> np.ndarray:
        x = fill_missing(self.aggregator.transform_many(list(rois)), self.impute)
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)


def fit_model(data: TrainingSet, config: dict, settings: Settings, seed: int, *, method: str = "kmeans",
              resample: Callable = None) -> FittedModel:
    resample = resample or (smoteenn_resample if settings.resampling == "smoteenn" else no_resample)
    agg = fit_aggregation(data.rois, method, config.get("k"), seed, settings.kmeans_n_init)
    raw = agg.transform_many(data.rois)
    impute = fit_impute(raw)
    x = fill_missing(raw, impute)
    x_fit, y_fit, info = resample(x, data.y, seed)
    booster = {k: config[k] for k in ("num_leaves", "max_depth", "learning_rate", "reg_lambda")}
    model = train_lightgbm(x_fit, y_fit, agg.feature_names, booster, config["n_estimators"], settings, seed)
    return FittedModel(agg, impute, model, dict(config), float(config["threshold"]), info)


@dataclass(frozen=True, eq=False)
class NestedResult:
    scores: np.ndarray  # outer-test score of every ROI
    thresholds: np.ndarray  # the threshold its outer fold selected
    fold: np.ndarray  # outer fold index of every ROI
    configs: list  # selected setting per outer fold
    baseline_scores: np.ndarray | None
    baseline_thresholds: np.ndarray | None
    baseline_configs: list


def nested_cv(data: TrainingSet, settings: Settings, *, resample: Callable = None,
              log: Callable = None) -> NestedResult:
    n = len(data)
    outer = splits_for(data, settings.outer_folds, settings.seed)
    scores = np.full(n, np.nan)
    thresholds = np.full(n, np.nan)
    fold_of = np.full(n, -1)
    b_scores = np.full(n, np.nan) if settings.baseline else None
    b_thresholds = np.full(n, np.nan) if settings.baseline else None
    configs, b_configs = [], []
    for o, (train, test) in enumerate(outer):
        inner = data.subset(train)
        seed = settings.seed + 1 + o
        best, _ = grid_search(inner, settings, seed, resample=resample)
        fitted = fit_model(inner, best, settings, seed, resample=resample)
        test_rois = [data.rois[i] for i in test]
        scores[test] = fitted.predict(test_rois)
        thresholds[test] = best["threshold"]
        fold_of[test] = o
        configs.append(best)
        line = f"outer fold {o + 1}/{len(outer)}: k-means AUC {auc(data.y[test], scores[test]):.3f}"
        if settings.baseline:
            b_best, _ = grid_search(inner, settings, seed, method="mean_std", fixed=best, resample=resample)
            b_fitted = fit_model(inner, b_best, settings, seed, method="mean_std", resample=resample)
            b_scores[test] = b_fitted.predict(test_rois)
            b_thresholds[test] = b_best["threshold"]
            b_configs.append(b_best)
            line += f", mean/std AUC {auc(data.y[test], b_scores[test]):.3f}"
        if log:
            log(line)
    return NestedResult(scores, thresholds, fold_of, configs, b_scores, b_thresholds, b_configs)
