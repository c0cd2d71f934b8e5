"""The spool's durable write (``dicom_node.spool.write_durably``): exact bytes whatever the size,
through direct I/O where the filesystem allows it and the ordinary write + fsync where not."""
from __future__ import annotations

import errno
import os

import pytest

from dicom_node.spool import DIRECT_IO_CHUNK, Spool, _write_direct, write_durably

SIZES = [0, 1, 4095, 4096, 4097, DIRECT_IO_CHUNK, DIRECT_IO_CHUNK + 5000, 3 * DIRECT_IO_CHUNK - 1]


@pytest.mark.parametrize("size", SIZES)
def test_write_durably_keeps_the_exact_bytes(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "instance.part"
    write_durably(path, data)
    assert path.stat().st_size == size  # the padding of the last direct block is cut away
    assert path.read_bytes() == data


# file header + data set, split where chunk and block edges fall and elsewhere
SPLITS = [[0], [132], [4096], [DIRECT_IO_CHUNK - 3], [DIRECT_IO_CHUNK], [1, 2, 4093],
          [100, DIRECT_IO_CHUNK, DIRECT_IO_CHUNK + 1]]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
@pytest.mark.parametrize("splits", SPLITS)
def test_parts_are_written_one_after_the_other(tmp_path, monkeypatch, direct, splits):
    """A file given as parts (the SCP's file header and the data set as received) holds
    exactly the joined bytes, whichever chunk or block edges the parts cross."""
    if not direct:
        monkeypatch.setattr(os, "O_DIRECT", 0, raising=False)
    data = os.urandom(2 * DIRECT_IO_CHUNK + 1234)
    edges = [0, *splits, len(data)]
    parts = [data[a:b] for a, b in zip(edges, edges[1:])]
    parts.insert(1, b"")  # an empty part changes nothing
    path = tmp_path / "parts.part"
    write_durably(path, [parts[0], bytearray(parts[1]), *map(memoryview, parts[2:])])
    assert path.read_bytes() == data


def test_no_parts_make_an_empty_file(tmp_path):
    write_durably(tmp_path / "empty.part", [])
    assert (tmp_path / "empty.part").read_bytes() == b""


def test_direct_io_is_used_where_the_filesystem_allows_it(tmp_path):
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform")
    path = tmp_path / "direct.part"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            pytest.skip("this filesystem refuses direct I/O")
        raise
    data = os.urandom(DIRECT_IO_CHUNK + 777)
    try:
        assert _write_direct(fd, data) is True
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_without_direct_io_the_ordinary_write_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "O_DIRECT", 0, raising=False)
    data = os.urandom(10_001)
    write_durably(tmp_path / "buffered.part", data)
    assert (tmp_path / "buffered.part").read_bytes() == data


def test_an_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "taken.part"
    path.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        write_durably(path, b"second")
    assert path.read_bytes() == b"first"


def test_spool_store_files_an_instance_once(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.open()
    data = os.urandom(70_000)
    first = spool.store("1.2.3", "1.2.3.4", data)
    again = spool.store("1.2.3", "1.2.3.4", b"other bytes")
    assert not first.duplicate and again.duplicate and first.path == again.path
    assert first.path.read_bytes() == data
    assert list(spool.tmp.iterdir()) == []  # nothing half-written left behind
