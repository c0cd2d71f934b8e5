"""The spool: every received instance as one Part 10 file, written durably.

Layout under the state directory::

    spool/incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm   one file per instance
    spool/tmp/                                               files being written

An instance is written to ``tmp/`` (write, flush, fsync), then hard-linked to
its final name and the directories fsync'ed, and only then does the SCP answer
success. ``os.link`` fails if the final name exists, so a duplicate SOP
Instance UID -- also two associations racing with the same instance -- is
stored once and never overwritten. Anything that fails on the way (disk full,
permissions) removes the temporary file, so the spool holds only complete
instances. Leftovers of a crash in ``tmp/`` are removed at start.
"""
from __future__ import annotations

import errno
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class SpoolError(Exception):
    """An instance could not be written. ``out_of_resources`` is True for a full disk or quota."""

    def __init__(self, message: str, *, out_of_resources: bool):
        super().__init__(message)
        self.out_of_resources = out_of_resources


class InvalidUidError(ValueError):
    pass


def check_uid(value: str, what: str) -> str:
    """Return ``value`` if it is a valid DICOM UID (it becomes a file name), else raise."""
    value = (value or "").strip().rstrip("\x00")
    if not value or len(value) > 64 or not _UID.match(value):
        raise InvalidUidError(f"{what} {value[:80]!r} is not a valid DICOM UID")
    return value


@dataclass(frozen=True)
class StoreResult:
    path: Path
    duplicate: bool


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.tmp = self.root / "tmp"

    def open(self) -> int:
        """Create the folders and remove what a crash left in tmp/. Returns how many were removed."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def path_for(self, study_uid: str, sop_instance_uid: str) -> Path:
        study = check_uid(study_uid, "Study Instance UID")
        sop = check_uid(sop_instance_uid, "SOP Instance UID")
        return self.incoming / study / f"{sop}.dcm"

    def store(self, study_uid: str, sop_instance_uid: str, data: bytes) -> StoreResult:
        """Write ``data`` (a complete Part 10 byte stream) durably; see the module doc."""
        final = self.path_for(study_uid, sop_instance_uid)
        if final.exists():
            return StoreResult(final, duplicate=True)
        tmp = self.tmp / f"{final.stem}.{uuid.uuid4().hex}.part"
        try:
            new_dir = not final.parent.exists()
            final.parent.mkdir(parents=True, exist_ok=True)
            if new_dir:
                _fsync_dir(self.incoming)
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, final)
                duplicate = False
            except FileExistsError:
                duplicate = True  # another association stored the same instance first
            _fsync_dir(final.parent)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            raise SpoolError(f"cannot write instance to the spool: {exc.strerror or exc}",
                             out_of_resources=full) from exc
        finally:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        return StoreResult(final, duplicate=duplicate)

    def discard(self, path: Path) -> None:
        """Remove a stored instance again (it could not be recorded; the sender will retry)."""
        try:
            Path(path).unlink(missing_ok=True)
            _fsync_dir(Path(path).parent)
        except OSError:
            pass

    def instances(self) -> list[Path]:
        """Every stored instance file, sorted."""
        return sorted(self.incoming.glob("*/*.dcm"))
