"""Keep pynetdicom's association thread from swallowing the answer to our own C-STORE.

pynetdicom 3.0 runs a *reactor* thread per association that takes complete DIMSE messages off
the association's queue and serves them as requests. ``send_c_store()`` (and the other
``send_*()`` calls) pause it before sending, so that the answer stays on the queue for the
caller: they clear a checkpoint, then wait until the reactor says it is paused. The reactor says
so *before* it stops at the checkpoint::

    reactor:  paused = True; checkpoint.wait(); paused = False; msg = queue.get_nowait()
    sender:                   checkpoint.clear(); (sees paused) send request; queue.get(wait)

If the reactor passes the checkpoint just before the sender clears it, the sender still sees
``paused`` and sends. When the reactor thread then loses the CPU for a moment (the GIL changes
hands every 5 ms; on 2 busy cores a thread waits longer) and the destination answers at once
(loopback, Nagle off), the reactor takes the C-STORE response off the queue, treats it as a
request ("Received unexpected C-STORE service message") and drops it. The sender then waits
``outbound.timeout_s`` for an answer that already came, fails that object and the rest of the
association's objects, and sends them again after the backoff. In the burst benchmark this hit
1 run in 6: two studies' results 10 s late.

:func:`install` wraps ``Association._serve_request``: on an association this process requested,
a *response* that reaches it while a ``send_*()`` call waits (the checkpoint is cleared) goes back
on the queue, where that call takes it; the reactor then stops at the cleared checkpoint.
Anything else is served by pynetdicom as before.
"""
from __future__ import annotations

from pynetdicom.association import Association

_ORIGINAL_SERVE_REQUEST = Association._serve_request


def serve_request(self: Association, msg, context_id: int) -> None:
    """pynetdicom's ``_serve_request``, except for the answer a waiting ``send_*()`` call is owed."""
    waiting = not self._reactor_checkpoint.is_set()
    if waiting and self.is_requestor and msg is not None and not msg.is_valid_request \
            and msg.is_valid_response:
        self.dimse.msg_queue.put((context_id, msg))
        return
    _ORIGINAL_SERVE_REQUEST(self, msg, context_id)


def install() -> None:
    """Use :func:`serve_request` for every pynetdicom association of this process (idempotent)."""
    Association._serve_request = serve_request


def uninstall() -> None:
    """pynetdicom's own method again (the tests show the race with it)."""
    Association._serve_request = _ORIGINAL_SERVE_REQUEST
