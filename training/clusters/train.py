"""Fit the cluster model (:class:`analysis.clusters.ClusterModel`) on labelled candidate clusters.

Samples: every candidate cluster of the training views (:mod:`training.clusters.collect`), positive
when it hits a truth cluster, negative when it hits none; candidates in an ignore region (a real
view's benign lesion) are left out. Candidates of real normal views are weighted ``real_weight``
times (default 5): they are few, and they are the false marks the simulator does not make.

**Positives must localise** (since the tenth session): a hit whose outline is larger than
``max_positive_area_mm2`` (default :data:`MAX_POSITIVE_AREA_MM2`, 500 mm², a disk 2.5 cm across)
is left out of the fit, neither positive nor negative. In grainy or dense tissue single linkage
chains a cluster's calcifications with the isolated objects around it into a group of several cm²;
that group still *hits* the cluster (the evaluation's rule is unchanged), but taught as a positive it
tells the scorer that large chained groups of well-supported objects are clusters, which is exactly
the false mark real tissue makes (docs/clusters.md, "Model 4"). 500 mm² is above the outline of
every simulated truth cluster (hull + 1 mm margin: median 34, 99th percentile 252, largest 415 mm²
on the training views) and above BI-RADS' 2 cm extent of a grouped distribution. Left-out hits are
still scored out of fold (their fold's model), so the out-of-fold figures count them as the
evaluation does.

Not used: ``contrast_mean`` (the members' contrast in [0, 1] image units). It depends on how an
image's grey levels were scaled (the simulator's 12-bit display units against a PNG's), and with it
the model learnt "bright = not a cluster" from the real negatives, i.e. the source of the image,
not the calcifications; the contrast-to-noise ratios (``cnr_*``) are scale-free and stay.

Model (``learner``): gradient-boosted trees (LightGBM, :data:`LIGHTGBM_PARAMS`: 200 trees of depth
<= 3, learning rate 0.05, deterministic, one thread; the default since the eighth session), or an
L2-regularised logistic regression (scikit-learn, ``C`` default 0.3, on standardised features), both
on the features of :data:`MODEL_FEATURES` after their transform (``log1p`` for counts, areas,
distances and ratios). The trees were chosen because the evidence interacts: a group of faint,
weakly supported objects is a cluster when they are many and dense, not when they sit on a line,
which a sum of per-feature terms cannot say (docs/clusters.md, "The scorer", has the comparison).

Operating threshold: chosen on out-of-fold probabilities (5 folds grouped by case, so a case's
CC and MLO, which share their clusters, are never split), as the lowest threshold whose false marks
per training image (simulated and real views together) are <= ``target_fp_per_image`` (default
0.1, half the 0.2 of the target so that a held-out set has margin), i.e. the most sensitive one.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Sequence

import numpy as np

from analysis.clusters import FEATURE_NAMES, ClusterModel, transformed_features

from .collect import ViewCandidates
from .evaluate import false_mark_confidences, operating

#: The features the model uses and their transform.
MODEL_FEATURES = {
    "n_calcifications": "log1p",
    "density_per_cm2": "log1p",
    "area_mm2": "log1p",
    "max_in_window": "log1p",
    "spread_mm": "log1p",
    "linearity": "identity",
    "line_residual_mm": "log1p",
    "nn_distance_mm": "log1p",
    "cnn_mean": "identity",
    "cnn_min": "identity",
    "cnn_max": "identity",
    "cnn_evidence_mean": "identity",
    "cnn_evidence_top3": "identity",
    "cnn_evidence_sum": "log1p",
    "cnr_mean": "log1p",
    "cnr_max": "log1p",
    "object_area_mean_mm2": "log1p",
    "object_area_cv": "identity",
    "edge_distance_mm": "log1p",
    "surround_density_per_cm2": "log1p",
    "view_density_per_cm2": "log1p",
    "window_excess": "log1p",
    "object_elongation_mean": "log1p",
}
assert set(MODEL_FEATURES) <= set(FEATURE_NAMES)

#: LightGBM's settings for ``learner="lightgbm"`` (fixed, not tuned per run): small trees, slow
#: learning, and LightGBM's deterministic mode on one thread so the same data give the same bytes.
LIGHTGBM_PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 7, "max_depth": 3,
                   "min_data_in_leaf": 20, "lambda_l2": 1.0, "deterministic": True,
                   "force_col_wise": True, "num_threads": 1, "verbose": -1}
LIGHTGBM_ROUNDS = 200
#: The largest outline (mm²) of a hit that is fitted as a positive (module docstring).
MAX_POSITIVE_AREA_MM2 = 500.0


def case_of(view_name: str) -> str:
    """The case a view belongs to (its CC and MLO share clusters): ``synthetic:<set>/truth/<case>``
    without the view, or the real exam's name without the view code."""
    return re.sub(r"(/[LR](CC|MLO)|_[LR]-(CC|MLO))$", "", view_name)


