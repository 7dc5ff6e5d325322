"""The embedded archive follows the ledger's commit order: every committed
receipt reaches the archive once, in order, across restarts, a failing disk
and a rebuilt ledger file, and an SRE sees its backlog and lag."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from actors.delivery.archive_feed import ARCHIVE_TOPIC, CHECKPOINT_ARCHIVE_TOPIC, ArchiveFeed
from actors.delivery.outbox import OutboxMetrics
from ledger import LogCheckpoint, ReceiptWrite, StoredReceipt, StoreUnavailable
from ledger.feed_cursor import FeedCursor
from ledger.local import FileArchive
from ledger.sqlite import SqliteLedger
from supervisor import Link
from tests.contract._chain import Chain, customer, entitlement
from tests.contract._log import LogWriter
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger.open(tmp_path / "ledger.sqlite3")
    for customer_id in ("cus_a", "cus_b"):
        ledger.create_customer(customer(customer_id))
        ledger.put_entitlement(entitlement(customer_id, quota_minor=None))
    yield ledger
    ledger.close()


def _commit(store: SqliteLedger, chain: Chain, count: int) -> list[StoredReceipt]:
    writes = [chain.next() for _ in range(count)]
    store.commit_batch(writes, [])
    return [write.receipt for write in writes]


class Running:
    """An ArchiveFeed started for a test, stopped when the block ends."""

    def __init__(
        self,
        store: SqliteLedger,
        archive: Any,
        cursor: FeedCursor,
        checkpoint_cursor: FeedCursor | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.wake = threading.Event()
        self.exits: list[Any] = []
        self._args = dict(
            feed=store,
            archive=archive,
            cursor=cursor,
            metrics=OutboxMetrics(self.registry),
            wake=self.wake,
            poll_interval_s=0.05,
            pass_interval_s=0.0,
            measure_every_s=0.05,
            checkpoints=None if checkpoint_cursor is None else (store, checkpoint_cursor),
        )

    def __enter__(self) -> Running:
        self.ref = ArchiveFeed.start(Link("archive", self.exits.append), **self._args)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ref.stop()
        assert not [e for e in self.exits if "normal" not in repr(e)], self.exits

    def sample(self, name: str, topic: str = ARCHIVE_TOPIC) -> float | None:
        return self.registry.get_sample_value(name, {"topic": topic})


def _archived(root: Path, customer_id: str) -> list[StoredReceipt]:
    archive = FileArchive(root)
    try:
        return archive.read_customer(customer_id)
    finally:
        archive.close()


def test_committed_receipts_reach_the_archive_once_in_order_across_restarts(
    store: SqliteLedger, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    cursor = FeedCursor(root / ".cursor.json")
    a, b = Chain("cus_a"), Chain("cus_b")
    first = _commit(store, a, 3) + _commit(store, b, 2)
    archive = FileArchive(root)
    with Running(store, archive, cursor) as feed:
        assert wait_for(lambda: feed.sample("billing_outbox_delivered_total") == 5, WAIT_S)
        later = _commit(store, a, 2)
        feed.wake.set()  # as the ledger writer does after each commit
        assert wait_for(lambda: feed.sample("billing_outbox_delivered_total") == 7, WAIT_S)
        assert wait_for(lambda: feed.sample("billing_outbox_backlog") == 0, WAIT_S)
    archive.close()

    # Committed while the feed was down: delivered after a restart, and only
    # those (the cursor file says where it stopped).
    while_down = _commit(store, b, 2)
    archive = FileArchive(root)
    with Running(store, archive, cursor) as feed:
        assert wait_for(lambda: feed.sample("billing_outbox_delivered_total") == 2, WAIT_S)
    archive.close()

    assert _archived(root, "cus_a") == first[:3] + later
    assert _archived(root, "cus_b") == first[3:] + while_down
    lines = (root / "cus_a.jsonl").read_bytes().splitlines()
    assert len(lines) == 5  # one line per receipt: nothing delivered twice


class FlakyArchive:
    """A disk that fails its first appends, then works."""

    def __init__(self, inner: FileArchive, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def append(self, receipts: Sequence[StoredReceipt]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("archive write failed: [Errno 28] No space left on device")
        self.inner.append(receipts)

    def read_customer(
        self, customer_id: str, known: Sequence[StoredReceipt] = ()
    ) -> list[StoredReceipt]:
        return self.inner.read_customer(customer_id, known)

    def close(self) -> None:
        self.inner.close()


def test_a_failing_archive_is_retried_and_loses_nothing(
    store: SqliteLedger, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    made = _commit(store, Chain("cus_a"), 4)
    archive = FlakyArchive(FileArchive(root), failures=1)
    with Running(store, archive, FeedCursor(root / ".cursor.json")) as feed:
        # While it fails, the backlog shows what waits.
        assert wait_for(lambda: feed.sample("billing_outbox_failures_total") == 1, WAIT_S)
        assert wait_for(lambda: feed.sample("billing_outbox_delivered_total") == 4, WAIT_S)
    archive.close()
    assert _archived(root, "cus_a") == made


def test_backlog_and_lag_show_receipts_not_yet_archived(
    store: SqliteLedger, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    _commit(store, Chain("cus_a"), 3)
    archive = FlakyArchive(FileArchive(root), failures=10_000)
    with Running(store, archive, FeedCursor(root / ".cursor.json")) as feed:
        assert wait_for(lambda: feed.sample("billing_outbox_backlog") == 3, WAIT_S)
        # The receipts' own age (recorded in 2026-01-01), not time since noticed.
        age_s = feed.sample("billing_outbox_oldest_age_seconds")
        assert age_s is not None and age_s > 24 * 3600
    archive.close()


def test_a_rebuilt_ledger_is_followed_again_without_duplicates(
    store: SqliteLedger, tmp_path: Path
) -> None:
    """VACUUM may renumber the positions the cursor names: the feed notices
    and goes over everything again, and the archive still holds one copy."""
    root = tmp_path / "archive"
    cursor = FeedCursor(root / ".cursor.json")
    made = _commit(store, Chain("cus_a"), 3)
    archive = FileArchive(root)
    with Running(store, archive, cursor) as feed:
        assert wait_for(lambda: feed.sample("billing_outbox_delivered_total") == 3, WAIT_S)
    archive.close()
    cursor.save(2, "rcpt_not_there")  # what a renumbering looks like to the cursor
    archive = FileArchive(root)
    with Running(store, archive, cursor) as feed:
        assert wait_for(lambda: feed.sample("billing_outbox_delivered_total") == 3, WAIT_S)
    archive.close()
    assert len((root / "cus_a.jsonl").read_bytes().splitlines()) == 3
    assert _archived(root, "cus_a") == made


def test_the_cursor_starts_over_when_missing_damaged_or_stale(
    store: SqliteLedger, tmp_path: Path
) -> None:
    cursor = FeedCursor(tmp_path / "cursor.json")
    assert cursor.start(store) == 0  # missing
    made = _commit(store, Chain("cus_a"), 2)
    position, receipt = store.receipts_after(0, 10)[-1]
    assert receipt == made[-1]
    cursor.save(position, receipt.receipt_id)
    assert cursor.start(store) == position
    cursor.save(position, "rcpt_other")
    assert cursor.start(store) == 0  # names another receipt
    cursor.path.write_text('{"position": "x"')
    assert cursor.start(store) == 0  # damaged


def test_the_commit_feed_is_the_commit_order_with_a_backlog(store: SqliteLedger) -> None:
    a, b = Chain("cus_a"), Chain("cus_b")
    order = _commit(store, a, 2) + _commit(store, b, 1) + _commit(store, a, 1)
    rows = store.receipts_after(0, 100)
    assert [receipt for _, receipt in rows] == order
    positions = [position for position, _ in rows]
    assert positions == sorted(positions)
    assert store.receipt_id_at(positions[1]) == order[1].receipt_id
    assert [r for _, r in store.receipts_after(positions[1], 1)] == [order[2]]
    assert store.feed_backlog(positions[1]) == (2, order[2].recorded_at)
    assert store.feed_backlog(positions[-1]) == (0, None)
    store.commit_batch([ReceiptWrite(a.next().receipt)], [])
    assert store.feed_backlog(positions[-1])[0] == 1


def _commit_logged(store: SqliteLedger, log: LogWriter, chain: Chain, count: int) -> LogCheckpoint:
    writes, append = log.append([chain.next() for _ in range(count)])
    store.commit_batch(writes, [], append)
    log.landed(writes)
    return append.checkpoint


def _archived_checkpoints(root: Path) -> list[LogCheckpoint]:
    archive = FileArchive(root)
    try:
        return archive.read_checkpoints(0, 1_000)
    finally:
        archive.close()


def test_stored_checkpoints_reach_the_archive_once_with_their_own_cursor(
    store: SqliteLedger, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    cursors = FeedCursor(root / ".cursor.json"), FeedCursor(root / ".log.json", "root_hash")
    log, chain = LogWriter(), Chain("cus_a")
    made = [_commit_logged(store, log, chain, n) for n in (2, 1, 3)]
    archive = FileArchive(root)
    delivered = "billing_outbox_delivered_total"
    with Running(store, archive, *cursors) as feed:
        assert wait_for(lambda: feed.sample(delivered, CHECKPOINT_ARCHIVE_TOPIC) == 3, WAIT_S)
        made.append(_commit_logged(store, log, chain, 1))
        feed.wake.set()
        assert wait_for(lambda: feed.sample(delivered, CHECKPOINT_ARCHIVE_TOPIC) == 4, WAIT_S)
        assert feed.sample("billing_outbox_delivered_total") == 7  # the receipts too
    archive.close()

    while_down = _commit_logged(store, log, chain, 2)
    cursors[1].save(3, "00" * 32)  # names another root: the log was replaced
    archive = FileArchive(root)
    with Running(store, archive, *cursors) as feed:
        # Everything again (the archive keeps one copy), then the new one.
        assert wait_for(lambda: feed.sample(delivered, CHECKPOINT_ARCHIVE_TOPIC) == 5, WAIT_S)
        assert wait_for(
            lambda: feed.sample("billing_outbox_backlog", CHECKPOINT_ARCHIVE_TOPIC) == 0, WAIT_S
        )
    archive.close()
    assert _archived_checkpoints(root) == [*made, while_down]
    assert [c.tree_size for c in made] == [2, 3, 6, 7]
