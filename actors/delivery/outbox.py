"""OutboxRelay: delivers committed receipts from the ledger's outbox to their
sinks (broadcast, read model, archive) at least once, in order per customer,
and the receipt log's signed checkpoints to theirs, in tree order.

The outbox rows were written in the same transaction as the receipts, so a
crash between commit and delivery loses nothing; a crash between delivery
and acknowledgement delivers again, which every sink absorbs (idempotent by
receipt_id). A failing sink is retried with exponential backoff; one
customer's later messages wait behind its failed one (order per customer).

A message sink (`message_sinks`) takes a topic's raw messages instead of
receipts and answers for each one (customer webhooks: one customer's
failing endpoint must not hold back every other customer's events).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from actors.stage_owner import LoopThread, LoopThreads, StageOwner
from ledger import LedgerStore, LogCheckpoint, OutboxMessage, StoredReceipt, limits
from ledger.checkpoint_codec import decode_log_checkpoint
from ledger.clock import format_rfc3339, parse_rfc3339, utc_now_rfc3339
from ledger.receipt_codec import decode_stored_receipt
from supervisor import Link

log = structlog.get_logger(__name__)

Deliver = Callable[[Sequence[StoredReceipt]], None]
DeliverCheckpoints = Callable[[Sequence[LogCheckpoint]], None]


@dataclass(slots=True)
class MessageResults:
    """What a message sink did with a batch: the messages it delivered, and an
    error for each one that failed (retried with backoff). Any other message
    is left as it was, for the next pass."""

    delivered: list[OutboxMessage] = field(default_factory=list)
    failed: dict[str, tuple[OutboxMessage, str]] = field(default_factory=dict)


DeliverMessages = Callable[[Sequence[OutboxMessage]], MessageResults]

_BACKOFF_BASE_S = 0.5
_BACKOFF_MAX_S = 300.0


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.delivered = Counter(
            "billing_outbox_delivered_total",
            "Outbox messages delivered.",
            ["topic"],
            registry=registry,
        )
        self.failures = Counter(
            "billing_outbox_failures_total",
            "Failed outbox deliveries.",
            ["topic"],
            registry=registry,
        )
        self.backlog = Gauge(
            "billing_outbox_backlog",
            "Undelivered outbox messages.",
            ["topic"],
            registry=registry,
        )
        self.lag_s = Histogram(
            "billing_outbox_lag_seconds",
            "From commit to delivery of a receipt to a sink.",
            ["topic"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.oldest_age_s = Gauge(
            "billing_outbox_oldest_age_seconds",
            "Age of the oldest undelivered outbox message (0 when none): delivery lag.",
            ["topic"],
            registry=registry,
        )

    def oldest_pending(self, topic: str, created_at: str | None) -> None:
        """Record the oldest undelivered message of a topic (None: no backlog).
        Its age is taken at scrape time, so it keeps growing while the relay
        is stuck and cannot measure again."""
        created_s = None if created_at is None else parse_rfc3339(created_at).timestamp()
        self.oldest_age_s.labels(topic=topic).set_function(
            lambda: 0.0 if created_s is None else max(0.0, time.time() - created_s)
        )

    def record_delivered(self, topic: str, committed_at: Sequence[str]) -> None:
        """Count delivered receipts and their commit-to-delivery lag."""
        self.delivered.labels(topic=topic).inc(len(committed_at))
        now = time.time()
        lag = self.lag_s.labels(topic=topic)
        for created_at in committed_at:
            lag.observe(max(0.0, now - parse_rfc3339(created_at).timestamp()))


def run_passes(
    stopping: threading.Event,
    wake: threading.Event,
    one_pass: Callable[[], int],
    *,
    poll_interval_s: float,
    pass_interval_s: float,
) -> None:
    """Call `one_pass` (it returns how much it delivered) until `stopping`.

    An empty pass waits for `wake` (set after each commit) or the poll
    interval. Passes are spaced: each costs a read and, for the archive, a
    sync of the files it touched, so batches grow with load instead of
    delivering a few receipts at a time."""
    while not stopping.is_set():
        started = time.monotonic()
        if not one_pass():
            wake.wait(poll_interval_s)
            wake.clear()
        rest_s = pass_interval_s - (time.monotonic() - started)
        if rest_s > 0:
            stopping.wait(rest_s)


def backoff_s(attempts: int) -> float:
    return float(min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** max(0, attempts - 1)))


def _deliver_receipts(deliver: Deliver, messages: Sequence[OutboxMessage]) -> None:
    deliver([decode_stored_receipt(m.payload) for m in messages])


def _deliver_checkpoints(deliver: DeliverCheckpoints, messages: Sequence[OutboxMessage]) -> None:
    deliver([decode_log_checkpoint(m.payload) for m in messages])


class OutboxRelay(StageOwner):
    name = "outbox relay"

    def __init__(
        self,
        link: Link,
        *,
        store: LedgerStore,
        sinks: dict[str, Deliver],
        metrics: OutboxMetrics,
        wake: threading.Event,
        checkpoint_sinks: dict[str, DeliverCheckpoints] | None = None,
        poll_interval_s: float = 0.25,
        pass_interval_s: float = 0.2,
        batch_max: int = limits.outbox_batch_messages_max,
        message_sinks: dict[str, DeliverMessages] | None = None,
    ) -> None:
        super().__init__(link, stop_timeout_s=10.0)
        self._store = store
        # Each topic's sink, taking the topic's messages decoded.
        self._sinks: dict[str, Callable[[Sequence[OutboxMessage]], None]] = {
            topic: functools.partial(_deliver_receipts, deliver) for topic, deliver in sinks.items()
        }
        for topic, deliver_checkpoints in (checkpoint_sinks or {}).items():
            self._sinks[topic] = functools.partial(_deliver_checkpoints, deliver_checkpoints)
        self._message_sinks = dict(message_sinks or {})
        topics = [*self._sinks, *self._message_sinks]
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._pass_interval_s = pass_interval_s
        self._batch_max = batch_max
        self._wake = wake  # set by the ledger writer after each commit
        # One thread per topic: a slow sink (the archive, one object per
        # receipt) must not hold back the others; it once delayed the
        # broadcast by 13 s. A coordinator fans the writer's wake-ups out to
        # them and measures the backlog.
        self._topic_wakes = {topic: threading.Event() for topic in topics}
        loops = [LoopThread("outbox-relay", self._coordinate, self.report_crash, wake.set)]
        loops += [
            LoopThread(
                f"outbox-{topic}",
                functools.partial(self._relay_forever, topic),
                self.report_crash,
                self._topic_wakes[topic].set,
            )
            for topic in topics
        ]
        self._loops = LoopThreads(loops)

    def stage(self) -> LoopThreads:
        return self._loops

    def _coordinate(self, stopping: threading.Event) -> None:
        measure_every_s = 1.0
        measured_at = 0.0
        while not stopping.is_set():
            if time.monotonic() - measured_at >= measure_every_s:
                self._measure_backlog()
                measured_at = time.monotonic()
            if self._wake.wait(max(0.0, measured_at + measure_every_s - time.monotonic())):
                self._wake.clear()
                for topic_wake in self._topic_wakes.values():
                    topic_wake.set()

    def _relay_forever(self, topic: str, stopping: threading.Event) -> None:
        run_passes(
            stopping,
            self._topic_wakes[topic],
            functools.partial(self.relay_once, topic),
            poll_interval_s=self._poll_interval_s,
            pass_interval_s=self._pass_interval_s,
        )

    def _measure_backlog(self) -> None:
        """Every topic's backlog, including ones other relays deliver (Admin API)."""
        backlog = self._store.outbox_backlog()
        oldest = self._store.outbox_oldest()
        for topic in set(backlog) | set(oldest) | set(self._topic_wakes):
            self._metrics.backlog.labels(topic=topic).set(backlog.get(topic, 0))
            self._metrics.oldest_pending(topic, oldest.get(topic))

    def relay_once(self, topic: str) -> int:
        """Deliver one batch of due messages of a topic; returns how many."""
        messages = self._store.pending_outbox(topic, utc_now_rfc3339(), self._batch_max)
        if not messages:
            return 0
        if topic in self._message_sinks:
            return self._relay_messages(topic, messages)
        deliver = self._sinks[topic]
        # Delivered together, in the store's order (ordered per customer); a
        # failure retries the whole batch, so no customer's order is broken.
        ready = messages
        try:
            deliver(ready)
        except Exception as error:
            self._metrics.failures.labels(topic=topic).inc()
            log.warning("outbox.delivery_failed", topic=topic, error=repr(error))
            self._retry_later(ready, repr(error))
            return 0
        self._store.outbox_delivered([m.message_id for m in ready])
        self._metrics.record_delivered(topic, [m.created_at for m in ready])
        return len(ready)

    def _relay_messages(self, topic: str, messages: list[OutboxMessage]) -> int:
        try:
            results = self._message_sinks[topic](messages)
        except Exception as broke:  # the sink itself broke: as for a receipt sink
            results = MessageResults(failed={m.message_id: (m, repr(broke)) for m in messages})
        if results.delivered:
            self._store.outbox_delivered([m.message_id for m in results.delivered])
            self._metrics.record_delivered(topic, [m.created_at for m in results.delivered])
        for message, error in results.failed.values():
            self._metrics.failures.labels(topic=topic).inc()
            log.warning("outbox.delivery_failed", topic=topic, message_id=message.message_id,
                        error=error)
            self._retry_later([message], error)
        return len(results.delivered)

    def _retry_later(self, messages: Sequence[OutboxMessage], error: str) -> None:
        now = datetime.now(UTC)
        for message in messages:
            due = now + timedelta(seconds=backoff_s(message.attempts + 1))
            self._store.outbox_retry_later(message.message_id, error[:500], format_rfc3339(due))