def left_out(candidate: dict, max_positive_area_mm2: float | None = MAX_POSITIVE_AREA_MM2) -> bool:
    """Not fitted: in an ignore region without a hit, or a hit too large to localise its cluster."""
    if not candidate["hits"]:
        return bool(candidate["ignored"])
    return max_positive_area_mm2 is not None and float(candidate["features"]["area_mm2"]) > max_positive_area_mm2


def samples(views: Sequence[ViewCandidates], real_weight: float,
            max_positive_area_mm2: float | None = MAX_POSITIVE_AREA_MM2):
    """(features list, labels, weights, view index per sample) of the candidates that are fitted
    (:func:`left_out`)."""
    feats, y, w, where = [], [], [], []
    for i, v in enumerate(views):
        for c in v.candidates:
            if left_out(c, max_positive_area_mm2):
                continue
            feats.append(c["features"])
            y.append(1 if c["hits"] else 0)
            w.append(real_weight if v.source == "real" else 1.0)
            where.append(i)
    return feats, np.array(y, int), np.array(w, float), np.array(where, int)


def _fit(feats: list, y: np.ndarray, w: np.ndarray, c_reg: float, seed: int,
         learner: str = "lightgbm") -> ClusterModel:
    names = tuple(MODEL_FEATURES)
    transforms = tuple(MODEL_FEATURES[n] for n in names)
    if len(set(y.tolist())) < 2:
        raise ValueError("the training candidates are all of one class; more (or other) data are needed")
    x = transformed_features(feats, names, transforms)
    if learner == "lightgbm":
        import lightgbm as lgb

        data = lgb.Dataset(x, label=y, weight=w, feature_name=list(names), free_raw_data=False)
        booster = lgb.train({**LIGHTGBM_PARAMS, "seed": seed}, data, num_boost_round=LIGHTGBM_ROUNDS)
        return ClusterModel(feature_names=names, transforms=transforms, mean=(), scale=(), coef=(),
                            intercept=0.0, threshold=0.5, learner="lightgbm",
                            booster_text=booster.model_to_string())
    if learner != "logistic":
        raise ValueError(f"unknown learner {learner!r}")
    from sklearn.linear_model import LogisticRegression

    mean = np.nanmean(x, axis=0) if len(x) else np.zeros(len(names))
    mean = np.where(np.isfinite(mean), mean, 0.0)
    x = np.where(np.isfinite(x), x, mean[None])
    scale = x.std(axis=0) if len(x) else np.ones(len(names))
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    lr = LogisticRegression(C=c_reg, max_iter=5000, random_state=seed)
    lr.fit(z, y, sample_weight=w)
    return ClusterModel(feature_names=names, transforms=transforms, mean=tuple(map(float, mean)),
                        scale=tuple(map(float, scale)), coef=tuple(map(float, lr.coef_[0])),
                        intercept=float(lr.intercept_[0]), threshold=0.5)


def choose_threshold(views: Sequence[ViewCandidates], conf: list[np.ndarray], target_fp_per_image: float) -> float:
    """The lowest threshold whose false marks per image over ``views`` are <= the target: among the
    candidates' confidences (and 1.0), going down from the top until the false marks exceed it.

    False marks only grow as the threshold falls, so they are counted for every confidence at once
    from the sorted confidences of the false candidates (one sort, not one pass over all views per
    confidence: that was quadratic in the candidates)."""
    false_conf = false_mark_confidences(views, conf)
    values = np.unique(np.concatenate([*conf, [1.0]]))
    marks = len(false_conf) - np.searchsorted(false_conf, values, side="left")  # false marks at >= t
    allowed = marks / max(len(views), 1) <= target_fp_per_image  # False ... False True ... True
    return float(values[np.argmax(allowed)]) if allowed[-1] else 1.0


