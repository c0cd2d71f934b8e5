"""dicom_node.association_sockets: the large-read replacement of pynetdicom's AssociationSocket.recv gives
what the original gives, on real sockets (a socket pair), whole or cut short by the peer."""
from __future__ import annotations

import os
import socket
import threading
from types import SimpleNamespace

import pytest
from pynetdicom.transport import AssociationSocket

from dicom_node import association_sockets
from dicom_node.association_sockets import CHUNK_BYTES, recv_exactly


def _read(reader, data: bytes, nr_bytes: int, close_after: bool) -> bytearray:
    a, b = socket.socketpair()
    a.settimeout(10)

    def send():
        for k in range(0, len(data), 70_001):  # odd pieces: the reader gets partial receives
            b.sendall(data[k:k + 70_001])
        if close_after:
            b.close()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return reader(SimpleNamespace(socket=a), nr_bytes)
    finally:
        sender.join()
        a.close()
        if not close_after:
            b.close()


@pytest.mark.parametrize("size", [6, 4096, 262_144, 3 * CHUNK_BYTES + 17])
def test_reads_exactly_what_pynetdicom_reads(size):
    data = os.urandom(size)
    ours = _read(recv_exactly, data, size, close_after=False)
    theirs = _read(association_sockets._ORIGINAL_RECV, data, size, close_after=False)
    assert isinstance(ours, bytearray) and ours == theirs == data


def test_a_connection_closed_early_gives_what_was_read():
    data = os.urandom(100_000)
    ours = _read(recv_exactly, data, 250_000, close_after=True)
    theirs = _read(association_sockets._ORIGINAL_RECV, data, 250_000, close_after=True)
    assert ours == theirs == data
    ours += b"more"  # the caller may grow the buffer (pynetdicom does): no view left on it
    assert len(ours) == 100_004


def test_a_silent_peer_raises_the_socket_timeout():
    a, b = socket.socketpair()
    a.settimeout(0.2)
    try:
        with pytest.raises(TimeoutError):
            recv_exactly(SimpleNamespace(socket=a), 10)
    finally:
        a.close()
        b.close()


def test_install_and_uninstall():
    association_sockets.install()
    assert AssociationSocket.recv is recv_exactly
    association_sockets.uninstall()
    assert AssociationSocket.recv is association_sockets._ORIGINAL_RECV
    association_sockets.install()  # the node's own setting again for the rest of this test process
