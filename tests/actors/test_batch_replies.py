"""BatchReplies: every charge of a batch answered exactly once, all handed
over together, a late failure never overwriting a real answer."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from actors.charges import BatchReplies, ChargeOutcome, refused

COMMITTED = ChargeOutcome(kind="committed")
DEAD = refused("account_unavailable", "the account is restarting; retry")


def _collector(count: int) -> tuple[BatchReplies, list[list[ChargeOutcome]]]:
    calls: list[list[ChargeOutcome]] = []

    def on_all(outcomes: Sequence[ChargeOutcome]) -> None:
        calls.append(list(outcomes))

    return BatchReplies(count, on_all), calls


def test_outcomes_arrive_in_command_order_whatever_the_answer_order() -> None:
    replies, calls = _collector(3)
    replies.reply_for(2)(refused("quota_exceeded", "over"))
    replies.reply_for(0)(COMMITTED)
    assert calls == []
    replies.reply_for(1)(COMMITTED)
    assert [[o.kind for o in c] for c in calls] == [["committed", "committed", "refused"]]


def test_a_failure_answers_only_the_commands_still_waiting() -> None:
    replies, calls = _collector(3)
    replies.reply_for(0)(COMMITTED)
    replies.fail_unanswered(DEAD)
    replies.reply_for(1)(COMMITTED)  # too late: already answered as failed
    replies.fail_unanswered(DEAD)
    assert len(calls) == 1
    assert [o.code for o in calls[0]] == [None, "account_unavailable", "account_unavailable"]


def test_answers_from_many_threads_are_handed_over_once() -> None:
    replies, calls = _collector(200)
    threads = [
        threading.Thread(target=lambda i=i: replies.reply_for(i)(COMMITTED)) for i in range(200)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(calls[0]) == 200
