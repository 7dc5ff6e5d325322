"""The outbox relay crashing between delivery and acknowledgement.

A real OutboxRelay actor reads the outbox of a Spanner (emulator) ledger and
delivers to the Firestore read model and the Cloud Storage archive (their
emulators). Its store is wrapped so that the second `outbox_delivered` call
raises: the batch it acknowledges has reached its sink, but the outbox still
holds it, and the relay dies. A new relay then runs to an empty backlog.

At-least-once plus idempotent sinks: the un-acknowledged batch is delivered
twice, and the read model and the archive still hold every receipt exactly
once, none missing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from actors.delivery.outbox import OutboxMetrics, OutboxRelay
from gateway.storage import TOPIC_ARCHIVE, TOPIC_READ_MODEL, Adapters
from ledger import OutboxMessage, ReceiptWrite, StoredReceipt
from ledger.firestore import FirestoreReadModel
from ledger.gcs import GcsArchive
from ledger.spanner import SpannerLedger
from supervisor import Link
from tests.gcp import _data as d
from tests.gcp._data import PROJECT
from tests.polling import wait_for

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

CUSTOMERS = 3
RECEIPTS_PER_CUSTOMER = 12
BATCH_MAX = 5  # several batches per topic: the crash lands mid-backlog
DRAIN_TIMEOUT_S = 30.0


class SimulatedCrash(RuntimeError):
    """The process 'dies' after the sink took the batch, before the ack."""


class CrashBeforeAck:
    """The ledger store, except that one `outbox_delivered` call raises."""

    def __init__(self, store: SpannerLedger, crash_on_call: int) -> None:
        self._store = store
        self._crash_on_call = crash_on_call
        self.ack_calls = 0
        self.unacked: list[str] = []

    def outbox_delivered(self, message_ids: Sequence[str]) -> None:
        self.ack_calls += 1
        if self.ack_calls == self._crash_on_call:
            self.unacked = list(message_ids)
            raise SimulatedCrash(f"killed before acknowledging {len(message_ids)} messages")
        self._store.outbox_delivered(message_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@dataclass
class CountingSinks:
    """The real sinks, counting every receipt each one was handed."""

    read_model: FirestoreReadModel
    archive: GcsArchive
    handed: dict[str, list[str]] = field(default_factory=dict)

    def sinks(self) -> dict[str, Callable[[Sequence[StoredReceipt]], None]]:
        def counted(
            topic: str, deliver: Callable[[Sequence[StoredReceipt]], None]
        ) -> Callable[[Sequence[StoredReceipt]], None]:
            def run(receipts: Sequence[StoredReceipt]) -> None:
                deliver(receipts)
                self.handed.setdefault(topic, []).extend(r.receipt_id for r in receipts)

            return run

        return {
            TOPIC_READ_MODEL: counted(TOPIC_READ_MODEL, self.read_model.upsert_receipts),
            TOPIC_ARCHIVE: counted(TOPIC_ARCHIVE, self.archive.append),
        }


def outbox_for(receipt: StoredReceipt) -> list[OutboxMessage]:
    """As the composition root writes them: one message per sink topic."""
    topics = dict.fromkeys((TOPIC_READ_MODEL, TOPIC_ARCHIVE), lambda receipts: None)
    adapters = Adapters(store=None, read_model=None, archive=None, halts=None,
                        disputes=None, sinks=topics)  # type: ignore[arg-type]
    return adapters.outbox_for(receipt)


@pytest.fixture
def ledger(spanner_url: str) -> Iterator[SpannerLedger]:
    store = SpannerLedger.open(spanner_url)
    yield store
    store.close()


def start_relay(store: Any, sinks: CountingSinks, exits: list[Any]) -> Any:
    return OutboxRelay.start(
        Link("outbox", exits.append),
        store=store,
        sinks=sinks.sinks(),
        metrics=OutboxMetrics(CollectorRegistry()),
        wake=threading.Event(),
        poll_interval_s=0.05,
        batch_max=BATCH_MAX,
    )


def test_relay_killed_between_delivery_and_ack_redelivers_without_duplicates_or_loss(
    ledger: SpannerLedger, firestore_emulator: str, storage_emulator: str
) -> None:
    from google.cloud import firestore
    from google.cloud import storage as gcs

    collection, bucket = d.unique("receipts"), d.unique("archive")
    gcs_client = gcs.Client()
    gcs_client.create_bucket(bucket)
    sinks = CountingSinks(
        FirestoreReadModel.open(f"firestore://projects/{PROJECT}?collection={collection}"),
        GcsArchive.open(f"gs://{bucket}"),
    )
    try:
        chains: dict[str, list[StoredReceipt]] = {}
        for _ in range(CUSTOMERS):
            customer = d.customer()
            ledger.create_customer(customer)
            ledger.put_entitlement(d.entitlement(customer.customer_id))
            chains[customer.customer_id] = d.chain(customer.customer_id, RECEIPTS_PER_CUSTOMER)
        receipts = [r for chain in chains.values() for r in chain]
        ledger.commit_batch(
            [ReceiptWrite(r) for r in receipts], [m for r in receipts for m in outbox_for(r)]
        )
        assert ledger.outbox_backlog() == {
            TOPIC_READ_MODEL: len(receipts),
            TOPIC_ARCHIVE: len(receipts),
        }

        # First relay: delivers one batch, acknowledges it, delivers the next,
        # and dies acknowledging that one.
        crashing = CrashBeforeAck(ledger, crash_on_call=2)
        exits: list[Any] = []
        first = start_relay(crashing, sinks, exits)
        try:
            assert wait_for(lambda: bool(exits), DRAIN_TIMEOUT_S), "the relay did not die"
        finally:
            first.stop(block=False)
        assert "killed before acknowledging" in repr(exits[0]), exits
        assert len(crashing.unacked) == BATCH_MAX
        handed_before = {t: list(ids) for t, ids in sinks.handed.items()}
        delivered_unacked = {m.rsplit(":", 1)[0] for m in crashing.unacked}
        topic = crashing.unacked[0].rsplit(":", 1)[1]
        assert delivered_unacked <= set(handed_before[topic])  # it reached the sink
        backlog = ledger.outbox_backlog()
        # Only the acknowledged batches left the backlog: the crashed one did
        # not (the other topic's thread may ack once more before the stop).
        acked_batches = crashing.ack_calls - 1
        assert acked_batches >= 1
        assert sum(backlog.values()) == 2 * len(receipts) - BATCH_MAX * acked_batches

        # A new relay (the restarted process) drains the backlog.
        exits_second: list[Any] = []
        second = start_relay(ledger, sinks, exits_second)
        try:
            assert wait_for(lambda: sum(ledger.outbox_backlog().values()) == 0, DRAIN_TIMEOUT_S), (
                ledger.outbox_backlog()
            )
        finally:
            second.stop()
        assert not [e for e in exits_second if "normal" not in repr(e)], exits_second

        # The un-acknowledged batch went out twice; everything else once.
        for name in (TOPIC_READ_MODEL, TOPIC_ARCHIVE):
            twice = {r for r in sinks.handed[name] if sinks.handed[name].count(r) > 1}
            assert twice == (delivered_unacked if name == topic else set()), name
            assert set(sinks.handed[name]) == {r.receipt_id for r in receipts}, name

        # Each receipt exactly once in the read model and the archive.
        documents = [
            snapshot.id
            for snapshot in firestore.Client(project=PROJECT).collection(collection).stream()
        ]
        assert sorted(documents) == sorted(r.receipt_id for r in receipts)
        objects = [blob.name for blob in gcs_client.list_blobs(bucket)]
        assert len(objects) == len(set(objects)) == len(receipts)
        for customer_id, chain in chains.items():
            assert sinks.read_model.list_receipts(customer_id, 0, 1000) == chain
            assert sinks.archive.read_customer(customer_id) == chain
    finally:
        sinks.read_model.close()
        sinks.archive.close()
        gcs_client.close()
