"""Metrics with bootstrap intervals, figures, and the JSON + markdown report.

Metrics at a threshold (``decision = score >= threshold``; actionable is the positive class):
accuracy, sensitivity (recall of actionable), specificity, PPV (precision), NPV, F1, and the ROC
AUC of the scores (threshold-free). Each with a 95 % percentile bootstrap interval over
*patients* (patients are drawn with replacement and all their ROIs come along: the CC and MLO
views of one cluster are not independent), ``n_boot`` = 2000 by default, seeded. A replicate
that lacks a class leaves that replicate's undefined metrics out.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from common import durable

from .model import auc

METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auc")


def confusion(y, decisions) -> dict:
    y = np.asarray(y)
    d = np.asarray(decisions, bool)
    return {"tp": int(np.sum(d & (y == 1))), "fp": int(np.sum(d & (y == 0))),
            "tn": int(np.sum(~d & (y == 0))), "fn": int(np.sum(~d & (y == 1)))}


def _ratio(a, b) -> float:
    return a / b if b else float("nan")


def metrics(y, scores, decisions) -> dict:
    c = confusion(y, decisions)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    sens, ppv = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    return {"accuracy": _ratio(tp + tn, tp + tn + fp + fn), "sensitivity": sens,
            "specificity": _ratio(tn, tn + fp), "ppv": ppv, "npv": _ratio(tn, tn + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "auc": auc(y, scores)}


def bootstrap(y, scores, decisions, groups, *, n_boot: int = 2000, seed: int = 0, extra: dict | None = None) -> dict:
    """95 % intervals {metric: [lo, hi]} (patient bootstrap); ``extra``: {name: scores} whose AUC
    gets an interval too (e.g. the Bayes score on the same ROIs)."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    decisions = np.asarray(decisions, bool)
    groups = np.asarray(groups, dtype=str)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    names = list(METRICS) + [f"{name}_auc" for name in (extra or {})]
    samples = {m: [] for m in names}
    for _ in range(int(n_boot)):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        m = metrics(y[idx], scores[idx], decisions[idx])
        for name, value in m.items():
            samples[name].append(value)
        for name, other in (extra or {}).items():
            samples[f"{name}_auc"].append(auc(y[idx], np.asarray(other)[idx]))
    out = {}
    for name, values in samples.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        out[name] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else [None, None]
    return out


def with_intervals(y, scores, decisions, groups, *, n_boot: int, seed: int, extra: dict | None = None) -> dict:
    point = metrics(y, scores, decisions)
    ci = bootstrap(y, scores, decisions, groups, n_boot=n_boot, seed=seed, extra=extra) if n_boot else {}
    out = {name: {"value": _clean(point[name]), "ci95": ci.get(name, [None, None])} for name in METRICS}
    for name, other in (extra or {}).items():
        out[f"{name}_auc"] = {"value": _clean(auc(y, other)), "ci95": ci.get(f"{name}_auc", [None, None])}
    return out


def _clean(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- figures

def _save_png(fig, path: Path) -> None:
    with durable.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def roc_figure(path: Path, y, curves: list[tuple[str, np.ndarray]], operating_point: tuple[float, float] | None,
               title: str) -> Path:
    """ROC curves (label, scores) on the same ROIs; ``operating_point`` = (1 - specificity, sensitivity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    y = np.asarray(y)
    for label, scores in curves:
        scores = np.asarray(scores, dtype=float)
        ok = np.isfinite(scores)
        if len(set(y[ok].tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[ok], scores[ok])
        ax.plot(fpr, tpr, lw=1.8, label=f"{label} (AUC {auc(y[ok], scores[ok]):.3f})")
    if operating_point is not None and all(v is not None and math.isfinite(v) for v in operating_point):
        ax.plot([operating_point[0]], [operating_point[1]], "ko", ms=6, label="operating point")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return path


def importance_figure(path: Path, items: list[tuple[str, float]], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = items[:20][::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.28 * max(len(items), 4) + 1.2))
    ax.barh(range(len(items)), [v for _, v in items], color="#4477aa")
    ax.set_yticks(range(len(items)))
    ax.set_yticklabels([n for n, _ in items], fontsize=7)
    ax.set_xlabel("total gain")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- writing

def write_json(path: Path, obj) -> Path:
    """``obj`` as indented JSON (numpy values as plain ones), written durably."""
    return durable.write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_plain) + "\n")


def write_text(path: Path, text: str) -> Path:
    """``text`` as UTF-8, written durably (:func:`common.durable.write_text`)."""
    return durable.write_text(path, text)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fmt(entry, digits: int = 3) -> str:
    """'0.712 (0.61-0.80)' from {"value", "ci95"}."""
    if entry is None or entry.get("value") is None:
        return "n/a"
    lo, hi = entry.get("ci95") or (None, None)
    text = f"{entry['value']:.{digits}f}"
    if lo is not None and hi is not None:
        text += f" ({lo:.{digits}f}-{hi:.{digits}f})"
    return text


def metrics_table(columns: list[tuple[str, dict]]) -> str:
    """Markdown table: one row per metric, one column per evaluated scorer."""
    names = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity",
             "ppv": "PPV", "npv": "NPV", "f1": "F1", "auc": "ROC AUC"}
    lines = ["| metric | " + " | ".join(c for c, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for key, label in names.items():
        lines.append(f"| {label} | " + " | ".join(fmt(m.get(key)) for _, m in columns) + " |")
    return "\n".join(lines)


def confusion_table(c: dict) -> str:
    return ("| | predicted actionable | predicted benign |\n|---|---|---|\n"
            f"| actionable (truth) | {c['tp']} (TP) | {c['fn']} (FN) |\n"
            f"| benign (truth) | {c['fp']} (FP) | {c['tn']} (TN) |")
