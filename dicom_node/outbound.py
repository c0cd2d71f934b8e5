"""Outbound: result objects to the configured destinations (C-STORE SCU, pynetdicom).

A thread of the node reads due rows of the ``sends`` table, opens one association per
destination and batch, proposes for each SOP class the transfer syntax the file is in
(plus explicit and implicit VR little endian for uncompressed files, so any Storage SCP can
take them), and records each object as sent the moment its success status arrives.

A failure (no association, a failure status, no response) counts an attempt; whether and when
the object is tried again is :func:`retry_decision` (the retry backoff: exponential, from
``outbound.backoff_initial_s`` doubling up to ``outbound.backoff_max_s``, dead-lettered after
``outbound.max_attempts``; ``calcnode queue list`` shows dead-lettered objects, ``calcnode queue
retry`` sends them again). "SOP class not supported" (0x0122) and "not authorised" (0x0124) are
permanent: dead-lettered at once. An object recorded as sent is never sent again.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import pydicom
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from . import association_sockets, scu_reactor
from .audit import AuditLog
from .config import Config, Destination
from .logs import event
from .metrics import Counters
from .state import Send, StateDB

log = logging.getLogger("calcnode.outbound")

PERMANENT_FAILURES = {0x0122: "SOP class not supported", 0x0124: "not authorised"}
POLL_S = 0.2


@dataclass(frozen=True)
class RetryDecision:
    """What happens to a send after a failed attempt (recorded by ``StateDB.mark_failed``).

    Attributes
    ----------
    attempts : int
        Failed attempts so far, the last one included.
    dead : bool
        True: dead-lettered (no more attempts); False: tried again at ``next_attempt_at``.
    next_attempt_at : float
        Unix s: when the next attempt is due; the time of the decision when dead-lettered.
    dead_reason : str or None
        Why it is dead-lettered ("permanent failure", "3 attempts failed"); None when retried.
    """

    attempts: int
    dead: bool
    next_attempt_at: float
    dead_reason: str | None = None

    def recorded_error(self, error: str) -> str:
        """The send's ``last_error`` for the failure ``error``: prefixed with why when dead."""
        return f"{self.dead_reason}; last: {error}" if self.dead else error


def retry_decision(attempts: int, *, max_attempts: int, backoff_initial_s: float, backoff_max_s: float,
                   now: float, permanent: bool = False) -> RetryDecision:
    """The retry backoff: whether a failed send is tried again, and when.

    A permanent failure (e.g. the destination does not support the SOP class) is dead-lettered
    at once. Otherwise the object is dead-lettered once ``max_attempts`` attempts have failed;
    before that, the next attempt waits ``backoff_initial_s`` after the first failure and twice
    as long after each further one, never more than ``backoff_max_s``:
    ``delay = min(backoff_initial_s * 2 ** (attempts - 1), backoff_max_s)``. With the defaults
    (10 s, 900 s, 8 attempts) the waits are 10, 20, 40, 80, 160, 320 and 640 s, and the 8th
    failure dead-letters the object (about 21 minutes after the first).

    Parameters
    ----------
    attempts : int
        Failed attempts so far, the one that just failed included (>= 1).
    max_attempts : int
        ``outbound.max_attempts``: failed attempts after which the object is dead-lettered.
    backoff_initial_s, backoff_max_s : float
        ``outbound.backoff_initial_s`` and ``outbound.backoff_max_s`` (s).
    now : float
        Time of the failure (Unix s).
    permanent : bool
        The failure cannot go away by trying again.

    Returns
    -------
    RetryDecision
    """
    if permanent or attempts >= max_attempts:
        why = "permanent failure" if permanent else f"{attempts} attempts failed"
        return RetryDecision(attempts, True, now, why)
    delay = min(backoff_initial_s * 2 ** (attempts - 1), backoff_max_s)
    return RetryDecision(attempts, False, now + delay)


@dataclass(frozen=True)
class FileMeta:
    sop_class_uid: str
    transfer_syntax_uid: str


