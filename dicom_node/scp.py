"""The Storage SCP: C-ECHO and C-STORE into the spool.

Handlers do little and return fast (the pynetdicom way): a C-STORE reads the
few header attributes it needs, writes the raw received bytes with their file
meta to the spool (no pixel decoding, no re-encoding), records the instance in
the state database and only then answers success. Analysis happens elsewhere,
later (:mod:`dicom_node.service`).

Each association that stores an instance gets an id of the node's (random): the state database
records which association brought each instance and, from the release / abort / connection-close
handlers, when and how it ended. A study whose last association was released is analysed after
``assembly.association_grace_seconds`` instead of ``stable_seconds`` (:mod:`dicom_node.assembly`).
Those handlers run in the association's threads after the peer got its answer; they make one
small database update and return.

Objects this node wrote itself (Manufacturer "calcnode": SEG, SR, GSPS results a
PACS routes back) are answered with success and not kept, so a routing rule that
forwards a whole study never makes the node analyse its own output.

What the node keeps: Digital Mammography X-Ray Images (For Presentation and
For Processing), Grayscale Softcopy Presentation States and Segmentations.
Every other storage SOP class is negotiated (so a PACS routing a whole study
does not fail the association) and answered with 0x0122 "SOP Class not
supported", and a log line says why.
"""
from __future__ import annotations

import copy
import io
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from pathlib import Path

import pydicom
from pydicom.tag import Tag
from pydicom.uid import UID
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification

from analysis.dicom_input.image import DECODABLE_TRANSFER_SYNTAXES, MAMMOGRAPHY_SOP_CLASSES, \
    TOMOSYNTHESIS_SOP_CLASSES
from analysis.dicom_input.rois import GSPS_SOP_CLASS, SEG_SOP_CLASS
from sr_templates.common import MANUFACTURER as OWN_MANUFACTURER

from . import association_sockets
from .audit import AuditLog
from .config import Config
from .logs import event
from .metrics import Counters
from .spool import InvalidUidError, Spool, SpoolError, check_uid

log = logging.getLogger("calcnode.scp")

KEPT_SOP_CLASSES = {**MAMMOGRAPHY_SOP_CLASSES, GSPS_SOP_CLASS: "GSPS", SEG_SOP_CLASS: "SEG"}

# Transfer syntaxes accepted for every storage context: the ones the image
# reader decodes. Lossy 8/12-bit JPEG (baseline/extended) is not offered, so a
# PACS that holds such an image transcodes it to one of these instead.
TRANSFER_SYNTAXES = list(DECODABLE_TRANSFER_SYNTAXES)

STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_DATASET_MISMATCH = 0xA900  # Data Set does not match SOP Class

_HEADER_TAGS = [Tag("StudyInstanceUID"), Tag("SeriesInstanceUID"), Tag("SOPInstanceUID"), Tag("SOPClassUID"),
                Tag("Manufacturer")]


class JoinedReader(io.RawIOBase):
    """A read-only, seekable file over byte strings one after the other, for reading a
    received instance's header (file meta + data set) without joining them into new memory."""

    def __init__(self, parts):
        super().__init__()
        self._parts = [memoryview(p).cast("B") for p in parts]
        self._size = sum(len(p) for p in self._parts)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        out = memoryview(buffer).cast("B")
        done, start = 0, 0
        for part in self._parts:
            end = start + len(part)
            if self._pos + done < end and done < len(out):
                at = self._pos + done - start
                n = min(len(part) - at, len(out) - done)
                out[done:done + n] = part[at:at + n]
                done += n
            start = end
        self._pos += done
        return done


class SupportedContext(PresentationContext):
    """A presentation context the SCP supports, deep-copied cheaply.

    pynetdicom deep-copies the SCP's supported contexts (171 here) for every association, and a
    deep copy re-creates every UID in them, each one validated again by pydicom: 6 ms of CPU on a
    quiet machine, ~25 ms per association while a burst arrives (1.2 s of the listener's CPU for
    50 studies, sampled). UIDs are immutable strings, so this copy shares them and copies only
    the lists that hold them (0.9 ms).
    """

    @classmethod
    def of(cls, context: PresentationContext) -> "SupportedContext":
        new = cls.__new__(cls)
        new.__dict__.update(copy.deepcopy(context).__dict__)
        return new

    def __deepcopy__(self, memo) -> "SupportedContext":
        new = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, list):
                new.__dict__[name] = list(value)
        return new


def _called_ae(ev) -> str:
    """The AE title the peer asked for (its A-ASSOCIATE-RQ), for the log."""
    try:
        return str(ev.assoc.requestor.primitive.called_ae_title).strip()
    except AttributeError:
        return ""


