"""The outbox relay exports, per topic, its backlog and its lag: the age of
the oldest undelivered message. An SRE alerts on both; they must rise while a
sink is down and fall to zero once it delivers again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from actors.delivery.outbox import OutboxMetrics, OutboxRelay
from ledger import OutboxMessage, StoredReceipt
from ledger.clock import format_rfc3339
from ledger.receipt_codec import encode_stored_receipt
from ledger.sqlite import SqliteLedger
from supervisor import Link
from tests.contract._chain import Chain
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(60)

AGE_S = 90.0
WAIT_S = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger.open(tmp_path / "ledger.sqlite3")
    yield ledger
    ledger.close()


def test_backlog_and_lag_rise_while_a_sink_is_down_and_fall_to_zero_once_delivered(
    store: SqliteLedger,
) -> None:
    created = format_rfc3339(datetime.now(UTC) - timedelta(seconds=AGE_S))
    chain = Chain("cus_a")
    messages = [
        OutboxMessage(
            message_id=f"m{i}",
            topic="receipts",
            ordering_key="cus_a",
            payload=encode_stored_receipt(chain.next().receipt),
            created_at=created,
        )
        for i in range(3)
    ]
    store.enqueue_outbox(messages)
    sink_up = threading.Event()
    delivered: list[StoredReceipt] = []

    def sink(receipts: Sequence[StoredReceipt]) -> None:
        if not sink_up.is_set():
            raise ConnectionError("sink down")
        delivered.extend(receipts)

    registry = CollectorRegistry()

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"topic": "receipts"})

    exits: list[Any] = []
    relay = OutboxRelay.start(
        Link("outbox", exits.append),
        store=store,
        sinks={"receipts": sink},
        metrics=OutboxMetrics(registry),
        wake=threading.Event(),
        poll_interval_s=0.05,
    )
    try:
        assert wait_for(lambda: sample("billing_outbox_backlog") == 3, WAIT_S)
        # The messages' age, not the time since the relay noticed them.
        lag_s = sample("billing_outbox_oldest_age_seconds")
        assert lag_s is not None and AGE_S <= lag_s < AGE_S + WAIT_S
        time.sleep(0.2)  # read at scrape time: it keeps growing between measurements
        assert sample("billing_outbox_oldest_age_seconds") > lag_s  # type: ignore[operator]

        sink_up.set()
        assert wait_for(lambda: sample("billing_outbox_backlog") == 0, WAIT_S), sample(
            "billing_outbox_backlog"
        )
        assert wait_for(lambda: sample("billing_outbox_oldest_age_seconds") == 0.0, WAIT_S)
    finally:
        relay.stop()
    assert [r.seq for r in delivered] == [1, 2, 3]
    assert not [e for e in exits if "normal" not in repr(e)], exits


def test_a_slow_sink_does_not_hold_back_the_other_topics(store: SqliteLedger) -> None:
    """Each topic is relayed on its own: the archive taking seconds per pass
    must not delay the broadcast."""
    created = format_rfc3339(datetime.now(UTC))
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(3)]
    store.enqueue_outbox(
        [
            OutboxMessage(f"{r.receipt_id}:{topic}", topic, "cus_a", payload, created)
            for r in receipts
            for topic, payload in (
                ("slow", encode_stored_receipt(r)),
                ("fast", encode_stored_receipt(r)),
            )
        ]
    )
    release_slow = threading.Event()
    slow_calls: list[int] = []
    fast: list[StoredReceipt] = []

    def slow_sink(batch: Sequence[StoredReceipt]) -> None:
        slow_calls.append(len(batch))
        release_slow.wait(WAIT_S)  # stuck until the test has seen the fast topic

    exits: list[Any] = []
    relay = OutboxRelay.start(
        Link("outbox", exits.append),
        store=store,
        sinks={"slow": slow_sink, "fast": fast.extend},
        metrics=OutboxMetrics(CollectorRegistry()),
        wake=threading.Event(),
        poll_interval_s=0.05,
    )
    try:
        assert wait_for(lambda: bool(slow_calls), WAIT_S)  # the slow sink is busy...
        assert wait_for(lambda: len(fast) == 3, WAIT_S / 2)  # ...and the fast one delivered
        assert not release_slow.is_set()
    finally:
        release_slow.set()
        relay.stop()
    assert [r.seq for r in fast] == [1, 2, 3]
    assert not [e for e in exits if "normal" not in repr(e)], exits
