"""Firestore read model, Pub/Sub broadcast and Cloud Storage archive on their
emulators: the behaviour each adapter promises beyond the shared contract."""

from __future__ import annotations

import time

import pytest

from ledger import StoreUnavailable
from ledger._gcp_receipts import receipt_from_text_fields
from ledger.firestore import FirestoreReadModel
from ledger.gcs import RECEIPT_RETENTION_S, GcsArchive
from ledger.pubsub import PubSubBroadcast
from tests.gcp import _data as d
from tests.gcp._data import PROJECT

pytestmark = pytest.mark.emulator


def test_firestore_upserts_are_idempotent_and_pages_follow_seq(firestore_emulator: str) -> None:
    model = FirestoreReadModel.open(
        f"firestore://projects/{PROJECT}?collection={d.unique('receipts')}"
    )
    try:
        cid, other = d.unique("cus"), d.unique("cus")
        receipts = d.chain(cid, 7)
        model.upsert_receipts(list(reversed(receipts)) + d.chain(other, 2))
        model.upsert_receipts(receipts[2:5] + receipts[2:3])  # again, with a duplicate
        assert model.list_receipts(cid, 0, 100) == receipts
        assert model.list_receipts(cid, 2, 3) == receipts[2:5]
        assert model.list_receipts(cid, 7, 10) == []
        assert model.get_receipt(receipts[3].receipt_id) == receipts[3]
        assert model.get_receipt("rcpt_missing") is None
    finally:
        model.close()


def test_pubsub_delivers_each_customers_receipts_in_chain_order(pubsub_emulator: str) -> None:
    from google.cloud import pubsub_v1

    topic = d.unique("receipts")
    broadcast = PubSubBroadcast.open(
        f"pubsub://projects/{PROJECT}/topics/{topic}", create_topic=True
    )
    assert broadcast.ensure_topic() is False  # already there: creating again is a no-op
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(PROJECT, d.unique("sub"))
    subscriber.create_subscription(
        request={
            "name": subscription,
            "topic": f"projects/{PROJECT}/topics/{topic}",
            "enable_message_ordering": True,
        },
        timeout=30,
    )
    customers = [d.unique("cus") for _ in range(3)]
    chains = {c: d.chain(c, 15) for c in customers}
    try:
        # Interleaved across customers, in several publish calls.
        for start in range(0, 15, 5):
            broadcast.publish(
                [r for i in range(start, start + 5) for r in (chains[c][i] for c in customers)]
            )
        seen: dict[str, list[int]] = {c: [] for c in customers}
        deadline = time.monotonic() + 30
        while sum(map(len, seen.values())) < 45 and time.monotonic() < deadline:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 50}, timeout=10
            )
            for received in response.received_messages:
                message = received.message
                assert message.ordering_key in seen
                receipt = receipt_from_text_fields(dict(message.attributes), message.data)
                assert receipt == chains[message.ordering_key][receipt.seq - 1]
                seen[message.ordering_key].append(receipt.seq)
            if response.received_messages:
                subscriber.acknowledge(
                    request={
                        "subscription": subscription,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    },
                    timeout=10,
                )
        assert seen == {c: list(range(1, 16)) for c in customers}
    finally:
        broadcast.close()
        subscriber.close()


def test_gcs_appends_are_idempotent_and_read_back_in_seq_order(storage_emulator: str) -> None:
    bucket = d.unique("archive")
    archive = GcsArchive.open(
        f"gs://{bucket}/receipts", create_bucket=True, retention_period_s=RECEIPT_RETENTION_S
    )
    try:
        cid = d.unique("cus")
        receipts = d.chain(cid, 12)  # seq 10..12 sort after 9 only when zero-padded
        archive.append(receipts[:8])
        archive.append(receipts[5:] + receipts[:2])  # overlapping retry
        assert archive.read_customer(cid) == receipts
        assert archive.read_customer(d.unique("cus")) == []

        names = [b.name for b in archive._client.list_blobs(bucket, timeout=30)]
        assert len(names) == 12
        assert names[0] == f"receipts/{cid}/{1:016d}-{receipts[0].receipt_id}.json"

        assert archive.retention_period_s() == RECEIPT_RETENTION_S
        with pytest.raises(StoreUnavailable, match="does not exist"):
            GcsArchive.open(f"gs://{d.unique('missing')}")
    finally:
        archive.close()
