"""Cluster-level FROC and false marks (``calcnode evaluate-clusters``).

On simulated views (:mod:`training.clusters.collect` for the hit rule): for every threshold t on
the cluster confidence, *sensitivity* = truth clusters hit by a candidate with confidence >= t /
all truth clusters (also over the clusters visible to the ideal observer -- the truth the target is
stated on --, over the clusters our segmentation can detect, and per calcification type), and *false
marks per image* = candidates with confidence >= t that hit no truth cluster (and are not in an
ignore region) / simulated views. Reported: the FROC curve, the sensitivity at 0.2 false marks per
image (the highest threshold-swept sensitivity whose false-mark rate is <= 0.2), and at the model's
operating threshold: sensitivity, false marks per image on all simulated views, on simulated views
without truth clusters, and on each real view (where every mark outside the lesion region is false).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.clusters import RULE_THRESHOLD, ClusterModel, ClusterCandidate, score_candidates

from .collect import OBSERVER_FP_PER_CM2, OBSERVER_MIN_PARTICLES, ViewCandidates

FP_RATE_OF_INTEREST = 0.2


def confidences(views: Sequence[ViewCandidates], model: ClusterModel | None) -> list[np.ndarray]:
    """Per view, the confidence of each candidate (the model's, or the rule's without a model)."""
    out = []
    for v in views:
        cands = [ClusterCandidate(member_labels=(), centroid_rc=(0.0, 0.0), outline_xy=np.zeros((3, 2)),
                                  area_mm2=0.0, features=c["features"]) for c in v.candidates]
        out.append(score_candidates(cands, model))
    return out


def _visible(t: dict) -> bool:
    """The truth cluster is visible to the ideal observer (:mod:`training.clusters.collect`)."""
    return bool(t.get("visible"))


def is_false_mark(c: dict) -> bool:
    """A candidate that hits no truth cluster and is not in an ignore region: a false mark when kept."""
    return not c["hits"] and not c["ignored"]


def false_mark_confidences(views: Sequence[ViewCandidates], conf: Sequence[np.ndarray]) -> np.ndarray:
    """The confidences of every view's false-mark candidates (:func:`is_false_mark`), sorted: the false
    marks at a threshold t are those >= t, counted for any t by one ``searchsorted``."""
    return np.sort(np.concatenate([np.asarray(c, float)[[is_false_mark(cand) for cand in v.candidates]]
                                   for v, c in zip(views, conf)] + [np.zeros(0)]))


def operating(views: Sequence[ViewCandidates], conf: Sequence[np.ndarray], t: float) -> dict:
    """Counts at threshold ``t``: found flags per truth cluster, false marks per view."""
    found, false_marks = [], []
    for v, c in zip(views, conf):
        keep = c >= t
        hit = set()
        for cand, k in zip(v.candidates, keep):
            if k:
                hit.update(cand["hits"])
        found += [i in hit for i in range(len(v.truth))]
        false_marks.append(int(sum(1 for cand, k in zip(v.candidates, keep) if k and is_false_mark(cand))))
    return {"found": found, "false_marks": false_marks}


def _truth(views: Sequence[ViewCandidates]) -> list[dict]:
    return [t for v in views for t in v.truth]


def _best_hits(views: Sequence[ViewCandidates], conf: Sequence[np.ndarray]) -> np.ndarray:
    """Per truth cluster (in :func:`_truth`'s order), the highest confidence of a candidate that hits
    it (-inf when none does): the cluster is found at every threshold up to that one."""
    best = []
    for v, c in zip(views, conf):
        b = np.full(len(v.truth), -np.inf)
        for cand, k in zip(v.candidates, c):
            for i in cand["hits"]:
                b[i] = max(b[i], float(k))
        best.append(b)
    return np.concatenate(best + [np.zeros(0)])


def froc(views: Sequence[ViewCandidates], conf: Sequence[np.ndarray], subset=None) -> list[dict]:
    """FROC points (threshold, sensitivity, false marks per image), thresholds descending.
    ``subset``: truth-cluster predicate for the sensitivity (e.g. a type); all clusters if None.

    The points are :func:`operating` at every candidate confidence (and above them all), counted at
    once from sorted values: a truth cluster is found at t when its best hit's confidence is >= t,
    and the false marks at t are the false candidates with confidence >= t (one pass over the
    views, not one per confidence: that was quadratic in the candidates)."""
    truth = _truth(views)
    chosen = np.array([subset is None or subset(t) for t in truth], bool)
    n_images = max(len(views), 1)
    thresholds = np.unique(np.concatenate([*conf, [np.inf]]))[::-1] if views else np.array([np.inf])
    best = np.sort(_best_hits(views, conf)[chosen])
    false_conf = false_mark_confidences(views, conf)
    found = len(best) - np.searchsorted(best, thresholds, side="left")        # best hit >= t
    marks = len(false_conf) - np.searchsorted(false_conf, thresholds, side="left")
    return [{"threshold": float(min(t, 1.0)) if np.isfinite(t) else 1.0 + 1e-9,
             "sensitivity": float(f / len(best)) if len(best) else float("nan"),
             "fp_per_image": int(m) / n_images}
            for t, f, m in zip(thresholds, found, marks)]


def sensitivity_at(points: list[dict], fp_rate: float = FP_RATE_OF_INTEREST) -> dict:
    """The FROC point with the highest sensitivity whose false-mark rate is <= ``fp_rate``."""
    ok = [p for p in points if p["fp_per_image"] <= fp_rate + 1e-12 and np.isfinite(p["sensitivity"])]
    if not ok:
        return {"threshold": None, "sensitivity": 0.0, "fp_per_image": None}
    return max(ok, key=lambda p: (p["sensitivity"], -p["fp_per_image"]))


def _first_half_only(sim: Sequence[ViewCandidates], conf: Sequence[np.ndarray], threshold: float) -> dict | None:
    """Visible clusters' sensitivity when a hit must hold half of *all* the cluster's calcifications
    (the hit rule before the eighth session; :mod:`training.clusters.collect`): at the operating
    threshold and at <= 0.2 false marks per image. None for candidates collected before ``hits_all``."""
    if not all("hits_all" in c for v in sim for c in v.candidates):
        return None
    views = [ViewCandidates(name=v.name, source=v.source, truth=v.truth,
                            candidates=[{**c, "hits": c["hits_all"]} for c in v.candidates]) for v in sim]
    op = operating(views, conf, threshold)
    found = np.array(op["found"], bool)
    visible = np.array([_visible(t) for t in _truth(views)], bool)
    return {"operating_point": {"sensitivity": float(found[visible].mean()) if visible.any() else None,
                                "fp_per_image": sum(op["false_marks"]) / max(len(views), 1)},
            "at_fp_rate": sensitivity_at(froc(views, conf, _visible))}


def evaluate(sim: Sequence[ViewCandidates], real: Sequence[ViewCandidates], model: ClusterModel | None,
             model_name: str) -> dict:
    """The evaluation report (module docstring)."""
    threshold = RULE_THRESHOLD if model is None else float(model.threshold)
    sim_conf, real_conf = confidences(sim, model), confidences(real, model)
    truth = _truth(sim)
    kinds = sorted({t["kind"] for t in truth if t["kind"]})
    observed = any(t.get("visible") is not None for t in truth)
    subsets = {"all": None, "detectable": lambda t: t["detectable"]}
    if observed:
        subsets["visible"] = _visible
    for kind in kinds:
        subsets[kind] = (lambda k: lambda t: t["kind"] == k)(kind)
        subsets[f"{kind} (detectable)"] = (lambda k: lambda t: t["kind"] == k and t["detectable"])(kind)
        if observed:
            subsets[f"{kind} (visible)"] = (lambda k: lambda t: t["kind"] == k and _visible(t))(kind)
    curves = {name: froc(sim, sim_conf, s) for name, s in subsets.items()}
    op = operating(sim, sim_conf, threshold)
    found = np.array(op["found"], bool)
    negative = [i for i, v in enumerate(sim) if not v.truth]

    def sens(pred):
        idx = [i for i, t in enumerate(truth) if pred(t)]
        return {"n": len(idx), "sensitivity": float(found[idx].mean()) if idx else None}

    # kept clusters that the classifier cannot score: < 2 of the operating point's calcifications in
    # the outline (collected since the eighth session; None for older candidate files)
    kept = [(c, bool(c["hits"])) for v, conf in zip(sim, sim_conf) for c, p in zip(v.candidates, conf)
            if p >= threshold and not (c["ignored"] and not c["hits"])]
    counted = [(c["n_operating_point"], hit) for c, hit in kept if "n_operating_point" in c]
    not_assessable = ({"kept": len(counted), "hits": sum(h for _, h in counted),
                       "not_assessable": sum(n < 2 for n, _ in counted),
                       "hits_not_assessable": sum(n < 2 and h for n, h in counted)}
                      if kept and len(counted) == len(kept) else None)
    real_op = operating(real, real_conf, threshold)
    at_02 = sensitivity_at(curves["all"])
    t02 = at_02["threshold"]
    real_at_02 = operating(real, real_conf, t02) if t02 is not None else None
    report = {
        "model": model_name,
        "note": "simulated views and real normal tissue; NOT FOR CLINICAL USE",
        "hit_rule": ("a detected outline containing >= 50 % of a truth cluster's calcifications, or >= 50 % of "
                     "those the ideal observer finds (pixel centroids)"),
        "simulated": {
            "images": len(sim), "negative_images": len(negative), "truth_clusters": len(truth),
            "detectable_clusters": int(sum(t["detectable"] for t in truth)),
            "visible_clusters": int(sum(_visible(t) for t in truth)) if observed else None,
            "visible_rule": (f"truth clusters with >= {OBSERVER_MIN_PARTICLES} calcifications the ideal observer "
                             f"(calcnode seg-ceiling) finds at {OBSERVER_FP_PER_CM2:g} FP/cm2 of ROI "
                             "(probability >= 1/2 each)"),
            "candidates": int(sum(len(v.candidates) for v in sim)),
            "at_fp_rate": {"fp_per_image": FP_RATE_OF_INTEREST,
                           **{name: sensitivity_at(points) for name, points in curves.items()}},
            "operating_point": {
                "threshold": threshold,
                "fp_per_image": sum(op["false_marks"]) / max(len(sim), 1),
                "fp_per_negative_image": (sum(op["false_marks"][i] for i in negative) / len(negative)
                                          if negative else None),
                "sensitivity": {"all": sens(lambda t: True), "detectable": sens(lambda t: t["detectable"]),
                                **({"visible": sens(_visible)} if observed else {}),
                                **({f"{k} (visible)": sens(lambda t, k=k: t["kind"] == k and _visible(t))
                                    for k in kinds} if observed else {}),
                                **{k: sens(lambda t, k=k: t["kind"] == k) for k in kinds},
                                **{f"{k} (detectable)": sens(lambda t, k=k: t["kind"] == k and t["detectable"])
                                   for k in kinds}},
            },
            "kept_not_assessable": not_assessable,
            "visible_by_the_all_calcifications_rule": _first_half_only(sim, sim_conf, threshold) if observed else None,
            "froc": curves,
        },
        "real": {
            "images": len(real),
            "views": {v.name: {"candidates": len(v.candidates),
                               "ignored_in_lesion_region": int(sum(c["ignored"] for c in v.candidates)),
                               "false_marks_at_operating_point": real_op["false_marks"][i],
                               "false_marks_at_0.2_threshold": (real_at_02["false_marks"][i]
                                                                if real_at_02 else None)}
                      for i, v in enumerate(real)},
            "fp_per_image_at_operating_point": (sum(real_op["false_marks"]) / len(real)) if real else None,
        },
        "cpu_seconds_per_view": float(np.mean([v.seconds for v in [*sim, *real]])) if (sim or real) else None,
    }
    return report


def plot(report: dict, path: Path) -> None:
    """FROC curves (all, detectable, per type) with the operating point, as a PNG at ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = report["simulated"]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for name, points in sim["froc"].items():
        if "(detectable)" in name:
            continue
        if not points or not np.isfinite(points[-1]["sensitivity"]):
            continue
        if "(visible)" in name:
            continue
        style = {"all": dict(lw=2.5, color="k"), "detectable": dict(lw=2, color="k", ls="--"),
                 "visible": dict(lw=2.5, color="tab:purple")}.get(name, dict(lw=1))
        ax.step([p["fp_per_image"] for p in points], [p["sensitivity"] for p in points], where="post",
                label=name, **style)
    op = sim["operating_point"]
    ax.plot(op["fp_per_image"], op["sensitivity"]["all"]["sensitivity"] or 0, "o", color="r",
            label=f"operating point (t = {op['threshold']:.2f})")
    ax.axvline(FP_RATE_OF_INTEREST, color="grey", lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlim(0, None)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false cluster marks per image")
    ax.set_ylabel("cluster sensitivity")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    real = report["real"]
    rate = real["fp_per_image_at_operating_point"]
    ax.set_title(f"Cluster FROC: {sim['truth_clusters']} clusters in {sim['images']} simulated views; "
                 f"real normal views: {rate if rate is None else round(rate, 2)} false marks/view\n"
                 f"{report['model']} - simulated data, not for clinical use", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")  # path may be a temporary name without the suffix
    plt.close(fig)


def report_json(report: dict) -> str:
    return json.dumps(report, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
