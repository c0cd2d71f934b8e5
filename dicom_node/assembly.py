"""When a study is analysed: the assembly rules, as pure functions (no database, no I/O).

:meth:`dicom_node.state.StateDB.assemble` reads each candidate study inside one transaction,
summarises it as a :class:`StudySummary`, asks :func:`decide` what to do and records the
answer. The rules:

* **not stable** -- the study is not ready yet: look again later, record nothing (the study is
  still arriving). A study is *ready* (:func:`ready_by`) when

  - **its association was released**: the association that brought its last instance ended
    with an A-RELEASE at least ``association_grace_seconds`` ago (a sender's "I'm done"), no
    other association that brought instances of it is still open, and it holds what the
    ``no_roi_policy`` needs (an MG image; under ``"skip"`` a ROI object too); or
  - **it is stable** (the fallback): no instance of it arrived for ``stable_seconds``. This
    covers a study still arriving over another open association, one whose association stays
    open, ends with an A-ABORT (below) or was cut by a node stop, and one that does not yet hold
    what the policy needs (its ROIs may come over a later association);

  An **A-ABORT does not count** as "done": the sender (or the network, or the node's network
  timeout) stopped the transfer abnormally, the study is likely incomplete and the sender will
  usually send it again; analysing it at once would send results for part of a study, to be
  replaced moments later. A connection closed without release is treated the same way;
* **wait** -- no MG image (yet): nothing to analyse;
* **skip** -- no ROI object and ``assembly.no_roi_policy = "skip"`` (the only policy that leaves a
  study out: under ``"detect"``, the default, its views get cluster detection, and under
  ``"whole_breast"`` (research) whole-breast regions);
* **unchanged** -- the input set (the sorted SOP Instance UIDs of the study's MG, GSPS and SEG
  instances) equals the set of the study's last job: not analysed again (an instance sent again
  changes nothing);
* **analyse** -- otherwise: the first analysis, or again because the input set changed (a ROI
  drawn later, a second ROI object).

The grace (default 2 s) leaves room for a sender that sends one study over several associations
back to back (one per series): an instance of the next association makes it the study's last
one, and the study waits for that association's release in turn.

Times are Unix seconds.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Literal

INPUT_KINDS = ("MG", "GSPS", "SEG")
# The received objects that carry regions of interest (how each ROI was drawn is
# analysis.results.DRAWN_ROI_KINDS).
ROI_OBJECT_KINDS = ("GSPS", "SEG")

Verdict = Literal["not_stable", "wait", "skip", "unchanged", "analyze"]
Trigger = Literal["association_released", "stable"]


def input_hash(sop_instance_uids: Iterable[str]) -> str:
    """SHA-256 (hex) of the sorted, distinct SOP Instance UIDs of a study's input set."""
    h = hashlib.sha256()
    for uid in sorted(set(sop_instance_uids)):
        h.update(uid.encode("ascii", "replace"))
        h.update(b"\n")
    return h.hexdigest()


def stable_cutoff(now: float, stable_seconds: float) -> float:
    """The latest arrival time (s) of a study that counts as stable at ``now``.

    A study whose last instance arrived at or before this time is stable: exactly
    ``stable_seconds`` of quiet is enough. The database pre-selects candidates with it too.
    """
    return now - stable_seconds


def is_stable(last_received_at: float, now: float, stable_seconds: float) -> bool:
    """True when no instance arrived for at least ``stable_seconds`` (s) before ``now`` (s)."""
    return last_received_at <= stable_cutoff(now, stable_seconds)


