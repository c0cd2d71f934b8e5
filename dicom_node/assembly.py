"""When a study is analysed: the assembly rules, as pure functions (no database, no I/O).

:meth:`dicom_node.state.StateDB.assemble` reads each candidate study inside one transaction,
summarises it as a :class:`StudySummary`, asks :func:`decide` what to do and records the
answer. The rules:

* **not stable** -- an instance of the study arrived less than ``stable_seconds`` ago: look
  again later, record nothing (the study is still arriving);
* **wait** -- no MG image (yet): nothing to analyse;
* **skip** -- no ROI object and ``assembly.no_roi_policy = "skip"`` (the only policy that leaves a
  study out: under ``"detect"``, the default, its views get cluster detection, and under
  ``"whole_breast"`` (research) whole-breast regions);
* **unchanged** -- the input set (the sorted SOP Instance UIDs of the study's MG, GSPS and SEG
  instances) equals the set of the study's last job: not analysed again (an instance sent again
  changes nothing);
* **analyse** -- otherwise: the first analysis, or again because the input set changed (a ROI
  drawn later, a second ROI object).

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
    """

    last_received_at: float
    n_images: int
    n_roi_objects: int
    input_hash: str
    analysed_hash: str | None
    status: str


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
    """

    verdict: Verdict
    reason: str
    status: str | None = None
    again: bool = False

    def job_note(self, job_id: int, action: str) -> str:
        """The study's note once its job was queued or updated (``action``)."""
        return f"analysis job {job_id} {action}" + (f" ({self.reason})" if self.again else "")


def decide(study: StudySummary, *, now: float, stable_seconds: float, no_roi_policy: str) -> Decision:
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

    Returns
    -------
    Decision
    """
    if not is_stable(study.last_received_at, now, stable_seconds):
        return Decision("not_stable", "an instance arrived less than stable_seconds ago")
    if study.n_images == 0:
        return Decision("wait", "no MG image (yet): nothing to analyse", "waiting")
    if study.n_roi_objects == 0 and no_roi_policy == "skip":
        return Decision("skip", "no ROI object and assembly.no_roi_policy = \"skip\"", "skipped")
    if study.input_hash == study.analysed_hash:
        # a study that was only receiving again keeps its job's status; "receiving" would be wrong
        status = study.status if study.status != "receiving" else "queued"
        return Decision("unchanged", "input set unchanged since the last analysis: not analysed again", status)
    if study.analysed_hash:
        return Decision("analyze", "input set changed: analysed again", "queued", again=True)
    return Decision("analyze", "first analysis of the study", "queued")
