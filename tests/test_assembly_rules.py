"""The assembly rules on their own (dicom_node.assembly.decide): plain values, no database.

The same rules applied through the state database are in test_queue_state.py.
"""
from __future__ import annotations

import pytest

from dicom_node.assembly import StudySummary, decide, input_hash, is_stable, stable_cutoff

STABLE_S = 30.0
FIRST = input_hash(["1.1", "1.2"])


def study(*, last=100.0, images=1, rois=1, current=FIRST, analysed=None, status="receiving"):
    return StudySummary(last_received_at=last, n_images=images, n_roi_objects=rois, input_hash=current,
                        analysed_hash=analysed, status=status)


def rule(summary, now=200.0, policy="whole_breast"):
    return decide(summary, now=now, stable_seconds=STABLE_S, no_roi_policy=policy)


def test_ready_exactly_at_stable_seconds_not_just_before():
    assert rule(study(last=100.0), now=100.0 + STABLE_S).verdict == "analyze"
    just_before = rule(study(last=100.0), now=100.0 + STABLE_S - 0.001)
    assert just_before.verdict == "not_stable" and just_before.status is None
    assert rule(study(last=100.0), now=100.0).verdict == "not_stable"
    assert stable_cutoff(130.0, STABLE_S) == 100.0
    assert is_stable(100.0, 130.0, STABLE_S) and not is_stable(100.5, 130.0, STABLE_S)


def test_not_stable_comes_before_every_other_rule():
    # even a study with nothing to analyse is not judged while instances still arrive
    assert rule(study(last=190.0, images=0, rois=0), now=200.0, policy="skip").verdict == "not_stable"


def test_no_image_waits_whatever_the_policy():
    for policy in ("whole_breast", "skip"):
        d = rule(study(images=0, rois=2), policy=policy)
        assert (d.verdict, d.status) == ("wait", "waiting") and "no MG image" in d.reason


@pytest.mark.parametrize("policy, verdict, status", [("whole_breast", "analyze", "queued"),
                                                     ("skip", "skip", "skipped")])
def test_no_roi_policy(policy, verdict, status):
    d = rule(study(rois=0), policy=policy)
    assert (d.verdict, d.status) == (verdict, status)
    if verdict == "skip":
        assert "no_roi_policy" in d.reason
    # with a ROI object both policies analyse
    assert rule(study(rois=1), policy=policy).verdict == "analyze"


def test_first_analysis_is_not_called_again():
    d = rule(study())
    assert (d.verdict, d.status, d.again) == ("analyze", "queued", False)
    assert d.job_note(4, "queued") == "analysis job 4 queued"


def test_late_roi_reanalyses():
    late = input_hash(["1.1", "1.2", "1.3"])                 # a GSPS drawn after the images
    d = rule(study(rois=1, current=late, analysed=FIRST, status="analysed"))
    assert (d.verdict, d.status, d.again) == ("analyze", "queued", True)
    assert d.job_note(5, "updated") == "analysis job 5 updated (input set changed: analysed again)"


@pytest.mark.parametrize("status, kept", [("analysed", "analysed"), ("failed", "failed"),
                                          ("queued", "queued"), ("receiving", "queued")])
def test_identical_resend_is_not_analysed_again(status, kept):
    d = rule(study(current=FIRST, analysed=FIRST, status=status))
    assert (d.verdict, d.status) == ("unchanged", kept)
    assert "not analysed again" in d.reason


def test_input_hash_ignores_order_and_duplicates():
    assert input_hash(["1.2", "1.1", "1.2"]) == FIRST
    assert input_hash(["1.1"]) != FIRST


# --------------------------------------------------------------------------- association released

GRACE_S = 2.0


def released(*, last=100.0, at=101.0, other_open=0, **kwargs):
    """A study whose last instance came at ``last`` over an association released at ``at``."""
    return StudySummary(**{**study(last=last, **kwargs).__dict__, "association_released_at": at,
                           "other_open_associations": other_open})


def early(summary, now, policy="detect"):
    return decide(summary, now=now, stable_seconds=STABLE_S, no_roi_policy=policy, association_grace_seconds=GRACE_S)


def test_released_association_makes_the_study_ready_after_the_grace_not_before():
    d = early(released(at=101.0), now=101.0 + GRACE_S)
    assert (d.verdict, d.trigger) == ("analyze", "association_released")
    assert early(released(at=101.0), now=101.0 + GRACE_S - 0.01).verdict == "not_stable"
    # the same study without a release (open, aborted, unknown) waits for stable_seconds
    assert early(study(last=100.0), now=103.0).verdict == "not_stable"
    d = early(study(last=100.0), now=100.0 + STABLE_S)
    assert (d.verdict, d.trigger) == ("analyze", "stable")


def test_without_grace_setting_only_stable_seconds_counts():
    assert rule(released(at=101.0), now=110.0).verdict == "not_stable"


def test_another_open_association_of_the_study_keeps_it_waiting_for_stable_seconds():
    assert early(released(other_open=1), now=110.0).verdict == "not_stable"
    assert early(released(other_open=1), now=100.0 + STABLE_S).trigger == "stable"


def test_a_release_older_than_the_last_instance_does_not_count():
    # an instance arrived after the recorded release (another association): not this release's study
    assert early(released(last=105.0, at=101.0), now=110.0).verdict == "not_stable"


@pytest.mark.parametrize("images, rois, policy", [(0, 2, "detect"), (1, 0, "skip"), (0, 0, "whole_breast")])
def test_released_study_that_lacks_what_the_policy_needs_waits_for_stable_seconds(images, rois, policy):
    """ROIs may follow over a later association: "wait" and "skip" are only said once stable."""
    assert early(released(images=images, rois=rois), now=110.0, policy=policy).verdict == "not_stable"
    later = early(released(images=images, rois=rois), now=100.0 + STABLE_S, policy=policy)
    assert later.verdict in ("wait", "skip") and later.trigger == "stable"


def test_released_identical_resend_is_unchanged_and_a_late_roi_is_analysed_again():
    same = early(released(analysed=FIRST, status="analysed"), now=110.0)
    assert (same.verdict, same.status, same.trigger) == ("unchanged", "analysed", "association_released")
    late_roi = early(released(current=input_hash(["1.1", "1.2", "1.3"]), analysed=FIRST, rois=2), now=110.0)
    assert (late_roi.verdict, late_roi.again) == ("analyze", True)
