"""Contract: ReceiptBroadcast. Every adapter in BROADCAST_FACTORIES must pass."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from ledger.model import LogCheckpoint, StoredReceipt
from tests.contract._chain import Chain, log_checkpoint
from tests.contract.conftest import BroadcastUnderTest

DELIVERY_TIMEOUT_S = 10.0


class Collector:
    """Receipts and checkpoints as they arrive, each list in arrival order."""

    def __init__(self) -> None:
        self.received: list[StoredReceipt] = []
        self.checkpoints: list[LogCheckpoint] = []
        self._lock = threading.Lock()

    def __call__(self, item: StoredReceipt | LogCheckpoint) -> None:
        with self._lock:
            if isinstance(item, LogCheckpoint):
                self.checkpoints.append(item)
            else:
                self.received.append(item)

    def _wait(self, enough: Callable[[], bool]) -> None:
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            with self._lock:
                if enough():
                    return
            time.sleep(0.01)

    def wait_for(self, count: int) -> list[StoredReceipt]:
        self._wait(lambda: len({r.receipt_id for r in self.received}) >= count)
        with self._lock:
            return list(self.received)

    def wait_for_checkpoints(self, count: int) -> list[LogCheckpoint]:
        self._wait(lambda: len({c.tree_size for c in self.checkpoints}) >= count)
        with self._lock:
            return list(self.checkpoints)


def _first_delivery_order(received: list[StoredReceipt], customer_id: str) -> list[int]:
    seen: list[int] = []
    for receipt in received:
        if receipt.customer_id == customer_id and receipt.seq not in seen:
            seen.append(receipt.seq)
    return seen


def test_published_receipts_arrive_in_order_per_customer(broadcast: BroadcastUnderTest) -> None:
    collector = Collector()
    broadcast.subscribe(collector)
    a, b = Chain("cus_a"), Chain("cus_b")
    for _ in range(3):
        broadcast.port.publish([a.next().receipt, b.next().receipt])
    broadcast.port.publish([a.next().receipt])

    received = collector.wait_for(7)
    assert {r.receipt_id for r in received} == {r.receipt_id for r in a.made + b.made}
    assert _first_delivery_order(received, "cus_a") == [1, 2, 3, 4]
    assert _first_delivery_order(received, "cus_b") == [1, 2, 3]
    assert next(r for r in received if r.receipt_id == a.made[0].receipt_id) == a.made[0]


def test_a_failing_subscriber_does_not_stop_the_others(broadcast: BroadcastUnderTest) -> None:
    def failing(receipt: StoredReceipt) -> None:
        raise RuntimeError("subscriber bug")

    collector = Collector()
    broadcast.subscribe(failing)
    broadcast.subscribe(collector)
    chain = Chain("cus_a")
    broadcast.port.publish([chain.next().receipt, chain.next().receipt])
    broadcast.port.publish([chain.next().receipt])

    received = collector.wait_for(3)
    assert _first_delivery_order(received, "cus_a") == [1, 2, 3]


def test_a_receipts_leaf_index_arrives_as_published(broadcast: BroadcastUnderTest) -> None:
    collector = Collector()
    broadcast.subscribe(collector)
    chain = Chain("cus_a")
    before_log = chain.next().receipt
    in_log = dataclasses.replace(chain.next().receipt, log_index=12)
    broadcast.port.publish([before_log, in_log])

    received = {r.receipt_id: r for r in collector.wait_for(2)}
    assert received == {before_log.receipt_id: before_log, in_log.receipt_id: in_log}


def test_checkpoints_arrive_in_tree_order_told_apart_from_receipts(
    broadcast: BroadcastUnderTest,
) -> None:
    collector = Collector()
    broadcast.subscribe(collector)
    chain = Chain("log")  # a customer named like the log's ordering key
    broadcast.port.publish_checkpoints([log_checkpoint(1), log_checkpoint(2)])
    broadcast.port.publish([chain.next().receipt])
    broadcast.port.publish_checkpoints([log_checkpoint(3)])
    broadcast.port.publish([chain.next().receipt])

    checkpoints = collector.wait_for_checkpoints(3)
    first_seen: list[int] = []
    for checkpoint in checkpoints:
        if checkpoint.tree_size not in first_seen:
            first_seen.append(checkpoint.tree_size)
    assert first_seen == [1, 2, 3]
    assert {c.tree_size: c for c in checkpoints} == {n: log_checkpoint(n) for n in (1, 2, 3)}
    assert _first_delivery_order(collector.wait_for(2), "log") == [1, 2]
