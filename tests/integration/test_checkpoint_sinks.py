"""Checkpoints through the outbox: with Cloud Storage as the archive and
Pub/Sub as the broadcast (their emulators), each commit writes its signed
checkpoint's outbox messages with it, and the relay delivers every
checkpoint to both, verifying with the service's JWKS alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from crypto import verify_checkpoint
from ledger import LogCheckpoint
from ledger.gcs import GcsArchive
from ledger.pubsub import PubSubBroadcast, decode_message
from tests.emulators import pubsub_emulator, storage_emulator  # noqa: F401  (fixtures)
from tests.gcp._data import PROJECT, unique
from tests.integration.conftest import Service

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(120)]

WAIT_S = 30.0


@dataclass(frozen=True)
class Sinks:
    archive_url: str
    broadcast_url: str
    subscription: str  # an ordered subscription on the broadcast topic


@pytest.fixture
def sinks(storage_emulator: str, pubsub_emulator: str) -> Iterator[Sinks]:  # noqa: F811
    from google.cloud import pubsub_v1

    topic = f"projects/{PROJECT}/topics/{unique('receipts')}"
    PubSubBroadcast.open(f"pubsub://{topic}", create_topic=True).close()
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(PROJECT, unique("sub"))
    subscriber.create_subscription(
        request={"name": subscription, "topic": topic, "enable_message_ordering": True},
        timeout=30,
    )
    subscriber.close()
    bucket = unique("archive")
    GcsArchive.open(f"gs://{bucket}", create_bucket=True).close()
    yield Sinks(f"gs://{bucket}", f"pubsub://{topic}", subscription)


@pytest.fixture
def settings_overrides(sinks: Sinks) -> dict[str, Any]:
    return {"archive_url": sinks.archive_url, "broadcast_url": sinks.broadcast_url}


def _archived(url: str) -> list[LogCheckpoint]:
    archive = GcsArchive.open(url)
    try:
        return archive.read_checkpoints(0, 1_000)
    finally:
        archive.close()


def _broadcast_checkpoints(subscription: str, count: int) -> list[LogCheckpoint]:
    """Checkpoints pulled from the subscription (receipts skipped), in
    arrival order, until `count` distinct tree sizes came or time ran out."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    got: list[LogCheckpoint] = []
    try:
        for _ in range(60):
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 200}, timeout=5
            )
            ack_ids = []
            for received in response.received_messages:
                message = received.message
                decoded = decode_message(dict(message.attributes), message.data)
                if isinstance(decoded, LogCheckpoint):
                    got.append(decoded)
                ack_ids.append(received.ack_id)
            if ack_ids:
                subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
            if len({c.tree_size for c in got}) >= count:
                break
    finally:
        subscriber.close()
    return got


async def test_every_checkpoint_reaches_the_archive_and_the_broadcast(
    service: Service, sinks: Sinks
) -> None:
    customers = [await service.create_customer() for _ in range(3)]
    await asyncio.gather(
        *(service.post_event(c, service.event(c)) for c in customers for _ in range(8))
    )
    for customer in customers:
        assert (await service.post_event(customer, service.event(customer)))[0] == 202
    async with service.session.get(
        "/v1/log/checkpoints", params={"limit": 1000}, headers=service.admin
    ) as response:
        history = [c["checkpoint"] for c in (await response.json())["data"]]
    jwks = await service.jwks()
    loop = asyncio.get_running_loop()

    deadline = loop.time() + WAIT_S
    while len(archived := await loop.run_in_executor(None, _archived, sinks.archive_url)) < len(
        history
    ):
        assert loop.time() < deadline, f"{len(archived)} of {len(history)} archived"
        await asyncio.sleep(0.1)
    assert [c.jws for c in archived] == history
    assert verify_checkpoint(archived[-1].jws, jwks).tree_size == 27

    broadcast = await loop.run_in_executor(
        None, _broadcast_checkpoints, sinks.subscription, len(history)
    )
    first_seen: list[str] = []
    for checkpoint in broadcast:
        assert verify_checkpoint(checkpoint.jws, jwks).root_hash == checkpoint.root_hash
        if checkpoint.jws not in first_seen:
            first_seen.append(checkpoint.jws)
    assert first_seen == history  # every one, in tree order
