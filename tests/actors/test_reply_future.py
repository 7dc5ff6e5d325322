"""The account actor's light future: what pykka and the supervisor rely on."""

from __future__ import annotations

import sys
import threading

import pykka
import pytest

from actors.account import _ReplyFuture
from actors.charges import ACCOUNT_UNAVAILABLE, ChargeOutcome


def test_get_waits_for_the_value_set_on_another_thread() -> None:
    future = _ReplyFuture()
    threading.Timer(0.05, future.set, args=("done",)).start()
    assert future.get(timeout=5) == "done"
    assert future.get(timeout=0) == "done"  # a second get sees it too


def test_get_times_out_when_nothing_is_set() -> None:
    with pytest.raises(pykka.Timeout):
        _ReplyFuture().get(timeout=0.01)


def test_an_exception_is_raised_by_get_and_answers_the_bound_charges() -> None:
    answers: list[ChargeOutcome] = []
    future = _ReplyFuture()
    future.bind(answers.append)
    try:
        raise pykka.ActorDeadError("stopped before handling the message")
    except pykka.ActorDeadError:
        future.set_exception(sys.exc_info())
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=1)
    assert [(a.kind, a.code) for a in answers] == [("refused", ACCOUNT_UNAVAILABLE)]


def test_a_failure_before_bind_is_answered_at_bind() -> None:
    future = _ReplyFuture()
    future.set_exception((pykka.ActorDeadError, pykka.ActorDeadError("gone"), None))
    answers: list[ChargeOutcome] = []
    future.bind(answers.append)
    assert [a.code for a in answers] == [ACCOUNT_UNAVAILABLE]


def test_a_derived_future_answers_through_its_get_hook() -> None:
    """ActorRef.stop(block=True) waits on such a future: it used to hang."""
    future = _ReplyFuture()
    future.set_get_hook(lambda timeout: f"stopped within {timeout}")
    assert future.get(timeout=1) == "stopped within 1"