def train_cluster_model(views: Sequence[ViewCandidates], *, seed: int = 0, c_reg: float = 0.3,
                        real_weight: float = 5.0, target_fp_per_image: float = 0.1, folds: int = 5,
                        learner: str = "lightgbm", info: dict | None = None,
                        max_positive_area_mm2: float | None = MAX_POSITIVE_AREA_MM2) -> ClusterModel:
    """Fit on all ``views`` and set the threshold from out-of-fold probabilities (module docstring)."""
    feats, y, w, where = samples(views, real_weight, max_positive_area_mm2)
    cases = sorted({case_of(v.name) for v in views})
    rng = np.random.default_rng(seed)
    fold_of_case = {c: k % folds for k, c in enumerate(rng.permutation(cases))}
    view_fold = np.array([fold_of_case[case_of(v.name)] for v in views], int)
    fold = view_fold[where]
    # out-of-fold confidence of every candidate of a view (ignored ones without a hit stay 0): those
    # fitted, and the hits left out of the fit, which the evaluation scores all the same
    conf = [np.zeros(len(v.candidates)) for v in views]
    for k in range(folds):
        test = fold == k
        if not test.any() or len(set(y[~test].tolist())) < 2:
            continue
        m = _fit([f for f, t in zip(feats, test) if not t], y[~test], w[~test], c_reg, seed, learner)
        for i in np.flatnonzero(view_fold == k):
            scored = [j for j, cand in enumerate(views[i].candidates) if not (cand["ignored"] and not cand["hits"])]
            if scored:
                conf[i][scored] = m.predict([views[i].candidates[j]["features"] for j in scored])
    threshold = choose_threshold(views, conf, target_fp_per_image)
    model = _fit(feats, y, w, c_reg, seed, learner)
    # what that threshold does out of fold: the figures to choose the training settings on (the
    # member threshold among them) without looking at a held-out set
    at = operating(views, conf, threshold)
    truth = [t for v in views for t in v.truth]
    found = np.array(at["found"], bool)
    visible = np.array([bool(t.get("visible")) for t in truth], bool)
    out_of_fold = {"clusters": len(truth), "found": int(found.sum()),
                   "visible_clusters": int(visible.sum()), "visible_found": int(found[visible].sum()),
                   "false_marks_per_image": round(sum(at["false_marks"]) / max(len(views), 1), 4)}
    meta = {"not_for_clinical_use": "NOT FOR CLINICAL USE: demonstration model trained on simulated views "
                                    "and real normal tissue",
            "samples": int(len(y)), "positives": int(y.sum()), "views": len(views),
            "real_views": int(sum(v.source == "real" for v in views)),
            "seed": seed, "learner": learner,
            **({"C": c_reg} if learner == "logistic" else
               {"lightgbm_params": LIGHTGBM_PARAMS, "lightgbm_rounds": LIGHTGBM_ROUNDS}),
            "real_weight": real_weight, "folds": folds, "max_positive_area_mm2": max_positive_area_mm2,
            "positives_left_out": int(sum(1 for v in views for c in v.candidates
                                          if c["hits"] and left_out(c, max_positive_area_mm2))),
            "target_fp_per_image": target_fp_per_image, "threshold_from": "out-of-fold probabilities",
            "out_of_fold_at_threshold": out_of_fold,
            **(info or {})}
    return replace(model, threshold=float(min(max(threshold, 0.0), 1.0)), info=meta)


def importance(model: ClusterModel) -> dict[str, float]:
    """What each feature contributes: the logistic coefficient (standardised units), or the trees'
    total gain from splits on it (LightGBM's ``importance_type="gain"``)."""
    if model.learner == "lightgbm":
        gain = model.booster().feature_importance(importance_type="gain")
        return {n: round(float(g), 3) for n, g in zip(model.feature_names, gain)}
    return dict(zip(model.feature_names, model.coef))


def describe(model: ClusterModel) -> list[str]:
    """One line per feature, by importance (:func:`importance`), largest first."""
    values = importance(model)
    label = "gain" if model.learner == "lightgbm" else "coefficient"
    order = sorted(values, key=lambda n: -abs(values[n]))
    return [f"{n:>22} {label} {values[n]:+.3f}" for n in order if math.isfinite(values[n])]
