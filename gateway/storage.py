"""Chooses and opens the storage adapters named by the settings.

Embedded default: one SQLite file is the ledger of record and the read model,
no broadcast (nothing in the process reads one), append-only archive files. Production: Cloud
Spanner, Firestore, Pub/Sub and Cloud Storage, chosen by URL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from gateway.settings import Settings
from ledger import (
    CommitFeed,
    DisputeSubmissions,
    IntegrityHalts,
    LedgerStore,
    LogCheckpoint,
    LogReader,
    OutboxMessage,
    ReceiptArchive,
    ReceiptBroadcast,
    ReceiptReadModel,
    StoredReceipt,
)
from ledger.checkpoint_codec import encode_log_checkpoint
from ledger.feed_cursor import FeedCursor
from ledger.readers import open_archive, open_read_model, sqlite_path_of
from ledger.receipt_codec import encode_stored_receipt

if TYPE_CHECKING:
    from ledger.spanner import SpannerLedger

log = structlog.get_logger(__name__)

LEDGER_FILE = "ledger.sqlite3"
ARCHIVE_DIR = "archive"
# Beside the archive files it describes (they end in .jsonl).
ARCHIVE_CURSOR_FILE = ".ledger-cursor.json"
CHECKPOINT_CURSOR_FILE = ".log-cursor.json"

TOPIC_READ_MODEL = "receipt.read_model"
TOPIC_BROADCAST = "receipt.broadcast"
TOPIC_ARCHIVE = "receipt.archive"
# The receipt log's signed checkpoints: one message per commit per sink,
# written in the commit that stores the checkpoint.
TOPIC_CHECKPOINT_BROADCAST = "checkpoint.broadcast"
TOPIC_CHECKPOINT_ARCHIVE = "checkpoint.archive"
# One ordering key for every checkpoint: delivered in tree order.
CHECKPOINT_ORDERING_KEY = "log"


class StorageConfigError(ValueError):
    """A storage URL is malformed or names an unknown backend."""


@dataclass
class Adapters:
    store: LedgerStore
    read_model: ReceiptReadModel
    archive: ReceiptArchive
    # Integrity halts, recorded with the ledger of record.
    halts: IntegrityHalts
    # Our answers to Stripe disputes, recorded with the ledger of record.
    disputes: DisputeSubmissions
    # Sinks fed through the outbox (topic -> deliver), at least once, in order
    # per customer. The embedded read model is the store itself: no topic.
    sinks: dict[str, Callable[[Sequence[StoredReceipt]], None]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    # Called by the ledger writer right after each durable commit: for sinks
    # whose consumers live in this process, a durable outbox copy buys nothing.
    after_commit: list[Callable[[Sequence[StoredReceipt]], None]] = field(default_factory=list)
    # Embedded default: the archive follows the ledger's commit order itself
    # (actors.delivery.archive_feed) instead of going through the outbox.
    archive_feed: tuple[CommitFeed, FeedCursor] | None = None
    # The log's checkpoints, as `sinks` (outbox) and `archive_feed` (embedded).
    checkpoint_sinks: dict[str, Callable[[Sequence[LogCheckpoint]], None]] = field(
        default_factory=dict
    )
    checkpoint_feed: tuple[LogReader, FeedCursor] | None = None
    # The URL `store` was opened from: the background audit opens it again,
    # read-only, in its own process. None (an injected store, e.g. in
    # memory): the audit runs in the gateway's process.
    store_url: str | None = None
    # Where the audit's process reads the copies it compares with the
    # ledger: the archive (directory or gs:// URL) and the read model's URL
    # (None: the read model is the store). No archive: compared here.
    archive_location: str | None = None
    read_model_url: str | None = None

    def checkpoint_outbox_for(self, checkpoint: LogCheckpoint) -> list[OutboxMessage]:
        return [
            OutboxMessage(
                message_id=f"checkpoint:{checkpoint.tree_size}:{checkpoint.root_hash.hex()}:{topic}",
                topic=topic,
                ordering_key=CHECKPOINT_ORDERING_KEY,
                payload=encode_log_checkpoint(checkpoint),
                created_at=checkpoint.timestamp,
            )
            for topic in self.checkpoint_sinks
        ]

    def outbox_for(self, receipt: StoredReceipt) -> list[OutboxMessage]:
        return [
            OutboxMessage(
                message_id=f"{receipt.receipt_id}:{topic}",
                topic=topic,
                ordering_key=receipt.customer_id,
                payload=encode_stored_receipt(receipt),
                created_at=receipt.recorded_at,
            )
            for topic in self.sinks
        ]

    def close(self) -> None:
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()


def open_adapters(settings: Settings) -> Adapters:
    """The ledger of record and what follows it, each sink on its topic; on
    a failure to open one, those already open are closed."""
    adapters = _open_ledger(settings)
    try:
        _open_followers(settings, adapters)
    except BaseException:
        adapters.close()
        raise
    return adapters


def _open_followers(settings: Settings, adapters: Adapters) -> None:
    """The broadcast and the archive, and the topics that feed the copies."""
    from ledger.local import FileArchive
    from ledger.sqlite import SqliteLedger

    # Embedded: no broadcast. Nothing in this process reads one, and a
    # consumer elsewhere needs Pub/Sub (BILLING_BROADCAST) anyway.
    if settings.broadcast_url:
        broadcast = _open_broadcast(settings.broadcast_url)
        adapters.closers.append(broadcast.close)
        adapters.sinks[TOPIC_BROADCAST] = broadcast.publish
        adapters.checkpoint_sinks[TOPIC_CHECKPOINT_BROADCAST] = broadcast.publish_checkpoints
    if settings.archive_url:
        adapters.archive = _open_archive(settings.archive_url)
        adapters.archive_location = settings.archive_url
    archive = adapters.archive
    adapters.closers.append(archive.close)
    sqlite = adapters.store if isinstance(adapters.store, SqliteLedger) else None
    if sqlite is not None and isinstance(archive, FileArchive):
        adapters.archive_feed = (sqlite, FeedCursor(archive.root / ARCHIVE_CURSOR_FILE))
        adapters.checkpoint_feed = (
            sqlite,
            FeedCursor(archive.root / CHECKPOINT_CURSOR_FILE, id_field="root_hash"),
        )
        for topic in (TOPIC_ARCHIVE, TOPIC_CHECKPOINT_ARCHIVE):
            _drop_outbox_topic(sqlite, topic)
    else:
        adapters.sinks[TOPIC_ARCHIVE] = archive.append
        adapters.checkpoint_sinks[TOPIC_CHECKPOINT_ARCHIVE] = archive.append_checkpoints
    if sqlite is None:  # the read model is a separate copy
        adapters.sinks[TOPIC_READ_MODEL] = adapters.read_model.upsert_receipts


def _open_ledger(settings: Settings) -> Adapters:
    """The store, and the read model, halts and disputes that go with it
    (embedded: all four are the one SQLite file); the archive a file one."""
    from ledger.local import FileArchive
    from ledger.sqlite import SqliteLedger

    url = settings.store_url or f"sqlite:{settings.data_dir / LEDGER_FILE}"
    store = open_store(url)
    archive_dir = settings.data_dir / ARCHIVE_DIR
    archive = FileArchive(archive_dir)
    if isinstance(store, SqliteLedger):
        return Adapters(store, store, archive, halts=store, disputes=store, closers=[store.close],
                        store_url=url, archive_location=str(archive_dir))
    try:
        spanner = _spanner_ledger(store)
        read_model = _open_read_model(settings, store)
    except BaseException:
        store.close()
        raise
    return Adapters(store, read_model, archive, halts=spanner, disputes=spanner,
                    closers=[store.close, read_model.close], store_url=url,
                    archive_location=str(archive_dir), read_model_url=settings.read_model_url)


def open_store(url: str) -> LedgerStore:
    """The ledger of record a store URL names: sqlite:PATH or spanner://...
    (both adapters implement LedgerStore and LogReader)."""
    if url.startswith("sqlite:"):
        from ledger.sqlite import SqliteLedger

        return SqliteLedger.open(_sqlite_path(url))
    if url.startswith("spanner://"):
        from ledger.spanner import SpannerLedger

        return SpannerLedger.open(url)
    raise StorageConfigError(f"unknown store URL {url!r} (sqlite:PATH or spanner://...)")


def _spanner_ledger(store: LedgerStore) -> SpannerLedger:
    """The Spanner ledger of record, which also keeps the halts and the
    dispute answers, so that every gateway on it sees them."""
    from ledger.spanner import SpannerLedger

    if not isinstance(store, SpannerLedger):
        raise StorageConfigError(f"{type(store).__name__} keeps no integrity halts")
    return store


# Messages forgotten per round trip when a topic is dropped.
DROP_BATCH_MESSAGES = 2_000


def _drop_outbox_topic(store: LedgerStore, topic: str) -> None:
    """Forget a topic's undelivered messages that an earlier version queued
    (the archive's, now that it follows the ledger: whatever they carry is
    past the feed's cursor, so it is delivered anyway)."""
    dropped = 0
    while messages := store.pending_outbox(topic, "9999-12-31T23:59:59Z", DROP_BATCH_MESSAGES):
        store.outbox_delivered([message.message_id for message in messages])
        dropped += len(messages)
    if dropped:
        log.info("billing.outbox_topic_dropped", topic=topic, messages=dropped)


def _sqlite_path(url: str) -> Path:
    try:
        return sqlite_path_of(url)
    except ValueError as error:
        raise StorageConfigError(str(error)) from None


def _open_read_model(settings: Settings, store: LedgerStore) -> ReceiptReadModel:
    url = settings.read_model_url
    if url is None:
        raise StorageConfigError("a Spanner store needs a read model: BILLING_READ_MODEL")
    try:
        return open_read_model(url)
    except ValueError as error:
        raise StorageConfigError(str(error)) from None


def _open_broadcast(url: str) -> ReceiptBroadcast:
    if url.startswith("pubsub://"):
        from ledger.pubsub import PubSubBroadcast

        broadcast: ReceiptBroadcast = PubSubBroadcast.open(url)
        return broadcast
    raise StorageConfigError(f"unknown broadcast URL {url!r} (pubsub://projects/P/topics/T)")


def _open_archive(url: str) -> ReceiptArchive:
    if not url.startswith("gs://"):
        raise StorageConfigError(f"unknown archive URL {url!r} (gs://BUCKET)")
    return open_archive(url)
