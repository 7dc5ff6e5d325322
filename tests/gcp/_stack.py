"""The Google Cloud stack of a `billing serve` deployment, on the emulators:
fresh resources, and the URLs a deployment would be given. The `stack` and
`two_servers` fixtures (tests/gcp/conftest.py) build on it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from tests.gcp._data import PROJECT, unique
from tests.integration._proc import billing_command, server_env

__all__ = ["GcpStack", "migrate", "provision"]


@dataclass(frozen=True)
class GcpStack:
    """The URLs a deployment would be given, on freshly created resources."""

    store: str
    read_model: str
    broadcast: str
    archive: str
    subscription: str  # an ordered pull subscription on the broadcast topic
    bucket: str
    collection: str

    def env(self) -> dict[str, str]:
        return {
            "BILLING_READ_MODEL": self.read_model,
            "BILLING_BROADCAST": self.broadcast,
            "BILLING_ARCHIVE": self.archive,
            # Every outbox row of a charge race is due at once: poll often.
            "BILLING_RECONCILE_INTERVAL_S": "3600",
        }


def migrate(store_url: str) -> None:
    """`billing migrate --store URL --create`, as a deploy step would run it."""
    result = subprocess.run(
        [*billing_command(), "migrate", "--store", store_url, "--create"],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(None),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def provision() -> GcpStack:
    """Fresh resources on the emulators named by the *_EMULATOR_HOST variables."""
    from google.cloud import pubsub_v1
    from google.cloud import storage as gcs

    database = unique("db")
    topic, subscription, bucket, collection = (
        unique("receipts"),
        unique("sub"),
        unique("archive"),
        unique("receipts"),
    )
    store = f"spanner://projects/{PROJECT}/instances/serve/databases/{database}"
    migrate(store)
    publisher = pubsub_v1.PublisherClient()
    topic_path = publisher.topic_path(PROJECT, topic)
    publisher.create_topic(name=topic_path, timeout=30)
    subscriber = pubsub_v1.SubscriberClient()
    subscription_path = subscriber.subscription_path(PROJECT, subscription)
    subscriber.create_subscription(
        request={"name": subscription_path, "topic": topic_path, "enable_message_ordering": True},
        timeout=30,
    )
    subscriber.close()
    client = gcs.Client()
    client.create_bucket(bucket)
    client.close()
    return GcpStack(
        store=store,
        read_model=f"firestore://projects/{PROJECT}?collection={collection}",
        broadcast=f"pubsub://projects/{PROJECT}/topics/{topic}",
        archive=f"gs://{bucket}",
        subscription=subscription_path,
        bucket=bucket,
        collection=collection,
    )
