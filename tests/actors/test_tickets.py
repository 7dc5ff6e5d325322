"""Tickets: every charge of a batch answered exactly once, all handed over
together, a late answer never overwriting the first; the deadline; and the
account actor's light future, which settles a failed message's batch."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import weakref
from collections.abc import Sequence

import pykka
import pytest

from actors.charges import ACCOUNT_UNAVAILABLE, ChargeOutcome, refused
from actors.pending import PendingReceipt
from actors.tickets import TIMED_OUT, Ticket, TicketBatch, TicketFuture

COMMITTED = ChargeOutcome(kind="committed")
DEAD = refused("account_unavailable", "the account is restarting; retry")


def _collector(count: int) -> tuple[TicketBatch, list[list[ChargeOutcome]]]:
    calls: list[list[ChargeOutcome]] = []

    def on_all(outcomes: Sequence[ChargeOutcome]) -> None:
        calls.append(list(outcomes))

    return TicketBatch(count, on_all), calls


def test_outcomes_arrive_in_ticket_order_whatever_the_settle_order() -> None:
    batch, calls = _collector(3)
    assert batch.issue()[2].settle(refused("quota_exceeded", "over"))
    assert batch.issue()[0].settle(COMMITTED)
    assert calls == []
    assert batch.issue()[1].settle(COMMITTED)
    assert [[o.kind for o in c] for c in calls] == [["committed", "committed", "refused"]]


def test_a_second_settle_returns_false_and_never_reaches_the_waiter() -> None:
    batch, calls = _collector(3)
    assert batch.issue()[0].settle(COMMITTED)
    batch.fail_unsettled(DEAD)
    assert not batch.issue()[1].settle(COMMITTED)  # too late: already failed
    assert not batch.issue()[0].settle(DEAD)
    batch.fail_unsettled(DEAD)
    assert len(calls) == 1
    assert [o.code for o in calls[0]] == [None, "account_unavailable", "account_unavailable"]
    assert batch.issue()[1].outcome == DEAD


def test_settlements_from_many_threads_are_handed_over_once() -> None:
    batch, calls = _collector(200)
    wins = [0] * 200
    failed: list[int] = []
    tickets = batch.issue()

    def settle_twice(index: int) -> None:
        # Two settlers race for every ticket, with four failing the batch.
        ticket = tickets[index]
        wins[index] += ticket.settle(COMMITTED)
        wins[index] += ticket.settle(DEAD)

    threads = [threading.Thread(target=settle_twice, args=(i,)) for i in range(200)] + [
        threading.Thread(target=lambda: failed.append(batch.fail_unsettled(DEAD)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(calls[0]) == 200
    # Exactly one settlement won per ticket: the per-ticket wins plus those
    # of the failures add up to the tickets, and no ticket won twice.
    assert max(wins) == 1 and sum(wins) + sum(failed) == 200
    assert calls[0] == [t.outcome for t in batch.issue()]


def test_a_failing_handover_does_not_reach_the_stage_that_settled() -> None:
    def on_all(outcomes: Sequence[ChargeOutcome]) -> None:
        raise RuntimeError("Event loop is closed")

    batch = TicketBatch(1, on_all)
    assert batch.issue()[0].settle(COMMITTED)  # logged, not raised into the writer


async def test_the_awaited_future_resolves_in_one_hop_and_cancels_the_deadline() -> None:
    loop = asyncio.get_running_loop()
    batch, answered = TicketBatch.awaited(2, loop, timeout_s=0.2)
    settler = threading.Thread(target=lambda: [t.settle(COMMITTED) for t in batch.issue()])
    settler.start()
    settler.join()
    assert [o.kind for o in await asyncio.wait_for(answered, 5)] == ["committed"] * 2
    await asyncio.sleep(0.3)  # past the deadline: nothing changes
    assert [t.outcome for t in batch.issue()] == [COMMITTED, COMMITTED]


async def test_the_deadline_settles_only_what_is_still_waiting() -> None:
    loop = asyncio.get_running_loop()
    batch, answered = TicketBatch.awaited(2, loop, timeout_s=0.05)
    assert batch.issue()[0].settle(COMMITTED)
    assert await asyncio.wait_for(answered, 5) == [COMMITTED, TIMED_OUT]
    assert not batch.issue()[1].settle(COMMITTED)  # the late commit is not sent


def test_get_waits_for_the_value_set_on_another_thread() -> None:
    future = TicketFuture()
    threading.Timer(0.05, future.set, args=("done",)).start()
    assert future.get(timeout=5) == "done"
    assert future.get(timeout=0) == "done"  # a second get sees it too


def test_get_times_out_when_nothing_is_set() -> None:
    with pytest.raises(pykka.Timeout):
        TicketFuture().get(timeout=0.01)


def test_an_exception_is_raised_by_get_and_settles_the_bound_collector() -> None:
    batch, calls = _collector(2)
    future = TicketFuture()
    future.bind(batch)
    try:
        raise pykka.ActorDeadError("stopped before handling the message")
    except pykka.ActorDeadError:
        future.set_exception(sys.exc_info())
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=1)
    assert [[(o.kind, o.code) for o in c] for c in calls] == [
        [("refused", ACCOUNT_UNAVAILABLE)] * 2
    ]


def test_a_failure_before_bind_is_settled_at_bind() -> None:
    future = TicketFuture()
    future.set_exception((pykka.ActorDeadError, pykka.ActorDeadError("gone"), None))
    batch, calls = _collector(1)
    future.bind(batch)
    assert [[o.code for o in c] for c in calls] == [[ACCOUNT_UNAVAILABLE]]


def test_a_derived_future_answers_through_its_get_hook() -> None:
    """ActorRef.stop(block=True) waits on such a future: it used to hang."""
    future = TicketFuture()
    future.set_get_hook(lambda timeout: f"stopped within {timeout}")
    assert future.get(timeout=1) == "stopped within 1"


async def test_an_answered_batch_is_freed_without_the_cycle_collector() -> None:
    """One reference cycle per request (tickets <-> batch, holding receipts
    and proofs) left the garbage collector to free every request: its full
    passes stalled every thread, and the bench's p99 went from ~40 ms to
    250-800 ms."""
    loop = asyncio.get_running_loop()
    gc.disable()
    try:
        batch, answered = TicketBatch.awaited(2, loop, timeout_s=10.0)
        for ticket in batch.issue():
            ticket.settle(COMMITTED)
        await answered
        freed = weakref.ref(batch)
        del batch, ticket
        assert freed() is None, "the batch is kept alive by a reference cycle"
    finally:
        gc.enable()


async def test_a_batch_kept_after_its_hand_over_lets_go_of_the_request() -> None:
    """A remembered receipt keeps its ticket until the customer's next charge
    (issue 20): the answered request's future (and the deadline's timer and
    context) must not stay with it."""
    loop = asyncio.get_running_loop()
    batch, answered = TicketBatch.awaited(1, loop, timeout_s=5.0)
    request = weakref.ref(answered)
    assert batch.issue()[0].settle(COMMITTED)
    assert await asyncio.wait_for(answered, 5) == [COMMITTED]
    del answered
    gc.collect()
    assert request() is None
    assert batch.issue()[0].outcome == COMMITTED


def _pending(ticket: Ticket) -> PendingReceipt:
    core = {"receipt_id": "rcpt_1", "seq": 1, "usage_description": "x" * 500}
    return PendingReceipt(
        customer_id="cus_1", seq=1, idempotency_key="k1", fingerprint="f1",
        entitlement_id="api_calls", amount_minor=1, currency="USD", balance_after_minor=1,
        recorded_at="2026-01-01T00:00:00Z", receipt_id="rcpt_1", receipt_hash="h1",
        previous_receipt_hash="", core=core, canonical_core=b"c" * 500, ticket=ticket,
    )


def test_a_committed_receipt_keeps_what_a_replay_needs_and_drops_the_rest() -> None:
    """The account actor remembers its last receipt until the next charge:
    10,000 live customers each kept a core, its canonical bytes and the
    request record (issue 20). A duplicate still gets its replay."""
    batch, calls = _collector(2)
    first, duplicate = batch.issue()
    pending = _pending(first)
    assert pending.settle(COMMITTED)
    assert (pending.core, pending.canonical_core, pending.receipt) == ({}, b"", None)
    pending.add_waiter(duplicate)
    assert [o.kind for o in calls[0]] == ["committed", "replayed"]


def test_a_refused_receipt_keeps_its_core_for_a_stage_still_holding_it() -> None:
    batch, _ = _collector(1)
    pending = _pending(batch.issue()[0])
    assert pending.settle(DEAD)
    assert pending.canonical_core == b"c" * 500 and pending.core["seq"] == 1
