"""`SpannerLedger.pending_outbox` with a large backlog, on the emulator.

The contract suite checks the rules on a handful of rows; here a few thousand
rows of several ordering keys wait, some keys blocked behind a message that is
not due yet, so a call reads several pages. The SQLite adapter, given the same
rows, is the reference: both must hand out the same messages in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import ledger.spanner as spanner_module
from ledger import LedgerStore, OutboxMessage
from ledger.spanner import SpannerLedger
from ledger.sqlite import SqliteLedger
from tests.contract._chain import outbox_message, ts

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(300)]

BACKLOG = 3_000
ENQUEUE_BATCH = 500  # several transactions: several commit timestamps
KEYS = 10
LIMIT = 1_000  # the most one Spanner call hands out
RETRY_AT = ts(60)
LATE_AT = ts(120)


@pytest.fixture
def stores(spanner_url: str, tmp_path: Path) -> Iterator[tuple[SpannerLedger, SqliteLedger]]:
    spanner = SpannerLedger.open(spanner_url)
    sqlite = SqliteLedger.open(tmp_path / "reference.sqlite3")
    yield spanner, sqlite
    spanner.close()
    sqlite.close()


def backlog(size: int) -> list[OutboxMessage]:
    """`size` receipts messages round-robin over KEYS customers, with an
    entitlements message now and then (another topic, never returned), and
    `cus_late`: a key whose first message is only due at LATE_AT."""
    messages = []
    for i in range(size):
        if i % 97 == 50:
            messages.append(outbox_message(f"e{i:05d}", f"cus_{i % KEYS}", topic="entitlements"))
        late = i % 89 == 7
        messages.append(
            outbox_message(
                f"m{i:05d}",
                "cus_late" if late else f"cus_{i % KEYS}",
                created_at=LATE_AT if i == 7 else ts(0),
            )
        )
    return messages


def build(store: LedgerStore, messages: Sequence[OutboxMessage], batch: int) -> None:
    for start in range(0, len(messages), batch):
        store.enqueue_outbox(messages[start : start + batch])


def ids(messages: Sequence[OutboxMessage]) -> list[str]:
    return [m.message_id for m in messages]


def drain(store: LedgerStore, now: str) -> list[str]:
    """What a relay delivers at `now`, call after call, until nothing is due."""
    delivered: list[str] = []
    while page := store.pending_outbox("receipts", now, LIMIT):
        assert len(page) <= LIMIT
        delivered += ids(page)
        store.outbox_delivered(ids(page))
    return delivered


def test_a_large_backlog_hands_out_due_messages_in_order_and_skips_only_blocked_keys(
    stores: tuple[SpannerLedger, SqliteLedger],
) -> None:
    spanner, sqlite = stores
    messages = backlog(BACKLOG)
    receipts = [m for m in messages if m.topic == "receipts"]
    # Early in the backlog, cus_3's message is postponed; cus_7's much later.
    postponed = {"cus_3": "m00003", "cus_7": "m01507"}
    for store in stores:
        build(store, messages, ENQUEUE_BATCH)
        for message_id in postponed.values():
            store.outbox_retry_later(message_id, "sink down", next_attempt_at=RETRY_AT)

    position = {m.message_id: n for n, m in enumerate(receipts)}
    first_blocked = {key: position[m] for key, m in postponed.items()}
    first_blocked["cus_late"] = position["m00007"]

    def blocked(m: OutboxMessage) -> bool:
        return position[m.message_id] >= first_blocked.get(m.ordering_key, len(receipts))

    expected_now = [m.message_id for m in receipts if not blocked(m)]
    assert len(expected_now) > LIMIT + 1_000  # a call must page past blocked rows

    first = spanner.pending_outbox("receipts", ts(1), LIMIT)
    assert ids(first) == expected_now[:LIMIT]
    assert ids(first) == ids(sqlite.pending_outbox("receipts", ts(1), LIMIT))
    assert first[0].payload == b"m00000"
    assert ids(spanner.pending_outbox("receipts", ts(1), 5)) == expected_now[:5]

    assert drain(spanner, ts(1)) == expected_now == drain(sqlite, ts(1))
    blocked_left = len(receipts) - len(expected_now)
    assert spanner.outbox_backlog()["receipts"] == blocked_left

    # The retries are due: cus_3 and cus_7 flow again, from the postponed
    # message on, in commit order; cus_late still waits for its first message.
    expected_retry = [m.message_id for m in receipts if blocked(m) and m.ordering_key in postponed]
    retry = spanner.pending_outbox("receipts", RETRY_AT, LIMIT)
    assert ids(retry) == expected_retry[:LIMIT]
    assert retry[0].message_id == "m00003"
    assert (retry[0].attempts, retry[0].last_error) == (1, "sink down")
    assert ids(retry) == ids(sqlite.pending_outbox("receipts", RETRY_AT, LIMIT))
    assert drain(spanner, RETRY_AT) == expected_retry == drain(sqlite, RETRY_AT)

    late = [m.message_id for m in receipts if m.ordering_key == "cus_late"]
    assert drain(spanner, LATE_AT) == late == drain(sqlite, LATE_AT)
    assert spanner.outbox_backlog().get("receipts", 0) == 0
    assert spanner.outbox_backlog()["entitlements"] == len(messages) - len(receipts)


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 40])
def test_small_pages_give_what_one_pass_gives(
    stores: tuple[SpannerLedger, SqliteLedger], monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Page boundaries inside one batch (same commit timestamp) and between
    batches neither skip nor repeat a row."""
    monkeypatch.setattr(spanner_module, "outbox_scan_page_rows", 3)
    spanner, sqlite = stores
    messages = backlog(40)
    for store in stores:
        build(store, messages, 7)
        store.outbox_retry_later("m00003", "sink down", next_attempt_at=RETRY_AT)
    for now in (ts(1), RETRY_AT, LATE_AT):
        assert ids(spanner.pending_outbox("receipts", now, limit)) == ids(
            sqlite.pending_outbox("receipts", now, limit)
        )
    assert drain(spanner, LATE_AT) == drain(sqlite, LATE_AT)
