"""Atomic file writes: write to a temporary file in the same folder, then rename.

An interrupted run therefore leaves complete files or none (plus, at worst, a
``.*.partial`` temporary that the next run of the same case removes).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path next to ``final``; rename it onto ``final`` on success,
    delete it on any exception."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_text(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_partials(folder: str | os.PathLike) -> None:
    """Remove temporaries left by a killed run (``.*.partial``) under ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(".*.partial"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
