"""evaluate-seg's miss breakdown: the first stage that loses each missed calcification."""
from __future__ import annotations

import numpy as np

from training.segmentation.evaluate import (ImageMatches, StageMatches, case_bootstrap_interval, miss_cause,
                                           misses_by_type, wilson_interval)


def _image() -> ImageMatches:
    """Five truth objects (columns) against 3 HDoG candidates and 4 outlined objects.

    0: matched by kept object 0 (found); 1: a candidate lies on it, no outlined object (not
    outlined); 2: no candidate pixel at all; 3: outlined object 1 matches it, score below the
    threshold; 4: kept object 2 overlaps it (IoU 0.1) but fails the match rule, object 3 (not
    kept) matches it."""
    hdog_iou = np.zeros((3, 5))
    hdog_iou[0, 0] = hdog_iou[1, 1] = hdog_iou[2, 3] = hdog_iou[2, 4] = 0.2
    hdog = StageMatches(score=np.ones(3), matched=[set(), set(), set()], best_iou=hdog_iou)
    cnn_iou = np.zeros((4, 5))
    cnn_iou[0, 0], cnn_iou[1, 3], cnn_iou[2, 4] = 0.6, 0.5, 0.1
    cnn = StageMatches(score=np.array([0.99, 0.5, 0.98, 0.4]), matched=[{0}, {3}, set(), {4}],
                       best_iou=cnn_iou)
    return ImageMatches(n_truth=5, area_cm2=1.0, stages={"hdog": hdog, "hdog_cnn": cnn, "hdog_cnn_whole": cnn},
                        truth_kinds=["punctate", "amorphous", "amorphous", "fine_pleomorphic",
                                     "fine_linear_branching"])


def test_each_miss_has_the_stage_that_lost_it():
    m = _image()
    assert [miss_cause(m, k, 0.9) for k in range(5)] == [
        None, "not_outlined", "no_candidate", "below_threshold", "kept_unmatched"]
    # at a lower threshold object 1 and object 3 are kept: 3 and 4 are found
    assert [miss_cause(m, k, 0.3) for k in range(5)] == [None, "not_outlined", "no_candidate", None, None]


def test_misses_are_counted_per_type():
    counts = misses_by_type([_image(), _image()], 0.9)
    assert counts["amorphous"] == {"no_candidate": 2, "not_outlined": 2, "below_threshold": 0,
                                   "kept_unmatched": 0}
    assert counts["fine_linear_branching"]["kept_unmatched"] == 2
    assert "punctate" not in counts


def test_wilson_interval_matches_the_textbook_values():
    # 100 of 352 (the shipped model's amorphous figure of 2026-12-06): 0.284, interval 0.24-0.33
    low, high = wilson_interval(100, 352)
    assert (round(low, 2), round(high, 2)) == (0.24, 0.33)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == [0.0, 1.0]
    # more objects, narrower interval around the same proportion
    narrow, wide = wilson_interval(300, 1000), wilson_interval(3, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def _patient(case: str, found: int, missed: int, kind: str = "fine_linear_branching") -> ImageMatches:
    """One image of ``case``: ``found`` calcifications matched by kept objects, ``missed`` not."""
    n = found + missed
    cnn = StageMatches(score=np.full(found, 0.99), matched=[{k} for k in range(found)],
                       best_iou=np.zeros((found, n)))
    hdog = StageMatches(score=np.ones(0), matched=[], best_iou=np.zeros((0, n)))
    return ImageMatches(n_truth=n, area_cm2=1.0, stages={"hdog": hdog, "hdog_cnn": cnn, "hdog_cnn_whole": cnn},
                        truth_kinds=[kind] * n, case=case)


def test_the_patient_bootstrap_is_wider_than_wilson_when_one_patient_dominates():
    # 19 patients with 5 of 5 found, and one dense cluster of 40 calcifications with 10 found:
    # 105 of 135 (0.78). Wilson counts 135 independent particles; whether that one patient is
    # drawn moves the figure between ~0.65 and 1.
    images = [_patient(f"p{k}", 5, 0) for k in range(19)] + [_patient("dense", 10, 30)]
    lo, hi = case_bootstrap_interval(images, 0.9)["fine_linear_branching"]
    w_lo, w_hi = wilson_interval(105, 135)
    assert lo <= 105 / 135 <= hi
    assert hi - lo > 2 * (w_hi - w_lo)
    assert hi == 1.0  # draws without the dense patient find everything
    # independent patients of equal size: close to Wilson
    even = [_patient(f"q{k}", 4 if k % 4 else 3, 0 if k % 4 else 1) for k in range(40)]
    lo, hi = case_bootstrap_interval(even, 0.9)["fine_linear_branching"]
    w_lo, w_hi = wilson_interval(150, 160)
    assert abs((hi - lo) - (w_hi - w_lo)) < 0.05
    # two images of one patient are one unit: an interval is the same as with the images merged
    split = [_patient("a", 2, 1), _patient("a", 1, 1), _patient("b", 3, 0), _patient("c", 0, 3)]
    merged = [_patient("a", 3, 2), _patient("b", 3, 0), _patient("c", 0, 3)]
    assert case_bootstrap_interval(split, 0.9) == case_bootstrap_interval(merged, 0.9)
