"""dicom_node.association_sockets: the large-read replacement of pynetdicom's AssociationSocket.recv gives
what the original gives, on real sockets (a socket pair), whole or cut short by the peer; the PDU
reading decodes P-DATA-TF as pynetdicom does, into views instead of copies, and fails alike."""
from __future__ import annotations

import os
import queue
import socket
import struct
import threading
from types import SimpleNamespace

import pytest
from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
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


# -- read_pdu: P-DATA-TF PDUs decoded into views of one buffer -----------------------------------

def _pdv(context_id: int, control: int, value: bytes) -> bytes:
    return struct.pack(">LB", len(value) + 2, context_id) + bytes([control]) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


class _Dul:
    """What a DUL service provider's PDU reading uses: the association socket's ``recv``, the
    event and PDU queues, the association's handlers; here over one end of a socket pair."""

    _decode_pdu = DULServiceProvider._decode_pdu

    def __init__(self, sock: socket.socket, handlers: dict | None = None):
        self.socket = SimpleNamespace(recv=lambda n: recv_exactly(SimpleNamespace(socket=sock), n))
        self.event_queue: queue.Queue = queue.Queue()
        self._recv_pdu: queue.Queue = queue.Queue()
        self.assoc = SimpleNamespace(get_handlers=lambda event: (handlers or {}).get(event, []),
                                     _abort_nonblocking=None, _abort_blocking=None)


def _read_one_pdu(reader, stream: bytes, handlers: dict | None = None):
    """Events and PDUs from reading one PDU of ``stream`` (the peer closes after it)."""
    a, b = socket.socketpair()
    a.settimeout(10)

    def send():
        b.sendall(stream)
        b.close()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        dul = _Dul(a, handlers)
        reader(dul)
        return list(dul.event_queue.queue), list(dul._recv_pdu.queue)
    finally:
        sender.join()
        a.close()


def _values(pdus) -> list[tuple[int, bytes]]:
    return [(item.presentation_context_id, bytes(item.presentation_data_value))
            for pdu in pdus for item in pdu.presentation_data_value_items]


P_DATA_STREAMS = {
    "command and data set": _pdu(4, _pdv(1, 0x03, os.urandom(80)) + _pdv(1, 0x00, os.urandom(300_000))
                                 + _pdv(3, 0x02, b"")),
    "one empty value": _pdu(4, _pdv(5, 0x02, b"")),
    "no items": _pdu(4, b""),
}
BROKEN_STREAMS = {
    "item longer than the PDU": _pdu(4, struct.pack(">LB", 50, 1) + b"\x02abc"),
    "item length 0": _pdu(4, struct.pack(">LB", 0, 1) + b"\x02abc"),
    "3 bytes after the last item": _pdu(4, _pdv(1, 0x02, b"abc") + b"\x00\x00\x01"),
    "unknown PDU type": _pdu(9, b"\x00" * 4),
    "cut short by the peer": _pdu(4, _pdv(1, 0x02, os.urandom(1000)))[:500],
    "header cut short": b"\x04\x00\x00",
}


@pytest.mark.parametrize("name", P_DATA_STREAMS)
def test_read_pdu_gives_pynetdicoms_items_without_copies(name):
    stream = P_DATA_STREAMS[name]
    ours = _read_one_pdu(association_sockets.read_pdu, stream)
    theirs = _read_one_pdu(association_sockets._ORIGINAL_READ_PDU, stream)
    assert ours[0] == theirs[0] == ["Evt10"]
    assert _values(ours[1]) == _values(theirs[1])
    values = [item.presentation_data_value for item in ours[1][0].presentation_data_value_items]
    assert all(isinstance(v, memoryview) for v in values)
    if len(values) > 1:  # views of one buffer: the read PDU, not copies
        assert values[0].obj is values[1].obj
    # pynetdicom's own description of the items (its debug log) still works
    assert [item.message_control_header_byte for item in ours[1][0].presentation_data_value_items] \
        == [item.message_control_header_byte for item in theirs[1][0].presentation_data_value_items]


@pytest.mark.parametrize("name", BROKEN_STREAMS)
def test_read_pdu_signals_broken_pdus_as_pynetdicom_does(name):
    stream = BROKEN_STREAMS[name]
    ours = _read_one_pdu(association_sockets.read_pdu, stream)
    theirs = _read_one_pdu(association_sockets._ORIGINAL_READ_PDU, stream)
    assert ours[0] == theirs[0] and ours[0][0] in ("Evt17", "Evt19")
    assert ours[1] == theirs[1] == []


def test_read_pdu_leaves_other_pdus_and_raw_data_handlers_to_pynetdicom():
    release = _pdu(5, b"\x00" * 4)  # A-RELEASE-RQ
    ours = _read_one_pdu(association_sockets.read_pdu, release)
    assert ours[0] == ["Evt12"] and type(ours[1][0]).__name__ == "A_RELEASE_RQ"

    seen = []  # an EVT_DATA_RECV handler is given the PDU's bytes, as pynetdicom gives them
    stream = P_DATA_STREAMS["command and data set"]
    handlers = {evt.EVT_DATA_RECV: [(lambda event: seen.append(event.data), None)]}
    ours = _read_one_pdu(association_sockets.read_pdu, stream, handlers)
    assert ours[0] == ["Evt10"] and seen == [stream] and type(seen[0]) is bytes
    assert _values(ours[1]) == _values(_read_one_pdu(association_sockets._ORIGINAL_READ_PDU, stream)[1])
