"""The classifier's learning curve: nested-CV AUC against the number of training ROIs, with the
Bayes-optimal AUC on the same ROIs beside it (``calcnode learning-curve``, docs/classifier.md).

Data, segmentation and features are exactly those of ``calcnode train``
(:func:`.pipeline.load_data`: same outcome tables, CNN, operating point and feature cache). For
each requested size n (usable ROIs, i.e. with >= 2 segmented calcifications), ``repeats`` random
subsets are drawn (:func:`patient_subset`: whole patients only, stratified by whether a patient
has an actionable ROI, seeded by (seed, n, repeat)); on each the nested CV of the training
report runs unchanged (:func:`.model.nested_cv`: same grid, folds, SMOTE + ENN inside the
training folds, mean/std baseline) and is summarised as the report does
(:func:`.pipeline._nested_report`: pooled outer-test AUC with a 95 % patient bootstrap interval,
and the Bayes-optimal AUC of the ``bayes_score`` column on the same ROIs with its interval).

If the model's AUC approaches the Bayes AUC as n grows, the gap is data; if it stays flat well
below, it is method (segmentation, features, classifier). A size larger than the usable ROIs,
or a subset too small for the folds, is reported as skipped with the reason.
"""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from common import durable

from . import report as rep
from .model import Settings, TrainingError, TrainingSet, nested_cv
from .pipeline import _nested_report, _predictions_csv, _seg_model, _stderr, default_cache_dir, load_data

NOTICE = "simulated data, NOT FOR CLINICAL USE"
SUBSETS_FILE = "learning_curve_subsets.csv"


def default_repeats(n: int) -> int:
    """Subsets drawn per size: 3 below 1000 ROIs (small subsets vary a lot from draw to draw),
    1 from 1000 (most of the pool: draws overlap, and each costs as much as three small ones)."""
    return 3 if n < 1000 else 1


def patient_subset(y, groups, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of about ``n`` rows made of whole patients (``groups``), sorted.

    Patients are split into two strata, with and without an actionable row, and each stratum
    contributes about its share of the rows (so the prevalence follows the pool's). Within a
    stratum patients are taken in random order while that brings the count closer to the
    stratum's target: the result is within half a patient's rows of n per stratum."""
    y = np.asarray(y)
    groups = np.asarray(groups, dtype=str)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    positive = np.array([bool(y[m].any()) for m in members])
    total = len(y)
    chosen: list[np.ndarray] = []
    for stratum in (True, False):
        patients = np.flatnonzero(positive == stratum)
        rows_in = sum(len(members[g]) for g in patients)
        target = n * rows_in / total if total else 0
        count = 0
        for g in rng.permutation(patients):
            size = len(members[g])
            if abs(count + size - target) < abs(count - target):
                chosen.append(members[g])
                count += size
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


@dataclass
class CurveOptions:
    data_dirs: list
    labels: Path | list  # one outcome table, or one per data folder (patients grouped per table)
    out: Path
    sizes: list  # requested numbers of usable ROIs
    seg_model: Path | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    workers: int = 2  # feature extraction (via the caller's executor) and nested CV jobs in parallel
    repeats: int | None = None  # None: default_repeats(n)
    settings: Settings = field(default_factory=Settings)
    n_boot: int = 2000
    quiet: bool = False
    default_pixel_spacing_mm: float | None = None


def _job(ts: TrainingSet, settings: Settings, n_boot: int, has_bayes: bool) -> tuple[dict | str, list, float]:
    """One subset's nested CV: (its report as in ``calcnode train``, or the reason it cannot
    run; the outer-test scores; seconds). Runs in a worker process when workers > 1."""
    t0 = time.perf_counter()
    try:
        # one BLAS/OpenMP thread, as in train: the result does not depend on it
        with threadpool_limits(1):
            nested = nested_cv(ts, settings)
    except TrainingError as exc:
        return str(exc), [], time.perf_counter() - t0
    report = _nested_report(ts, nested, has_bayes, n_boot, settings.seed)
    return report, nested.scores.tolist(), time.perf_counter() - t0


def learning_curve(opt: CurveOptions) -> dict:
    """Run the curve and write ``learning_curve.json``, ``.png`` and ``.md`` to ``opt.out``."""
    log = _stderr("calcnode learning-curve", opt.quiet)
    t0 = time.perf_counter()
    out = Path(opt.out)
    seg_path, seg_sha = _seg_model(opt.seg_model, log)
    cache_dir = (Path(opt.cache_dir) if opt.cache_dir else default_cache_dir(opt.data_dirs, out)) \
        if opt.use_cache else None
    data = load_data(opt.data_dirs, opt.labels, seg_path, seg_sha, cache_dir=cache_dir, workers=opt.workers,
                     progress=not opt.quiet, log=log, default_pixel_spacing_mm=opt.default_pixel_spacing_mm)
    t_features = time.perf_counter() - t0
    ts = data.training_set()
    has_bayes = len(ts) > 0 and bool(np.isfinite(ts.bayes).all())
    s = opt.settings
    sizes, skipped, jobs = [], [], []  # skipped: sizes beyond the pool, subsets the folds cannot split
    # "all": every usable ROI (the largest point whatever the data hold)
    for n in sorted({len(ts) if v == "all" else int(v) for v in opt.sizes}):
        if n > len(ts):
            skipped.append({"n": n, "reason": f"only {len(ts)} usable ROIs (of {len(data.extracted)} labelled: "
                                              f"{len(data.not_assessable)} not assessable, {len(data.failed)} "
                                              "failed); add data"})
            continue
        # the whole pool is one subset: further draws would be the same
        repeats = 1 if n == len(ts) else (opt.repeats or default_repeats(n))
        draws = [patient_subset(ts.y, ts.groups, n, np.random.default_rng([s.seed, n, r])) for r in range(repeats)]
        jobs += [(n, r, index, ts.subset(index)) for r, index in enumerate(draws)]
        sizes.append({"n": n, "draws": draws})
    log(f"{len(ts)} usable ROIs of {len(set(ts.groups.tolist()))} patients; {len(jobs)} nested CVs "
        f"({s.outer_folds} x {s.folds} folds, grid of {s.grid.size}) for sizes "
        f"{', '.join(str(z['n']) for z in sizes) or 'none'}"
        + (f"; skipped: {', '.join(str(k['n']) for k in skipped)}" if skipped else ""))
    results = _run_jobs(jobs, s, opt.n_boot, has_bayes, opt.workers, log)
    curve, subset_rows = [], []
    for entry in sizes:
        runs = []
        for r, index in enumerate(entry["draws"]):
            sub = ts.subset(index)
            nested, scores, seconds = results[(entry["n"], r)]
            if isinstance(nested, str):  # too few patients or a single class for the folds
                skipped.append({"n": entry["n"], "repeat": r,
                                "reason": f"{len(sub)} ROIs of {len(set(sub.groups.tolist()))} patients "
                                          f"({int(sub.y.sum())} actionable): {nested}"})
                continue
            subset_rows += [[entry["n"], r, sub.ids[i], sub.groups[i], "actionable" if sub.y[i] else "benign",
                             float(scores[i]), None if not np.isfinite(sub.bayes[i]) else float(sub.bayes[i])]
                            for i in range(len(sub))]
            k = nested["kmeans"]["metrics"]
            runs.append({"repeat": r, "rois": len(sub), "patients": len(set(sub.groups.tolist())),
                         "actionable": int(sub.y.sum()), "auc": k["auc"],
                         "auc_fold_mean": nested["kmeans"]["auc_fold_mean"],
                         "auc_fold_sd": nested["kmeans"]["auc_fold_sd"],
                         "mean_std_auc": nested["mean_std"]["metrics"]["auc"] if "mean_std" in nested else None,
                         "bayes_auc": nested["bayes"]["auc"] if "bayes" in nested else None,
                         "sensitivity": k["sensitivity"], "specificity": k["specificity"],
                         "seconds": round(seconds, 1)})
        if runs:
            curve.append({"n": entry["n"], "repeats": len(runs), "runs": runs,
                          "auc_mean": _mean(r["auc"] for r in runs),
                          "auc_sd": _sd(r["auc"] for r in runs),
                          "mean_std_auc_mean": _mean(r["mean_std_auc"] for r in runs),
                          "bayes_auc_mean": _mean(r["bayes_auc"] for r in runs)})
    result = {
        "kind": "learning_curve",
        "notice": NOTICE,
        "not_for_clinical_use": True,
        "segmentation_cnn": {"file": seg_path.name, "identity": seg_sha},
        "data": data.summary(opt.labels) | {"problems": data.problems[:50],
                                           "failed": [f"{e.labelled.key}: {e.error}" for e in data.failed]},
        "settings": s.to_json() | {"bootstrap": opt.n_boot, "repeats": opt.repeats or "default: 3 below 1000 "
                                                                                    "ROIs, 1 from 1000"},
        "sizes_requested": sorted({v for v in opt.sizes if v != "all"}) + (["all"] if "all" in opt.sizes else []),
        "curve": curve,
        "skipped": sorted(skipped, key=lambda k: (k["n"], k.get("repeat", -1))),
        "figures": {"curve": "learning_curve.png", "table": "learning_curve.md", "subsets": SUBSETS_FILE},
        "timings_s": {"features": round(t_features, 1), "total": round(time.perf_counter() - t0, 1)},
        "feature_cache": str(cache_dir) if cache_dir else None,
    }
    durable.make_dirs(out)
    if curve:
        curve_figure(out / "learning_curve.png", curve)
    else:
        result["figures"].pop("curve")
    # every subset's ROIs with their outer-test and Bayes scores: the figures can be recomputed
    _predictions_csv(out / SUBSETS_FILE, ["n", "repeat", "roi", "patient_id", "outcome", "score", "bayes_score"],
                     subset_rows)
    rep.write_json(out / "learning_curve.json", result)
    rep.write_text(out / "learning_curve.md", curve_markdown(result))
    log(f"learning curve in {out} ({result['timings_s']['total']:.0f} s); {NOTICE}")
    return result


def _run_jobs(jobs, settings: Settings, n_boot: int, has_bayes: bool, workers: int, log) -> dict:
    """{(n, repeat): (nested report, seconds)}; the largest subsets first, over ``workers``
    processes (spawned: the parent may hold torch and Dask threads). Each job is seeded, so the
    result does not depend on the order or the number of workers."""
    order = sorted(jobs, key=lambda j: -len(j[3]))
    results = {}
    if workers <= 1 or len(order) <= 1:
        for n, r, _, sub in order:
            results[(n, r)] = _job(sub, settings, n_boot, has_bayes)
            _log_job(log, n, r, sub, results[(n, r)])
        return results
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {(n, r): (sub, pool.submit(_job, sub, settings, n_boot, has_bayes)) for n, r, _, sub in order}
        for (n, r), (sub, future) in futures.items():
            results[(n, r)] = future.result()
            _log_job(log, n, r, sub, results[(n, r)])
    return results


def _log_job(log, n, r, sub, result) -> None:
    nested, _, seconds = result
    if isinstance(nested, str):
        log(f"n={n} repeat {r + 1}: {len(sub)} ROIs, skipped: {nested}")
        return
    bayes = nested.get("bayes", {}).get("auc")
    log(f"n={n} repeat {r + 1}: {len(sub)} ROIs, nested-CV AUC {rep.fmt(nested['kmeans']['metrics']['auc'])}"
        + (f", Bayes {rep.fmt(bayes)}" if bayes else "") + f" ({seconds:.0f} s)")


def _values(items) -> list[float]:
    return [float(v["value"]) for v in items if v is not None and v.get("value") is not None]


def _mean(items):
    v = _values(items)
    return round(float(np.mean(v)), 6) if v else None


def _sd(items):
    v = _values(items)
    return round(float(np.std(v, ddof=1)), 6) if len(v) > 1 else None


def curve_figure(path: Path, curve: list[dict]) -> Path:
    """AUC against the number of ROIs (log axis): every subset's nested-CV AUC with its 95 %
    interval, the mean/std baseline, and the Bayes-optimal AUC on the same subset beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    series = (("auc", "k-means model, nested CV", "#4477aa", -1), ("mean_std_auc", "mean/std baseline, nested CV",
                                                                   "#999933", 0),
              ("bayes_auc", "Bayes-optimal, same ROIs", "#cc6677", 1))
    for key, label, colour, shift in series:
        xs, ys, lo, hi, mx, my = [], [], [], [], [], []
        for entry in curve:
            values = []
            for run in entry["runs"]:
                m = run.get(key)
                if not m or m.get("value") is None:
                    continue
                # side by side at each size (x 1.04 per series, x 1.01 per repeat) so the intervals
                # do not hide each other
                xs.append(run["rois"] * 1.04 ** shift * 1.01 ** (run["repeat"] - 1))
                ys.append(m["value"])
                a, b = m["ci95"] if m.get("ci95") and None not in m["ci95"] else (m["value"], m["value"])
                lo.append(m["value"] - a)
                hi.append(b - m["value"])
                values.append(m["value"])
            if values:
                mx.append(entry["n"] * 1.04 ** shift)
                my.append(float(np.mean(values)))
        if not xs:
            continue
        thin = key == "mean_std_auc"
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", ms=3 if thin else 4, color=colour, alpha=0.5 if thin else 0.8,
                    capsize=2, lw=0.8)
        ax.plot(mx, my, "-", color=colour, lw=1.0 if thin else 1.8, label=label)
    ax.axhline(0.5, ls=":", c="grey", lw=1)
    ax.set_xscale("log")
    sizes = [e["n"] for e in curve]
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_ylim(0.3, 1.0)
    ax.set_xlabel("usable ROIs in the subset (whole patients; log scale)")
    ax.set_ylabel("ROC AUC (95 % patient-bootstrap interval)")
    ax.set_title(f"Classifier learning curve ({NOTICE})", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    rep._save_png(fig, path)
    plt.close(fig)
    return path


def curve_markdown(r: dict) -> str:
    s = r["settings"]
    lines = ["# Classifier learning curve", "", f"**{NOTICE}.**", "",
             f"- data: {r['data']['rois_used']} usable ROIs of {r['data']['patients']} patients "
             f"({r['data']['labels_file']}); {r['data']['rois_not_assessable']} not assessable, "
             f"{r['data']['rois_failed']} failed",
             f"- segmentation: `{r['segmentation_cnn']['file']}`, identity `{r['segmentation_cnn']['identity'][:16]}...`",
             f"- per subset: nested CV {s['outer_folds']} outer x {s['folds']} inner folds grouped by patient, grid of "
             f"{_grid_size(s)} settings, resampling {s['resampling']}, seed {s['seed']}; 95 % intervals from "
             f"{s['bootstrap']} patient-bootstrap replicates", "",
             "| n requested | ROIs | patients | actionable | nested-CV AUC (k-means) | mean/std AUC | "
             "Bayes-optimal AUC, same ROIs | gap |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in r["curve"]:
        for run in entry["runs"]:
            gap = (run["bayes_auc"]["value"] - run["auc"]["value"]) \
                if run.get("bayes_auc") and run["bayes_auc"].get("value") is not None \
                and run["auc"].get("value") is not None else None
            lines.append(f"| {entry['n']} | {run['rois']} | {run['patients']} | {run['actionable']} | "
                         f"{rep.fmt(run['auc'])} | {rep.fmt(run['mean_std_auc'])} | {rep.fmt(run['bayes_auc'])} | "
                         + ("n/a" if gap is None else f"{gap:.3f}") + " |")
        if entry["repeats"] > 1:
            sd = entry["auc_sd"]
            lines.append(f"| {entry['n']} mean of {entry['repeats']} | | | | "
                         f"{_f(entry['auc_mean'])}" + (f" +/- {sd:.3f}" if sd is not None else "")
                         + f" | {_f(entry['mean_std_auc_mean'])} | {_f(entry['bayes_auc_mean'])} | |")
    if r["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- n = {k['n']}" + (f" (repeat {k['repeat'] + 1})" if "repeat" in k else "")
                                         + f": {k['reason']}" for k in r["skipped"]]
    if "curve" in r["figures"]:
        lines += ["", "![learning curve](learning_curve.png)"]
    lines += ["", f"Timings (s): {', '.join(f'{k} {v}' for k, v in r['timings_s'].items())}", ""]
    return "\n".join(lines)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _grid_size(settings_json: dict) -> int:
    g = settings_json["grid"]
    n = 1
    for key in ("k", "num_leaves", "max_depth", "learning_rate", "n_estimators", "reg_lambda", "threshold"):
        n *= len(g[key])
    return n

