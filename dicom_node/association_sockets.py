"""What calcnode changes in the sockets of pynetdicom's associations (the listener and the sender).

Large reads (:func:`install`) and, on outbound associations, Nagle's algorithm and delayed
acknowledgements off (:func:`low_latency`).

pynetdicom 3.0's ``AssociationSocket.recv(n)`` collects a PDU 4 KB per ``socket.recv`` call,
each appended to a growing ``bytearray``: a 17 MB mammogram is ~4,200 trips through a Python
loop plus as many system calls and copies. While a PACS sends a burst, that loop was most of
the listener's CPU, CPU the analysis workers then lacked. :func:`recv_exactly` reads into one
buffer of the PDU's size with ``recv_into`` (up to 1 MB per call) and returns the same thing:
the bytes read, fewer only when the peer closed the connection. Timeouts and errors are raised
as before (``socket.recv_into`` raises what ``socket.recv`` raises).

:func:`install` puts it in place of pynetdicom's method; the node calls it once at start.
"""
from __future__ import annotations

import socket

from pynetdicom.transport import AssociationSocket

CHUNK_BYTES = 1024 * 1024
_ORIGINAL_RECV = AssociationSocket.recv
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


def install() -> None:
    """Use :func:`recv_exactly` for every pynetdicom association of this process (idempotent)."""
    AssociationSocket.recv = recv_exactly


def uninstall() -> None:
    """pynetdicom's own method again (tests compare the two)."""
    AssociationSocket.recv = _ORIGINAL_RECV


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
