"""What calcnode changes in the sockets of pynetdicom's associations (the listener and the sender).

Large reads and P-DATA without copies (:func:`install`) and, on outbound associations, Nagle's
algorithm and delayed acknowledgements off (:func:`low_latency`).

pynetdicom 3.0's ``AssociationSocket.recv(n)`` collects a PDU 4 KB per ``socket.recv`` call,
each appended to a growing ``bytearray``: a 17 MB mammogram is ~4,200 trips through a Python
loop plus as many system calls and copies. While a PACS sends a burst, that loop was most of
the listener's CPU, CPU the analysis workers then lacked. :func:`recv_exactly` reads into one
buffer of the PDU's size with ``recv_into`` (up to 1 MB per call) and returns the same thing:
the bytes read, fewer only when the peer closed the connection. Timeouts and errors are raised
as before (``socket.recv_into`` raises what ``socket.recv`` raises).

On its way from the socket to the C-STORE handler pynetdicom copies every byte of a data set
five more times: the PDU body appended to its 6-byte header, the whole PDU as ``bytes``, the
PDU's items, each item's value, the value without its control byte. Each copy of a 17 MB
mammogram lands in freshly allocated memory the kernel must fault in. :func:`read_pdu`
reads a P-DATA-TF PDU into one buffer and hands pynetdicom its presentation data values as
views of that buffer (the DIMSE layer slices and appends them as it did the ``bytes``): the
data set is copied once, into the message's data set buffer. Every other PDU, and every PDU
of an association with an ``EVT_DATA_RECV`` handler (which is given the raw ``bytes``), goes
through pynetdicom's own decoding as before.

:func:`install` puts both in place of pynetdicom's methods; the node calls it once at start.
"""
from __future__ import annotations

import logging
import socket
import struct

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem
from pynetdicom.transport import AssociationSocket

CHUNK_BYTES = 1024 * 1024
_ORIGINAL_RECV = AssociationSocket.recv
_ORIGINAL_READ_PDU = DULServiceProvider._read_pdu_data
_PDU_TYPES = frozenset((0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07))
_P_DATA_TF = 0x04
_LOGGER = logging.getLogger("pynetdicom.dul")  # pynetdicom's messages, under its own name
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


def recv_exactly(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """Read ``nr_bytes`` from the association's socket (fewer if the peer closed it)."""
    if getattr(self, "quick_ack", False) and _TCP_QUICKACK is not None:
        try:  # not sticky in Linux: asked for again before every read (see low_latency)
            self.socket.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    nr_read = 0
    try:
        while nr_read < nr_bytes:
            n = self.socket.recv_into(view[nr_read:], min(nr_bytes - nr_read, CHUNK_BYTES))
            if not n:  # connection closed: what was read so far, as pynetdicom does
                break
            nr_read += n
    finally:
        view.release()  # the caller may resize the buffer
    if nr_read < nr_bytes:
        del buffer[nr_read:]
    return buffer


class _PresentationDataValueView(PresentationDataValueItem):
    """A PDV item whose value is a ``memoryview`` of the received PDU."""

    @property
    def message_control_header_byte(self) -> str:  # pynetdicom's takes ord() of a 1-byte slice
        return f"{self.presentation_data_value[0]:08b}" if self.presentation_data_value else ""


def presentation_data_values(body: bytearray) -> list[PresentationDataValueItem]:
    """The PDV items of a P-DATA-TF PDU's ``body`` (the PDU without its 6-byte header), their
    values views of ``body``. ``ValueError`` if an item's length runs past the PDU or is 0."""
    view = memoryview(body)
    items = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 5:
            raise ValueError(f"P-DATA-TF: {end - offset} bytes left, too few for a PDV item")
        (length,) = struct.unpack_from(">L", body, offset)
        if length < 1 or offset + 4 + length > end:
            raise ValueError(f"P-DATA-TF: PDV item length {length} does not fit the PDU")
        item = _PresentationDataValueView()
        item.presentation_context_id = body[offset + 4]
        item.presentation_data_value = view[offset + 5:offset + 4 + length]
        items.append(item)
        offset += 4 + length
    return items


def read_pdu(self: DULServiceProvider) -> None:
    """pynetdicom's ``DULServiceProvider._read_pdu_data``, with the PDU read into one buffer and
    a P-DATA-TF PDU decoded into views of it (see the module doc). The same events for the
    same failures: Evt17 when the connection ends early, Evt19 for an unknown or undecodable
    PDU."""
    try:
        header = self.socket.recv(6)
    except (OSError, TimeoutError) as exc:
        _LOGGER.error("Connection closed before the entire PDU was received")
        _LOGGER.exception(exc)
        self.event_queue.put("Evt17")
        return
    try:
        pdu_type, _, pdu_length = struct.unpack(">BBL", header)
    except struct.error:
        self.event_queue.put("Evt17")
        return
    if pdu_type not in _PDU_TYPES:
        _LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        self.event_queue.put("Evt19")
        return
    try:
        body = self.socket.recv(pdu_length)
    except (OSError, TimeoutError) as exc:
        _LOGGER.error("Connection closed before the entire PDU was received")
        _LOGGER.exception(exc)
        self.event_queue.put("Evt17")
        return
    if len(body) != pdu_length:
        _LOGGER.error(f"The received PDU is shorter than expected ({6 + len(body)} of "
                      f"{6 + pdu_length} bytes received)")
        self.event_queue.put("Evt17")
        return
    try:
        if pdu_type == _P_DATA_TF and not self.assoc.get_handlers(evt.EVT_DATA_RECV):
            pdu = P_DATA_TF()
            pdu.presentation_data_value_items = presentation_data_values(body)
            evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
            event = "Evt10"
        else:
            pdu, event = self._decode_pdu(bytearray(header) + body)
        self.event_queue.put(event)
    except Exception as exc:
        _LOGGER.error("Unable to decode the received PDU data")
        _LOGGER.exception(exc)
        self.event_queue.put("Evt19")
        return
    self._recv_pdu.put(pdu)


def install() -> None:
    """Use :func:`recv_exactly` and :func:`read_pdu` for every pynetdicom association of this
    process (idempotent)."""
    AssociationSocket.recv = recv_exactly
    DULServiceProvider._read_pdu_data = read_pdu


def uninstall() -> None:
    """pynetdicom's own methods again (tests compare the two)."""
    AssociationSocket.recv = _ORIGINAL_RECV
    DULServiceProvider._read_pdu_data = _ORIGINAL_READ_PDU


def low_latency(assoc) -> None:
    """Nagle's algorithm off, and the peer's answers acknowledged at once, on an established
    outbound association.

    A C-STORE request is two P-DATA PDUs (command, then data set) written one after the
    other; with Nagle on, the second waits for the peer's delayed ACK (40 ms on Linux) on
    every object. Measured: 6 result objects to DCMTK storescp in 0.50 s with Nagle, 0.29 s
    without. A destination that keeps Nagle on (DCMTK's default since 3.6.2: ``storescp`` and
    archives built on it) makes its answers wait for our delayed ACK the same way. Asking the
    kernel for an immediate ACK before each read (``TCP_QUICKACK``, Linux) removes that: 6
    objects to storescp 0.30 -> 0.05 s, as fast as to a destination that turns Nagle off
    itself (Orthanc, dcm4che).
    """
    try:
        sock = assoc.dul.socket
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.quick_ack = True  # read by recv_exactly
    except (AttributeError, OSError):  # a pynetdicom without these internals: only slower
        pass
