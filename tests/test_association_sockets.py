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


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    finally:
        server.close()
    return a, b


def test_quick_acks_read_the_same_bytes_on_tcp():
    """With quick ACKs asked for (outbound associations), reads on a real TCP connection give
    exactly what was sent, and the option is really set on the socket before the read."""
    a, b = _tcp_pair()
    a.settimeout(10)
    data = os.urandom(2 * CHUNK_BYTES + 5)
    sender = threading.Thread(target=b.sendall, args=(data,))
    sender.start()
    try:
        asked = []

        class Recording:  # the real socket, with its setsockopt calls noted
            def __getattr__(self, name):
                return getattr(a, name)

            def setsockopt(self, *args):
                asked.append(args)
                return a.setsockopt(*args)

        assert recv_exactly(SimpleNamespace(socket=Recording(), quick_ack=True), len(data)) == data
        if hasattr(socket, "TCP_QUICKACK"):
            assert asked == [(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)]
        before = len(asked)
        assert recv_exactly(SimpleNamespace(socket=Recording()), 0) == b""  # inbound: not asked
        assert len(asked) == before
    finally:
        sender.join()
        a.close()
        b.close()


def test_low_latency_on_a_real_association():
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    association_sockets.install()
    scp = AE(ae_title="SCP")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="SCP")
        assert assoc.is_established
        association_sockets.low_latency(assoc)
        sock = assoc.dul.socket
        assert sock.quick_ack is True
        assert sock.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert assoc.send_c_echo().Status == 0x0000  # the answer is read through the quick-ACK path
        assoc.release()
    finally:
        server.shutdown()
