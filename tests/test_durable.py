"""common.durable: whole-or-nothing replacement of files and folders, with the file and its
folder fsync'ed (what a power cut needs), and no temporary left behind on failure."""
from __future__ import annotations

import os
import stat

import pytest

from common import durable


@pytest.fixture
def synced(monkeypatch):
    """Record what every os.fsync call flushed: ("dir" | "file", path) per call."""
    calls = []
    real = os.fsync

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        calls.append(("dir" if stat.S_ISDIR(mode) else "file", os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_write_bytes_syncs_the_file_and_its_folder(tmp_path, synced):
    target = tmp_path / "a.bin"
    assert durable.write_bytes(target, b"new") == target
    assert target.read_bytes() == b"new"
    files = [path for kind, path in synced if kind == "file"]
    assert len(files) == 1 and os.path.basename(files[0]).endswith(durable.PARTIAL_SUFFIX)  # before the rename
    assert synced[-1] == ("dir", str(tmp_path))  # after the rename: the new name is on disk too
    assert list(tmp_path.iterdir()) == [target]


def test_new_folders_are_synced_into_their_parents(tmp_path, synced):
    durable.write_text(tmp_path / "x" / "y" / "t.txt", "é\n")
    assert (tmp_path / "x" / "y" / "t.txt").read_bytes() == "é\n".encode("utf-8")
    dirs = [path for kind, path in synced if kind == "dir"]
    assert dirs == [str(tmp_path), str(tmp_path / "x"), str(tmp_path / "x" / "y")]


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    durable.write_text(target, "new")
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with durable.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_nothing_written_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        with durable.atomic_path(tmp_path / "a.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_files_get_the_permissions_of_a_plain_open(tmp_path):
    durable.write_bytes(tmp_path / "a", b"")
    (tmp_path / "b").write_bytes(b"")
    assert (tmp_path / "a").stat().st_mode == (tmp_path / "b").stat().st_mode


def test_replace_dir_swaps_a_whole_folder(tmp_path, synced):
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "old-only.txt").write_text("old")
    (final / "shared.txt").write_text("old")
    with durable.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "shared.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "deep.txt").write_text("new")
        assert (final / "old-only.txt").exists()  # the old folder stays whole until the end
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["shared.txt", "sub", "sub/deep.txt"]
    assert (final / "shared.txt").read_text() == "new"
    assert list(tmp_path.iterdir()) == [final]  # no temporary, no .old
    flushed = {path for _, path in synced}
    assert str(tmp_path) in flushed  # the rename is on disk
    assert any(path.endswith("deep.txt") for path in flushed)  # and so is every file in the folder


def test_a_failed_folder_write_leaves_the_old_folder(tmp_path):
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with durable.atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "old"
    assert list(tmp_path.iterdir()) == [final]


def test_replace_dir_into_a_new_place(tmp_path):
    tmp = tmp_path / ".partial-1"
    tmp.mkdir()
    (tmp / "a.txt").write_text("new")
    assert durable.replace_dir(tmp, tmp_path / "study") == tmp_path / "study"
    assert (tmp_path / "study" / "a.txt").read_text() == "new" and not tmp.exists()


def test_remove_partials_clears_what_a_killed_writer_left(tmp_path):
    keep = tmp_path / "sub" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("x")
    (tmp_path / "sub" / durable.temporary_name(keep).name).write_text("half")
    left_dir = durable.temporary_name(tmp_path / "folder")
    left_dir.mkdir()
    (left_dir / "inside.txt").write_text("half")
    assert durable.remove_partials(tmp_path) == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["sub", "sub/keep.txt"]


def test_temporary_names_are_unique(tmp_path):
    names = {durable.temporary_name(tmp_path / "a") for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and n.name.startswith(".a.") for n in names)