def instance_kind(sop_class: str) -> str:
    """MG, GSPS or SEG for a kept SOP class."""
    if sop_class == GSPS_SOP_CLASS:
        return "GSPS"
    if sop_class == SEG_SOP_CLASS:
        return "SEG"
    return "MG"


def _refusal_reason(sop_class: str) -> str:
    if sop_class in TOMOSYNTHESIS_SOP_CLASSES:
        return "breast tomosynthesis is out of scope"
    if sop_class == "1.2.840.10008.5.1.4.1.1.7":
        return "Secondary Capture is not a diagnostic mammogram"
    return "not a mammogram, GSPS or SEG"


def dataset_mismatch(header, sop_class: str, sop_uid: str) -> tuple[int, str] | None:
    """Why a received data set cannot be kept although its request was fine, as (status, reason),
    or None. Every result refers to an image by the SOP Instance UID of its data set, so one
    without a valid one (or with another than the request's) is refused with 0xC000; a data set
    of another SOP class than the request's with 0xA900, as DCMTK's storescp does. A data set
    without a valid Series Instance UID is refused with 0xC000 too (results reference it)."""
    try:
        data_uid = check_uid(str(header.get("SOPInstanceUID", "") or ""), "the data set's SOP Instance UID")
    except InvalidUidError as exc:
        return STATUS_CANNOT_UNDERSTAND, (str(exc) if "SOPInstanceUID" in header
                                          else "the data set has no SOP Instance UID")
    if data_uid != sop_uid.strip().rstrip("\x00"):
        return STATUS_CANNOT_UNDERSTAND, "the data set's SOP Instance UID is not the one of the C-STORE request"
    try:  # every result names the source's series too (its evidence references)
        check_uid(str(header.get("SeriesInstanceUID", "") or ""), "the data set's Series Instance UID")
    except InvalidUidError as exc:
        return STATUS_CANNOT_UNDERSTAND, (str(exc) if "SeriesInstanceUID" in header
                                          else "the data set has no Series Instance UID")
    data_class = " ".join(str(header.get("SOPClassUID", "") or "").split())
    if data_class != sop_class.strip().rstrip("\x00"):
        return STATUS_DATASET_MISMATCH, (f"the data set's SOP Class UID {data_class[:64]!r} is not the one of "
                                         "the C-STORE request" if data_class else "the data set has no SOP Class UID")
    return None


