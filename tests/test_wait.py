"""The suite's one way to wait: a condition re-checked until a deadline."""

from __future__ import annotations

from choo_conformance.wait import ASKS_THE_DAEMON, wait_until


def _never_true(calls: list[int]):
    def condition() -> bool:
        calls.append(1)
        return False

    return condition


def test_a_condition_that_asks_the_daemon_is_checked_less_and_less_often():
    # 0.5 s at 2 ms would be about 250 checks; doubling up to 50 ms makes
    # about 15. A slow machine makes fewer, never more.
    calls: list[int] = []
    assert not wait_until(_never_true(calls), 0.5, ASKS_THE_DAEMON)
    assert len(calls) <= 30, len(calls)


def test_a_condition_that_holds_is_not_waited_on():
    calls: list[int] = []
    assert wait_until(lambda: calls.append(1) or True, 10, ASKS_THE_DAEMON)
    assert calls == [1]
