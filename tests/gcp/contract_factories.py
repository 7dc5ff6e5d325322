"""Factories that put the Google Cloud adapters under the contract suites
(`tests/contract/conftest.py` registers them). Each yields a fresh, empty
adapter on its emulator: a new database, collection, topic or bucket."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ledger.firestore import FirestoreReadModel
from ledger.gcs import GcsArchive
from ledger.model import LogCheckpoint, StoredReceipt
from ledger.pubsub import PubSubBroadcast, decode_message
from ledger.spanner import SpannerLedger
from tests.gcp._data import PROJECT, unique

_subscriber_stop_timeout_s = 10.0


@contextlib.contextmanager
def make_spanner(request: pytest.FixtureRequest) -> Iterator[SpannerLedger]:
    request.getfixturevalue("spanner_emulator")
    url = f"spanner://projects/{PROJECT}/instances/test/databases/{unique('db')}"
    store = SpannerLedger.open(url, create=True, migrate=True)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def make_firestore(request: pytest.FixtureRequest) -> Iterator[FirestoreReadModel]:
    request.getfixturevalue("firestore_emulator")
    model = FirestoreReadModel.open(
        f"firestore://projects/{PROJECT}?collection={unique('receipts')}"
    )
    try:
        yield model
    finally:
        model.close()


@contextlib.contextmanager
def make_gcs(request: pytest.FixtureRequest) -> Iterator[GcsArchive]:
    request.getfixturevalue("storage_emulator")
    archive = GcsArchive.open(f"gs://{unique('archive')}", create_bucket=True)
    try:
        yield archive
    finally:
        archive.close()


@contextlib.contextmanager
def make_pubsub(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Yields a BroadcastUnderTest: `subscribe(fn)` adds an ordered
    subscription streamed on the client's threads; a failing `fn` nacks."""
    from google.cloud import pubsub_v1

    from tests.contract.conftest import BroadcastUnderTest

    request.getfixturevalue("pubsub_emulator")
    topic = f"projects/{PROJECT}/topics/{unique('receipts')}"
    broadcast = PubSubBroadcast.open(f"pubsub://{topic}", create_topic=True)
    subscriber = pubsub_v1.SubscriberClient()
    streams: list[Any] = []
    lock = threading.Lock()

    def subscribe(fn: Callable[[StoredReceipt | LogCheckpoint], None]) -> None:
        path = subscriber.subscription_path(PROJECT, unique("sub"))
        subscriber.create_subscription(
            request={"name": path, "topic": topic, "enable_message_ordering": True},
            timeout=30,
        )

        def on_message(message: Any) -> None:
            try:
                fn(decode_message(dict(message.attributes), message.data))
            except Exception:
                message.nack()
            else:
                message.ack()

        with lock:
            streams.append(subscriber.subscribe(path, callback=on_message))

    try:
        yield BroadcastUnderTest(port=broadcast, subscribe=subscribe)
    finally:
        broadcast.close()
        for stream in streams:
            stream.cancel()
            with contextlib.suppress(Exception):
                stream.result(timeout=_subscriber_stop_timeout_s)
        subscriber.close()
