"""Pipeline.barrier: an account actor (re)starting waits for what its
customer still has on its way to the store, and only for that.

Each account actor waits on a shared scheduler thread; a barrier sent
through the ledger writer waits for every batch ahead of it, at least one
checkpoint signature (20 ms with Cloud KMS). New customers' actors, which
have nothing on its way, must not pay that."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from actors.charges import ChargeOutcome, refused
from actors.pending import Barrier, PendingReceipt
from actors.pipeline import Pipeline, Unavailable
from actors.tickets import TicketBatch

pytestmark = pytest.mark.timeout(30)


class _HoldingWriter:
    """A writer stage that keeps every item until the test settles it."""

    def __init__(self, *, full: bool = False) -> None:
        self.items: list[Any] = []
        self.full = full

    def submit(self, item: PendingReceipt | Barrier) -> None:
        if self.full:
            raise Unavailable("ledger writer queue full")
        self.items.append(item)


def _pending(customer_id: str, seq: int) -> PendingReceipt:
    (ticket,) = TicketBatch(1, lambda outcomes: None).issue()
    return PendingReceipt(
        customer_id=customer_id, seq=seq, idempotency_key=f"key-{seq}", fingerprint="f",
        entitlement_id="usage", amount_minor=100, currency="USD", balance_after_minor=100 * seq,
        recorded_at="2026-01-01T00:00:00Z", receipt_id=f"rcpt_{seq}", receipt_hash="sha256:00",
        previous_receipt_hash="sha256:00", core={}, canonical_core=b"{}", ticket=ticket,
    )


def _barrier_in_thread(pipeline: Pipeline, customer_id: str) -> tuple[threading.Thread, list[bool]]:
    passed: list[bool] = []
    thread = threading.Thread(target=lambda: passed.append(pipeline.barrier(customer_id, 10)))
    thread.start()
    return thread, passed


def test_a_customer_with_nothing_on_its_way_passes_at_once() -> None:
    pipeline = Pipeline(signs_receipts=False)
    writer = _HoldingWriter()  # would hold a barrier forever
    pipeline.attach_writer(writer)
    started = time.monotonic()
    assert pipeline.barrier("cus_new", timeout_s=5)
    assert time.monotonic() - started < 0.5
    assert writer.items == []  # nothing went through the writer


def test_a_barrier_waits_for_the_customers_receipts_until_each_is_settled() -> None:
    pipeline = Pipeline(signs_receipts=False)
    writer = _HoldingWriter()
    pipeline.attach_writer(writer)
    first, second, other = _pending("cus_a", 1), _pending("cus_a", 2), _pending("cus_b", 1)
    for item in (first, second, other):
        pipeline.submit(item)
    assert pipeline.barrier("cus_c", timeout_s=5)  # another customer's receipts: no wait

    thread, passed = _barrier_in_thread(pipeline, "cus_a")
    deadline = time.monotonic() + 5
    while not any(isinstance(i, Barrier) for i in writer.items) and time.monotonic() < deadline:
        time.sleep(0.01)
    barrier = writer.items[-1]
    assert isinstance(barrier, Barrier)  # through the writer, behind cus_a's receipts
    first.settle(ChargeOutcome(kind="committed", receipt=None))
    second.settle(refused("store_unavailable", "injected"))
    second.settle(refused("store_unavailable", "settled twice: counted once"))
    barrier.settle()  # the writer releases it after what came before
    thread.join(5)
    assert passed == [True]
    # Both of cus_a's receipts are settled: the next restart passes at once,
    # while cus_b's receipt still holds cus_b's.
    count_before = len(writer.items)
    assert pipeline.barrier("cus_a", timeout_s=5)
    assert len(writer.items) == count_before
    assert not pipeline.barrier("cus_b", timeout_s=0.1)


def test_a_receipt_no_stage_took_is_not_waited_for() -> None:
    pipeline = Pipeline(signs_receipts=False)
    pipeline.attach_writer(_HoldingWriter(full=True))
    with pytest.raises(Unavailable):
        pipeline.submit(_pending("cus_a", 1))
    assert pipeline.barrier("cus_a", timeout_s=5)