class StorageSCP:
    """The node's DICOM listener. ``start()`` returns once it accepts associations."""

    def __init__(self, config: Config, db=None, audit: AuditLog | None = None,
                 counters: Counters | None = None):
        self.config = config
        self.spool = Spool(Path(config.node.spool_dir).absolute())
        self.db = db
        self.audit = audit or AuditLog(None)
        self.counters = counters or Counters()
        self.ae = self._make_ae()
        self._server = None
        self.counts = {"stored": 0, "duplicate": 0, "refused": 0, "failed": 0, "own_results": 0}
        self._lock = threading.Lock()
        # the node's id of each association that stored an instance (weak: never keeps one alive)
        self._association_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _make_ae(self) -> AE:
        association_sockets.install()  # PDUs read in 1 MB steps, not pynetdicom's 4 KB ones
        node = self.config.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_associations = node.max_associations
        ae.network_timeout = node.network_timeout_s
        ae.acse_timeout = node.network_timeout_s
        ae.dimse_timeout = node.network_timeout_s
        ae.maximum_pdu_size = node.max_pdu_bytes
        if node.allowed_calling_ae_titles:
            ae.require_calling_aet = list(node.allowed_calling_ae_titles)
        # off by default (a PACS configured with another title for the node still gets through);
        # on, an association addressed to another AE title is rejected, as DCMTK and Orthanc can
        ae.require_called_aet = node.check_called_ae_title
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        return ae

    # -- handlers -------------------------------------------------------------
    def association_id(self, assoc) -> str:
        """The node's id of ``assoc`` (made at its first stored instance)."""
        with self._lock:
            ident = self._association_ids.get(assoc)
            if ident is None:
                ident = self._association_ids[assoc] = uuid.uuid4().hex
            return ident

    def _association_ended(self, ev, how: str) -> None:
        """Record how an association that stored instances ended (nothing for the others)."""
        with self._lock:
            ident = self._association_ids.get(ev.assoc)
        if ident is None or self.db is None:
            return
        try:
            if self.db.end_association(ident, how) and how == "released":
                with self._lock:
                    self._association_ids.pop(ev.assoc, None)
        except sqlite3.Error as exc:  # its studies fall back to assembly.stable_seconds
            event(log, logging.ERROR, "association end not recorded: state database error", how=how,
                  reason=str(exc), calling_ae=ev.assoc.requestor.ae_title)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1
        self.counters.inc("calcnode_instances_received_total", result=key)

    def handle_echo(self, ev) -> int:
        event(log, logging.INFO, "C-ECHO", calling_ae=ev.assoc.requestor.ae_title)
        return STATUS_SUCCESS

    def _free_mb(self) -> float | None:
        try:
            st = os.statvfs(self.spool.root)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize / 1e6

    def handle_store(self, ev) -> int:
        started = time.monotonic()
        request = ev.request
        sop_class = str(request.AffectedSOPClassUID)
        sop_uid = str(request.AffectedSOPInstanceUID)
        calling = ev.assoc.requestor.ae_title
        fields = dict(calling_ae=calling, sop_class=UID(sop_class).name, sop_instance_uid=sop_uid)
        status, study_uid = self._store(ev, sop_class, sop_uid, calling, fields, started)
        self.audit.write("instance_received", calling_ae=calling,
                         peer=f"{ev.assoc.requestor.address}:{ev.assoc.requestor.port}",
                         sop_class_uid=sop_class, sop_instance_uid=sop_uid,
                         study_instance_uid=study_uid, status=f"0x{status:04X}")
        return status

    def _store(self, ev, sop_class, sop_uid, calling, fields, started) -> tuple[int, str | None]:
        if sop_class not in KEPT_SOP_CLASSES:
            self._count("refused")
            event(log, logging.WARNING, "C-STORE refused: SOP class not handled",
                  reason=_refusal_reason(sop_class), status="0x0122", **fields)
            return STATUS_SOP_CLASS_NOT_SUPPORTED, None
        min_free = self.config.storage.min_free_mb
        if min_free > 0:
            free = self._free_mb()
            if free is not None and free < min_free:
                self._count("failed")
                event(log, logging.ERROR, "C-STORE refused: disk below the high-water mark",
                      free_mb=round(free), min_free_mb=min_free, status="0xA700", **fields)
                return STATUS_OUT_OF_RESOURCES, None
        study_uid = None
        try:
            # The file as pynetdicom's encoded_dataset(include_meta=True) makes it, left in two
            # parts: joining them would copy the data set into new memory (~17 MB a mammogram).
            parts = (b"\x00" * 128 + b"DICM" + encode_file_meta(ev.file_meta),
                     ev.encoded_dataset(include_meta=False))
            size = len(parts[0]) + len(parts[1])
            header = pydicom.dcmread(JoinedReader(parts), stop_before_pixels=True,
                                     specific_tags=_HEADER_TAGS)
            study_uid = str(header.get("StudyInstanceUID", ""))
            if str(header.get("Manufacturer", "")) == OWN_MANUFACTURER:
                self._count("own_results")
                event(log, logging.INFO, "C-STORE ignored: a result object of this node",
                      study_instance_uid=study_uid, status="0x0000", **fields)
                return STATUS_SUCCESS, study_uid
            mismatch = dataset_mismatch(header, sop_class, sop_uid)
            if mismatch is not None:
                self._count("failed")
                event(log, logging.ERROR, "C-STORE refused: data set does not match the request",
                      reason=mismatch[1], status=f"0x{mismatch[0]:04X}", study_instance_uid=study_uid, **fields)
                return mismatch[0], study_uid
            if min_free > 0:
                free = self._free_mb()
                if free is not None and free - size / 1e6 < min_free:
                    raise SpoolError(f"{free:.0f} MB free, high-water mark storage.min_free_mb = "
                                     f"{min_free} MB", out_of_resources=True)
            result = self.spool.store(study_uid, sop_uid, parts)
        except InvalidUidError as exc:
            self._count("failed")
            event(log, logging.ERROR, "C-STORE failed: instance cannot be filed",
                  reason=str(exc), status="0xC000", **fields)
            return STATUS_CANNOT_UNDERSTAND, study_uid
        except SpoolError as exc:
            self._count("failed")
            status = STATUS_OUT_OF_RESOURCES if exc.out_of_resources else STATUS_PROCESSING_FAILURE
            event(log, logging.ERROR, "C-STORE failed: spool write error",
                  reason=str(exc), status=f"0x{status:04X}", **fields)
            return status, study_uid
        except Exception as exc:  # a broken dataset must never take the node down
            self._count("failed")
            event(log, logging.ERROR, "C-STORE failed: dataset cannot be read",
                  reason=f"{type(exc).__name__}: {exc}", status="0xC000", **fields)
            return STATUS_CANNOT_UNDERSTAND, study_uid
        if self.db is not None:
            try:
                self.db.record_instance(sop_instance_uid=sop_uid, study_instance_uid=study_uid,
                                        sop_class_uid=sop_class, kind=instance_kind(sop_class),
                                        path=str(result.path), calling_ae=calling,
                                        association_id=self.association_id(ev.assoc))
            except sqlite3.Error as exc:
                # Not recorded: not kept. Answer failure so the sender retries later.
                if not result.duplicate:
                    self.spool.discard(result.path)
                self._count("failed")
                full = "full" in str(exc).lower() or getattr(exc, "sqlite_errorcode", None) == 13
                status = STATUS_OUT_OF_RESOURCES if full else STATUS_PROCESSING_FAILURE
                event(log, logging.ERROR, "C-STORE failed: state database error",
                      reason=str(exc), status=f"0x{status:04X}", **fields)
                return status, study_uid
        self._count("duplicate" if result.duplicate else "stored")
        event(log, logging.INFO,
              "C-STORE duplicate: already in spool" if result.duplicate else "C-STORE stored",
              study_instance_uid=study_uid, bytes=size,
              ms=round((time.monotonic() - started) * 1000, 1), **fields)
        return STATUS_SUCCESS, study_uid

    def _peer(self, ev) -> dict:
        return dict(calling_ae=ev.assoc.requestor.ae_title, called_ae=self.config.node.ae_title,
                    peer=f"{ev.assoc.requestor.address}:{ev.assoc.requestor.port}")

    def handle_accepted(self, ev) -> None:
        self.counters.inc("calcnode_associations_total", result="accepted")
        event(log, logging.INFO, "association accepted", calling_ae=ev.assoc.requestor.ae_title,
              peer=f"{ev.assoc.requestor.address}:{ev.assoc.requestor.port}")
        self.audit.write("association", result="accepted", **self._peer(ev))

    def handle_rejected(self, ev) -> None:
        self.counters.inc("calcnode_associations_total", result="rejected")
        event(log, logging.WARNING, "association rejected", calling_ae=ev.assoc.requestor.ae_title,
              called_ae=_called_ae(ev), peer=f"{ev.assoc.requestor.address}:{ev.assoc.requestor.port}",
              reason="calling AE title not allowed, called AE title not ours (node.check_called_ae_title) "
                     "or too many associations")
        self.audit.write("association", result="rejected", **self._peer(ev))

    def handle_released(self, ev) -> None:
        self._association_ended(ev, "released")  # first: the study's readiness waits for it
        self.audit.write("association", result="released", **self._peer(ev))

    def handle_aborted(self, ev) -> None:
        # an abort is not "done" (dicom_node.assembly): its studies wait for stable_seconds
        self._association_ended(ev, "aborted")
        self.audit.write("association", result="aborted", **self._peer(ev))

    def handle_conn_close(self, ev) -> None:
        """The connection closed. After a release or an abort this changes nothing; without
        either (the association's thread ended otherwise) it is recorded as "closed"."""
        assoc = ev.assoc
        how = "released" if assoc.is_released else "aborted" if assoc.is_aborted else "closed"
        self._association_ended(ev, how)

    # -- lifecycle --------------------------------------------------------------
    def open_spool(self) -> None:
        removed = self.spool.open()
        if removed:
            event(log, logging.WARNING, "removed incomplete files left by an earlier stop",
                  count=removed)

    def start(self, *, open_spool: bool = True) -> None:
        if open_spool:
            self.open_spool()
        node = self.config.node
        handlers = [
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_ACCEPTED, self.handle_accepted),
            (evt.EVT_REJECTED, self.handle_rejected),
            (evt.EVT_RELEASED, self.handle_released),
            (evt.EVT_ABORTED, self.handle_aborted),
            (evt.EVT_CONN_CLOSE, self.handle_conn_close),
        ]
        from .tls import server_context

        ssl_context = server_context(self.config)
        contexts = [SupportedContext.of(context) for context in self.ae.supported_contexts]
        self._server = self.ae.start_server((node.host, node.port), block=False, contexts=contexts,
                                            evt_handlers=handlers, ssl_context=ssl_context)
        event(log, logging.INFO, "listening", ae_title=node.ae_title, host=node.host,
              port=node.port, tls=ssl_context is not None, spool=str(self.spool.root),
              allowed_calling_ae_titles=list(node.allowed_calling_ae_titles) or "any",
              check_called_ae_title=node.check_called_ae_title)

    def stop_listening(self) -> None:
        """Close the listening socket; associations in progress finish."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def stop(self) -> None:
        self.stop_listening()
        event(log, logging.INFO, "stopped", **self.counts)
