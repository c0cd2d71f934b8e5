"""The retry backoff on its own (dicom_node.outbound.retry_decision): plain values, no database.

How the state database records the decision is in test_queue_state.py.
"""
from __future__ import annotations

from dicom_node.outbound import retry_decision

NOW = 1000.0


def rule(attempts, *, max_attempts=8, initial=10.0, cap=900.0, permanent=False):
    return retry_decision(attempts, max_attempts=max_attempts, backoff_initial_s=initial, backoff_max_s=cap,
                          now=NOW, permanent=permanent)


def test_backoff_doubles_from_the_initial_delay():
    delays = [rule(n).next_attempt_at - NOW for n in range(1, 8)]
    assert delays == [10, 20, 40, 80, 160, 320, 640]
    assert not any(rule(n).dead for n in range(1, 8))


def test_backoff_is_capped():
    delays = [rule(n, max_attempts=20, cap=100.0).next_attempt_at - NOW for n in range(1, 8)]
    assert delays == [10, 20, 40, 80, 100, 100, 100]
    assert rule(15, max_attempts=20, cap=100.0).next_attempt_at == NOW + 100   # 2**14 * 10 s, capped


def test_dead_letter_at_max_attempts_not_before():
    retried = rule(2, max_attempts=3)
    assert not retried.dead and retried.dead_reason is None
    assert retried.recorded_error("refused") == "refused"
    dead = rule(3, max_attempts=3)
    assert dead.dead and dead.next_attempt_at == NOW and dead.attempts == 3
    assert dead.recorded_error("connection refused") == "3 attempts failed; last: connection refused"
    assert rule(4, max_attempts=3).dead                      # e.g. max_attempts lowered meanwhile


def test_permanent_failure_is_dead_lettered_at_once():
    d = rule(1, permanent=True)
    assert d.dead and d.next_attempt_at == NOW
    assert d.recorded_error("0x0122") == "permanent failure; last: 0x0122"


def test_zero_initial_backoff_retries_at_once():
    assert rule(1, initial=0.0, cap=0.0).next_attempt_at == NOW
