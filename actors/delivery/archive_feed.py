"""ArchiveFeed: copies committed receipts to the archive by following the
ledger itself (embedded default: SQLite ledger, file archive).

The outbox gives a remote sink delivery at least once, but it costs a second
copy of every receipt written in the commit, read back, decoded and deleted
in another fsync'd transaction that competes with the charge path for the
write lock: with the archive as the only embedded sink, that was ~30% of
batch throughput (3,426 vs 2,467 events/s with no archive at all). Here the
ledger's commit order is the queue and a cursor file is the acknowledgement:
the same at-least-once, in-order delivery (the archive keeps one copy per
receipt id), and nothing on the commit path.

The log's signed checkpoints are followed the same way, from the stored
checkpoints (`LogReader.log_checkpoints`) with a cursor of their own (the
tree size and root hash last archived).
"""

from __future__ import annotations

import threading
import time

import structlog

from actors.delivery.outbox import OutboxMetrics, backoff_s, run_passes
from actors.stage_owner import LoopThread, StageOwner
from ledger import CommitFeed, LogReader, ReceiptArchive, limits
from ledger.feed_cursor import FeedCursor
from supervisor import Link

log = structlog.get_logger(__name__)

# The labels the archive's delivery metrics carry, as for the outbox topics.
ARCHIVE_TOPIC = "receipt.archive"
CHECKPOINT_ARCHIVE_TOPIC = "checkpoint.archive"


class _CheckpointFollower:
    """Copies the stored checkpoints to the archive, oldest first."""

    def __init__(
        self, log_reader: LogReader, archive: ReceiptArchive, cursor: FeedCursor, batch_max: int
    ) -> None:
        self._log = log_reader
        self._archive = archive
        self._cursor = cursor
        self._batch_max = batch_max
        self.size = 0
        self.failures = 0

    def start(self) -> None:
        self.size = self._cursor.start_at(self._root_hex_at)

    def _root_hex_at(self, tree_size: int) -> str | None:
        checkpoint = self._log.log_checkpoint(tree_size)
        return None if checkpoint is None else checkpoint.root_hash.hex()

    def feed_once(self, metrics: OutboxMetrics) -> int:
        checkpoints = self._log.log_checkpoints(self.size, self._batch_max)
        if not checkpoints:
            return 0
        try:
            self._archive.append_checkpoints(checkpoints)
        except Exception as error:
            self.failures += 1
            metrics.failures.labels(topic=CHECKPOINT_ARCHIVE_TOPIC).inc()
            log.warning(
                "archive_feed.checkpoints_failed", attempts=self.failures, error=repr(error)
            )
            return 0
        self.failures = 0
        last = checkpoints[-1]
        self._cursor.save(last.tree_size, last.root_hash.hex())
        self.size = last.tree_size
        metrics.record_delivered(CHECKPOINT_ARCHIVE_TOPIC, [c.timestamp for c in checkpoints])
        return len(checkpoints)

    def measure(self, metrics: OutboxMetrics) -> None:
        counted_max = limits.archive_checkpoints_backlog_counted_max
        pending = self._log.log_checkpoints(self.size, counted_max)
        metrics.backlog.labels(topic=CHECKPOINT_ARCHIVE_TOPIC).set(len(pending))
        metrics.oldest_pending(CHECKPOINT_ARCHIVE_TOPIC, pending[0].timestamp if pending else None)


class ArchiveFeed(StageOwner):
    name = "archive feed"

    def __init__(
        self,
        link: Link,
        *,
        feed: CommitFeed,
        archive: ReceiptArchive,
        cursor: FeedCursor,
        metrics: OutboxMetrics,
        wake: threading.Event,
        checkpoints: tuple[LogReader, FeedCursor] | None = None,
        poll_interval_s: float = 0.25,
        pass_interval_s: float = 0.2,
        batch_max: int = limits.archive_feed_batch_receipts_max,
        measure_every_s: float = 1.0,
    ) -> None:
        super().__init__(link, stop_timeout_s=10.0)
        self._feed = feed
        self._archive = archive
        self._cursor = cursor
        self._metrics = metrics
        self._wake = wake
        self._poll_interval_s = poll_interval_s
        self._pass_interval_s = pass_interval_s
        self._batch_max = batch_max
        self._measure_every_s = measure_every_s
        self._position = 0
        self._failures = 0
        self._checkpoints: _CheckpointFollower | None = None
        if checkpoints is not None:
            log_reader, checkpoint_cursor = checkpoints
            self._checkpoints = _CheckpointFollower(
                log_reader, archive, checkpoint_cursor, batch_max
            )
        self._loop = LoopThread("archive-feed", self._run, self.report_crash, wake.set)

    def stage(self) -> LoopThread:
        return self._loop

    def _run(self, stopping: threading.Event) -> None:
        self._position = self._cursor.start(self._feed)
        if self._checkpoints is not None:
            self._checkpoints.start()
        log.info("archive_feed.started", position=self._position)
        measured_at = 0.0

        def one_pass() -> int:
            nonlocal measured_at
            if time.monotonic() - measured_at >= self._measure_every_s:
                self._measure_backlog()
                measured_at = time.monotonic()
            delivered = self.feed_once() + self.feed_checkpoints_once()
            failures = max(self._failures, self._checkpoints.failures if self._checkpoints else 0)
            if failures:
                stopping.wait(backoff_s(failures))
            return delivered

        run_passes(
            stopping,
            self._wake,
            one_pass,
            poll_interval_s=self._poll_interval_s,
            pass_interval_s=self._pass_interval_s,
        )

    def feed_once(self) -> int:
        """Archive the next committed receipts; returns how many."""
        rows = self._feed.receipts_after(self._position, self._batch_max)
        if not rows:
            return 0
        receipts = [receipt for _, receipt in rows]
        try:
            self._archive.append(receipts)
        except Exception as error:
            self._failures += 1
            self._metrics.failures.labels(topic=ARCHIVE_TOPIC).inc()
            log.warning("archive_feed.append_failed", attempts=self._failures, error=repr(error))
            return 0
        self._failures = 0
        last_position, last = rows[-1]
        self._cursor.save(last_position, last.receipt_id)
        self._position = last_position
        self._metrics.record_delivered(ARCHIVE_TOPIC, [r.recorded_at for r in receipts])
        return len(receipts)

    def feed_checkpoints_once(self) -> int:
        """Archive the next stored checkpoints; returns how many."""
        if self._checkpoints is None:
            return 0
        return self._checkpoints.feed_once(self._metrics)

    def _measure_backlog(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.measure(self._metrics)
        count, oldest = self._feed.feed_backlog(self._position)
        self._metrics.backlog.labels(topic=ARCHIVE_TOPIC).set(count)
        self._metrics.oldest_pending(ARCHIVE_TOPIC, oldest)