def file_meta(path: str | Path) -> FileMeta:
    """The SOP class and transfer syntax of a Part 10 file, from its file meta only."""
    meta = read_file_meta_info(path)
    return FileMeta(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))


def _is_success(code: int) -> bool:
    return code == 0x0000 or code == 0x0001 or (code & 0xF000) == 0xB000


def transfer_syntaxes_for(file_ts: str) -> list[str]:
    """The transfer syntaxes to propose for an object stored in ``file_ts``."""
    ts = UID(file_ts)
    if ts.is_compressed or ts.is_deflated:
        return [ts]
    return list(dict.fromkeys([ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))


class Sender:
    """Sends due objects; ``run()`` loops until ``stop`` is set (a thread of the node)."""

    def __init__(self, config: Config, db: StateDB, *, audit: AuditLog | None = None,
                 counters: Counters | None = None, stop: threading.Event | None = None):
        self.config = config
        self.db = db
        self.audit = audit or AuditLog(None)
        self.counters = counters or Counters()
        self.stop = stop or threading.Event()
        self.destinations = {d.name: d for d in config.destinations}
        self._thread: threading.Thread | None = None
        association_sockets.install()  # responses read in 1 MB steps, not pynetdicom's 4 KB ones
        scu_reactor.install()  # an answer pynetdicom's association thread takes goes back to us

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="calcnode-sender", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                sent_any = self.send_due()
            except Exception as exc:  # noqa: BLE001 - the sender must outlive a bad row
                event(log, logging.ERROR, "sender error", reason=f"{type(exc).__name__}: {exc}")
                sent_any = False
            if not sent_any:
                self.stop.wait(POLL_S)

    # -------------------------------------------------------------------- work
    def send_due(self) -> bool:
        """Send every due object once. True if there was anything to do."""
        due = self.db.due_sends()
        if not due:
            return False
        for name, rows in groupby(due, key=lambda s: s.destination):
            if self.stop.is_set():
                break
            rows = list(rows)
            destination = self.destinations.get(name)
            if destination is None:
                for row in rows:
                    self._failed(row, None, f"destination {name!r} is no longer configured", permanent=True)
                continue
            self.send_batch(destination, rows)
        return True

    def _failed(self, row: Send, destination: Destination | None, reason: str, *, permanent: bool = False) -> None:
        out = self.config.outbound

        def decide(attempts: int, now: float) -> RetryDecision:
            return retry_decision(attempts, max_attempts=out.max_attempts, backoff_initial_s=out.backoff_initial_s,
                                  backoff_max_s=out.backoff_max_s, now=now, permanent=permanent)

        updated = self.db.mark_failed(row.id, reason, decide=decide)
        self.counters.inc("calcnode_send_failures_total", destination=row.destination)
        fields = dict(send=row.id, job=row.job_id, destination=row.destination, kind=row.kind,
                      sop_instance_uid=row.sop_instance_uid, study_instance_uid=row.study_instance_uid,
                      reason=reason)
        if updated is not None and updated.state == "dead":
            self.counters.inc("calcnode_sends_dead_lettered_total", destination=row.destination)
            event(log, logging.ERROR, "send dead-lettered", attempts=updated.attempts, **fields)
            self.audit.write("send_dead_lettered", attempts=updated.attempts, **fields)
        elif updated is not None:
            event(log, logging.WARNING, "send failed, will retry", attempts=updated.attempts,
                  retry_in_s=round(updated.next_attempt_at - time.time(), 1), **fields)
            self.audit.write("send_failed", attempts=updated.attempts, **fields)

    def send_batch(self, destination: Destination, rows: list[Send]) -> None:
        # Only the file meta is read here: the object is sent as the bytes on disk when the
        # destination accepts the file's transfer syntax (no decoding, no re-encoding).
        files: list[tuple[Send, FileMeta]] = []
        for row in rows:
            try:
                files.append((row, file_meta(row.path)))
            except FileNotFoundError:
                self._failed(row, destination, f"result file {row.path} is missing", permanent=True)
            except Exception as exc:  # noqa: BLE001
                self._failed(row, destination, f"result file {row.path} cannot be read: {exc}", permanent=True)
        if not files:
            return
        out = self.config.outbound
        ae = AE(ae_title=self.config.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = out.timeout_s
        ae.connection_timeout = out.timeout_s
        contexts: dict[str, list[str]] = {}
        for _, meta in files:
            syntaxes = contexts.setdefault(meta.sop_class_uid, [])
            for ts in transfer_syntaxes_for(meta.transfer_syntax_uid):
                if ts not in syntaxes:
                    syntaxes.append(ts)
        for sop_class, syntaxes in contexts.items():
            ae.add_requested_context(sop_class, syntaxes)
        where = f"{destination.ae_title}@{destination.host}:{destination.port}"
        tls_args = None
        if destination.tls:
            from .tls import client_context

            tls_args = (client_context(self.config), destination.host)
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            why = f"association rejected by {where}" if assoc.is_rejected else self._why_no_association(
                destination, where)
            for row, _ in files:
                self._failed(row, destination, why)
            return
        association_sockets.low_latency(assoc)
        try:
            for row, meta in files:
                if self.stop.is_set() or not assoc.is_established:
                    if not assoc.is_established:
                        self._failed(row, destination, f"association with {where} lost")
                    continue  # on stop: left pending, no attempt counted
                self._send_one(assoc, destination, where, row, meta)
        finally:
            if assoc.is_established:
                assoc.release()

    def _why_no_association(self, destination: Destination, where: str) -> str:
        """pynetdicom reports a refused TCP connection as an abort: tell the two apart."""
        try:
            with socket.create_connection((destination.host, destination.port),
                                          timeout=min(self.config.outbound.timeout_s, 10)):
                pass
        except OSError as exc:
            return f"no association with {where}: connection failed ({exc.strerror or exc})"
        return f"association with {where} aborted by the peer"

    def _send_one(self, assoc, destination: Destination, where: str, row: Send, meta: FileMeta) -> None:
        started = time.monotonic()
        try:
            as_stored = any(cx.abstract_syntax == meta.sop_class_uid
                            and cx.transfer_syntax[0] == meta.transfer_syntax_uid for cx in assoc.accepted_contexts)
            # the file's own bytes when its transfer syntax was accepted; otherwise pynetdicom
            # re-encodes the dataset in the accepted one (explicit <-> implicit VR little endian)
            status = assoc.send_c_store(Path(row.path) if as_stored else pydicom.dcmread(row.path))
        except ValueError as exc:  # no accepted presentation context for it
            self._failed(row, destination, f"{where} accepted no presentation context for "
                                           f"{UID(row.sop_class_uid).name}: {exc}", permanent=True)
            return
        except Exception as exc:  # noqa: BLE001 - network error mid-send
            self._failed(row, destination, f"C-STORE to {where} failed: {type(exc).__name__}: {exc}")
            return
        if not status or "Status" not in status:
            self._failed(row, destination, f"no C-STORE response from {where} (timeout or connection lost)")
            return
        code = int(status.Status)
        if not _is_success(code):
            permanent = code in PERMANENT_FAILURES
            meaning = PERMANENT_FAILURES.get(code, "failure")
            self._failed(row, destination, f"{where} answered 0x{code:04X} ({meaning})", permanent=permanent)
            return
        if not self.db.mark_sent(row.id):
            return  # purged or re-queued meanwhile: nothing to record
        self.counters.inc("calcnode_objects_sent_total", destination=row.destination)
        fields = dict(send=row.id, job=row.job_id, destination=destination.name, ae_title=destination.ae_title,
                      host=destination.host, port=destination.port, kind=row.kind,
                      sop_class_uid=row.sop_class_uid, sop_instance_uid=row.sop_instance_uid,
                      study_instance_uid=row.study_instance_uid, status=f"0x{code:04X}")
        event(log, logging.INFO, "object sent", ms=round((time.monotonic() - started) * 1000, 1), **fields)
        self.audit.write("object_sent", **fields)


