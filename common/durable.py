"""Durable, atomic writes: a file or folder is replaced whole, and stays after a power cut.

A reader (another process, or the next run after a crash) sees the old content or the new one,
never a mix, and what was reported written is on disk even if the power fails right after.
That takes four steps, each for a reason:

1. write to a temporary name in the *same* folder (a rename is atomic only within one
   filesystem, and a half-written file must never carry the final name);
2. ``fsync`` the temporary file (otherwise the rename can reach the disk before the data, and
   a crash leaves the final name on an empty or truncated file: ext4/XFS delayed allocation);
3. ``os.replace`` it onto the final name (atomic: the old file until then, the new one after);
4. ``fsync`` the folder (the rename is a change of the folder, not of the file: without this a
   crash can bring back the old file, or no file, after the caller was told it was written).

Every function here does all four; there is deliberately no switch to skip a sync. Folders this
module creates are synced into their parents the same way. Temporaries are named
``.<name>.<pid>.<random>.partial`` (unique per process and call, so threads writing the same
file do not collide); :func:`remove_partials` clears those a killed process left behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush the entries of folder ``path`` (files created, renamed or removed in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush the data and size of file ``path`` to disk (read-only open: fsync needs no write access)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p folder``, syncing each folder created into its parent (a new folder's name is
    an entry of its parent: lost in a crash unless the parent is synced). Returns ``folder``."""
    folder = Path(folder)
    missing = []
    at = folder
    while not at.is_dir():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:  # another thread or process made it first: still sync it in
            if not new.is_dir():
                raise
        fsync_dir(new.parent)
    return folder


def temporary_name(final: str | os.PathLike) -> Path:
    """A hidden name beside ``final`` that no other process or call uses."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside ``final`` for the caller to create a file at; when the
    block ends without error, sync that file, rename it onto ``final`` and sync the folder.
    On any exception the temporary is removed and ``final`` is left as it was.

    For writers that want a path of their own (``Dataset.save_as``, ``savefig``, ``np.savez``);
    the file is created by the caller, so it gets the permissions of a plain ``open``.
    """
    final = Path(final)
    make_dirs(final.parent)
    tmp = temporary_name(final)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` by a file holding ``data``, durably (see the module doc). Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` by a UTF-8 file holding ``text``, durably. Returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def _sync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder``, then ``folder`` itself."""
    for child in folder.rglob("*"):
        if child.is_symlink():
            continue
        if child.is_dir():
            fsync_dir(child)
        else:
            fsync_file(child)
    fsync_dir(folder)


def replace_dir(tmp_dir: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put the complete folder ``tmp_dir`` (a sibling of ``final``) at ``final``, durably,
    replacing a folder already there. Returns ``final``.

    Everything under ``tmp_dir`` is synced first (so the renamed folder never holds empty
    files after a crash), then the parent after the rename. Linux cannot rename a folder over
    a non-empty one, so an existing ``final`` is first renamed to ``.<name>.old`` and removed
    after: a crash between those two renames leaves no ``final`` (the complete old version
    stays in ``.<name>.old``, which the next replacement removes) -- never a mix of both.
    """
    tmp_dir, final = Path(tmp_dir), Path(final)
    _sync_tree(tmp_dir)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp_dir, final)
        fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp_dir, final)
        fsync_dir(final.parent)
    return final


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a new empty temporary folder beside ``final`` to fill; when the block ends
    without error it replaces ``final`` (:func:`replace_dir`). On any exception it is removed
    and ``final`` is left as it was. The folder gets the permissions of a plain ``mkdir``."""
    final = Path(final)
    make_dirs(final.parent)
    tmp = temporary_name(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_partials(folder: str | os.PathLike) -> int:
    """Remove the temporaries (``.*.partial`` files and folders) a killed process left anywhere
    under ``folder``. Call only when no writer is active there. Returns how many were removed."""
    folder = Path(folder)
    removed = 0
    if folder.is_dir():
        for path in sorted(folder.rglob(f".*{PARTIAL_SUFFIX}"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed
