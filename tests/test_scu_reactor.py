"""The sender gets the answer to its C-STORE even when pynetdicom's association thread takes it
first (dicom_node.scu_reactor), against a real DCMTK storescp.

The race needs the association's reactor thread held up between its checkpoint and its queue
read while the sending thread is held up between sending and reading the answer, which on a busy
machine happens by chance (1 burst benchmark in 6). Here it is made certain: the reactor's
checkpoint is replaced by one that, once passed, holds the reactor until the request is out and
storescp has answered, and the sending thread pauses after its request (both as if they had lost
the CPU), so the reactor reads the queue first.
"""
from __future__ import annotations

import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_factory import mg_dataset, write
from dicom_node import association_sockets, scu_reactor
from dicom_node.config import load_config
from dicom_node.outbound import Sender
from dicom_node.state import StateDB
from node_helpers import StoreSCP, write_config

ANSWER_WAIT_S = 0.3  # storescp answers a small C-STORE in milliseconds
DIMSE_TIMEOUT_S = 3.0


class _HeldCheckpoint(threading.Event):
    """The reactor's checkpoint. Armed, it holds the next thread that passes it (the reactor: the
    sender only clears and sets it) until the request is out and the answer has had time to come
    back: the reactor then reads the queue before the sender does."""

    def __init__(self):
        super().__init__()
        self.armed = False
        self.holding = threading.Event()
        self.request_sent = threading.Event()

    def wait(self, timeout=None):
        passed = super().wait(timeout)
        if self.armed:
            self.armed = False
            self.holding.set()
            self.request_sent.wait(10)
            time.sleep(ANSWER_WAIT_S)
        return passed


def _store_with_held_reactor(path, port: int) -> tuple[int | None, float]:
    """C-STORE ``path`` to storescp with the reactor held just past its checkpoint and the sending
    thread held after its request. -> (status or None when no answer came, seconds the send took)."""
    ae = AE(ae_title="CALCNODE")
    ae.acse_timeout = ae.network_timeout = 10
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.2", ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title="DEST")
    assert assoc.is_established
    association_sockets.low_latency(assoc)  # as the sender: answers come back at once
    try:
        held = _HeldCheckpoint()
        held.set()
        send_msg = assoc.dimse.send_msg

        def send_then_pause(primitive, context_id):
            send_msg(primitive, context_id)
            held.request_sent.set()
            time.sleep(2 * ANSWER_WAIT_S)

        assoc.dimse.send_msg = send_then_pause
        held.armed = True
        assoc._reactor_checkpoint = held
        assert held.holding.wait(5), "the reactor did not pass its checkpoint"
        started = time.monotonic()
        status = assoc.send_c_store(path)
        seconds = time.monotonic() - started
        return (int(status.Status) if "Status" in status else None), seconds
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()


@pytest.fixture
def storescp(tmp_path):
    scp = StoreSCP(tmp_path / "dest")
    yield scp
    scp.stop()


@pytest.fixture
def mg_file(tmp_path):
    return write(mg_dataset(), tmp_path / "mg.dcm")


def test_without_the_fix_the_reactor_swallows_the_answer(storescp, mg_file):
    """The race as pynetdicom has it: no status, after the whole DIMSE timeout."""
    scu_reactor.uninstall()
    try:
        status, seconds = _store_with_held_reactor(mg_file, storescp.port)
    finally:
        scu_reactor.install()
    assert status is None
    assert seconds >= DIMSE_TIMEOUT_S - 0.1


def test_with_the_fix_the_answer_reaches_the_sender(storescp, mg_file):
    scu_reactor.install()
    status, seconds = _store_with_held_reactor(mg_file, storescp.port)
    assert status == 0x0000
    assert seconds < DIMSE_TIMEOUT_S - 1.0
    assert len(storescp.received()) == 1


def test_the_sender_installs_it(tmp_path):
    scu_reactor.uninstall()
    assert Association._serve_request is not scu_reactor.serve_request
    config = load_config(write_config(tmp_path / "node.toml", destinations=[]))
    db = StateDB(tmp_path / "state.db")
    try:
        Sender(config, db)
    finally:
        db.close()
    assert Association._serve_request is scu_reactor.serve_request