@dataclass(frozen=True)
class StudySummary:
    """What the assembly rules need to know about one study.

    Attributes
    ----------
    last_received_at : float
        Arrival time (Unix s) of the study's latest instance.
    n_images : int
        MG images in the study.
    n_roi_objects : int
        ROI objects (GSPS, SEG) in the study.
    input_hash : str
        :func:`input_hash` of the study's current input set.
    analysed_hash : str or None
        Input hash of the study's last job (queued, running or finished); None: never queued.
    status : str
        The study's current status ("receiving", "queued", "analysed", ...).
    association_released_at : float or None
        When (Unix s) the association that brought the study's latest instance ended with an
        A-RELEASE; None while it is open, when it was aborted, closed or cut by a node stop, or
        when it is not known (instances recorded without an association).
    other_open_associations : int
        Other associations that brought instances of the study and are still open.
    """

    last_received_at: float
    n_images: int
    n_roi_objects: int
    input_hash: str
    analysed_hash: str | None
    status: str
    association_released_at: float | None = None
    other_open_associations: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do with a study.

    Attributes
    ----------
    verdict : {"not_stable", "wait", "skip", "unchanged", "analyze"}
        See the module docstring.
    reason : str
        Why, in words (the study's note for "wait", "skip" and "unchanged").
    status : str or None
        The study status to record; None for "not_stable" (nothing is recorded).
    again : bool
        "analyze" only: the study was analysed before and its input set changed.
    trigger : {"association_released", "stable"} or None
        What made the study ready (:func:`ready_by`); None for "not_stable".
    """

    verdict: Verdict
    reason: str
    status: str | None = None
    again: bool = False
    trigger: Trigger | None = None

    def job_note(self, job_id: int, action: str) -> str:
        """The study's note once its job was queued or updated (``action``)."""
        return f"analysis job {job_id} {action}" + (f" ({self.reason})" if self.again else "")


def holds_what_policy_needs(study: StudySummary, no_roi_policy: str) -> bool:
    """True when the study can be analysed under ``no_roi_policy``: an MG image, and under
    ``"skip"`` a ROI object too (without one a skipped study would wait for nothing)."""
    return study.n_images > 0 and (no_roi_policy != "skip" or study.n_roi_objects > 0)


def ready_by(study: StudySummary, *, now: float, stable_seconds: float, no_roi_policy: str,
             association_grace_seconds: float | None) -> Trigger | None:
    """What makes ``study`` ready at ``now`` (see the module docstring), or None (not yet).

    ``association_grace_seconds`` None: only ``stable_seconds`` counts.
    """
    released = study.association_released_at
    if association_grace_seconds is not None and released is not None \
            and released >= study.last_received_at and now >= released + association_grace_seconds \
            and study.other_open_associations == 0 and holds_what_policy_needs(study, no_roi_policy):
        return "association_released"
    if is_stable(study.last_received_at, now, stable_seconds):
        return "stable"
    return None


def decide(study: StudySummary, *, now: float, stable_seconds: float, no_roi_policy: str,
           association_grace_seconds: float | None = None) -> Decision:
    """Whether ``study`` is analysed now, waits, is skipped or is left as it is.

    Parameters
    ----------
    study : StudySummary
        The study, read inside the caller's transaction.
    now : float
        Current time (Unix s).
    stable_seconds : float
        Quiet time (s) after the last instance before a study counts as complete.
    no_roi_policy : str
        ``assembly.no_roi_policy``: "skip" is the only policy that leaves out a study with no ROI
        object; "detect" (default) analyses it for calcification clusters, "whole_breast"
        (research) analyses its images as whole breasts.
    association_grace_seconds : float or None
        Seconds (s) after the release of the association that brought the study's last instance
        before the study is ready (``assembly.association_grace_seconds``); None: only
        ``stable_seconds`` counts.

    Returns
    -------
    Decision
    """
    trigger = ready_by(study, now=now, stable_seconds=stable_seconds, no_roi_policy=no_roi_policy,
                       association_grace_seconds=association_grace_seconds)
    if trigger is None:
        return Decision("not_stable", "an instance arrived less than stable_seconds ago and its association "
                                      "was not released (or not long enough ago)")
    if study.n_images == 0:
        return Decision("wait", "no MG image (yet): nothing to analyse", "waiting", trigger=trigger)
    if study.n_roi_objects == 0 and no_roi_policy == "skip":
        return Decision("skip", "no ROI object and assembly.no_roi_policy = \"skip\"", "skipped", trigger=trigger)
    if study.input_hash == study.analysed_hash:
        # a study that was only receiving again keeps its job's status; "receiving" would be wrong
        status = study.status if study.status != "receiving" else "queued"
        return Decision("unchanged", "input set unchanged since the last analysis: not analysed again", status,
                        trigger=trigger)
    if study.analysed_hash:
        return Decision("analyze", "input set changed: analysed again", "queued", again=True, trigger=trigger)
    return Decision("analyze", "first analysis of the study", "queued", trigger=trigger)
