"""Pub/Sub receipt broadcast (the ReceiptBroadcast port).

Each receipt is one message: the body is the signed receipt JSON exactly as
served, the attributes are its index fields (so a consumer can rebuild the
StoredReceipt without parsing), and the ordering key is the customer, with
message ordering enabled: subscribers with ordering see a customer's receipts
in chain order. `publish` returns only when Pub/Sub accepted every message
(or raises StoreUnavailable, and the outbox retries: at least once).

The receipt log's signed checkpoints go out on the same topic: the body is
the compact JWS, the attributes its index fields plus `kind=log_checkpoint`
(receipts carry no `kind`), and the ordering key is `log`, so an ordered
subscriber sees them in tree order. `decode_message` tells the two apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import structlog
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient
from google.cloud.pubsub_v1.types import PublisherOptions

from ledger._gcp_client import Lifecycle
from ledger._gcp_receipts import receipt_from_text_fields, receipt_text_fields
from ledger.checkpoint_codec import (
    CHECKPOINT_KIND,
    checkpoint_from_text_fields,
    checkpoint_text_fields,
)
from ledger.errors import StoreUnavailable
from ledger.gcp_urls import parse_pubsub_url
from ledger.model import LogCheckpoint, StoredReceipt

__all__ = ["LOG_ORDERING_KEY", "PubSubBroadcast", "decode_message"]

log = structlog.get_logger(__name__)

publish_timeout_s: Final = 30.0
admin_timeout_s: Final = 30.0
# Customer ids are ordering keys too: "log" stays apart from them only by
# the `kind` attribute, which is what a consumer reads first.
LOG_ORDERING_KEY: Final = "log"

_Message = tuple[str, bytes, dict[str, str]]  # ordering key, body, attributes


def decode_message(attributes: Mapping[str, str], data: bytes) -> StoredReceipt | LogCheckpoint:
    """A broadcast message as what it announces: a receipt or a checkpoint."""
    if attributes.get("kind") == CHECKPOINT_KIND:
        return checkpoint_from_text_fields(attributes, data)
    return receipt_from_text_fields(attributes, data)


class PubSubBroadcast:
    """ReceiptBroadcast on Pub/Sub.

    `PubSubBroadcast.open("pubsub://projects/P/topics/T", create_topic=False)`,
    or wrap a `pubsub_v1.PublisherClient` built with message ordering enabled.
    """

    def __init__(
        self,
        publisher: Any,
        topic_path: str,
        *,
        create_topic: bool = False,
        publish_timeout_s: float = publish_timeout_s,
    ) -> None:
        self._publisher = publisher
        self._topic = topic_path
        self._timeout_s = publish_timeout_s
        self._life = Lifecycle("Pub/Sub broadcast")
        # One caller's messages go out contiguously, so two concurrent calls
        # cannot interleave one customer's receipts out of chain order.
        self._lock = threading.Lock()
        if create_topic:
            self.ensure_topic()

    @classmethod
    def open(cls, url: str, *, create_topic: bool = False) -> PubSubBroadcast:
        parsed = parse_pubsub_url(url)
        publisher = PublisherClient(
            publisher_options=PublisherOptions(
                enable_message_ordering=True, timeout=publish_timeout_s
            )
        )
        log.info("pubsub.opened", topic=parsed.topic_path)
        return cls(publisher, parsed.topic_path, create_topic=create_topic)

    def ensure_topic(self) -> bool:
        """Create the topic unless it exists; True if this call created it."""
        try:
            self._publisher.create_topic(name=self._topic, timeout=admin_timeout_s)
        except gexc.AlreadyExists:
            return False
        except (gexc.GoogleAPICallError, gexc.RetryError) as error:
            raise StoreUnavailable(f"pubsub: cannot create {self._topic}: {error}") from error
        log.info("pubsub.topic_created", topic=self._topic)
        return True

    def publish(self, receipts: Sequence[StoredReceipt]) -> None:
        self._publish_all(
            [(r.customer_id, r.receipt_json, receipt_text_fields(r)) for r in receipts]
        )

    def publish_checkpoints(self, checkpoints: Sequence[LogCheckpoint]) -> None:
        self._publish_all(
            [
                (LOG_ORDERING_KEY, c.jws.encode("ascii"), checkpoint_text_fields(c))
                for c in checkpoints
            ]
        )

    def _publish_all(self, messages: Sequence[_Message]) -> None:
        self._life.check_open()
        if not messages:
            return
        with self._lock:
            futures = [
                (key, self._publisher.publish(self._topic, body, ordering_key=key, **attributes))
                for key, body, attributes in messages
            ]
        deadline = time.monotonic() + self._timeout_s
        failed: dict[str, str] = {}
        for key, future in futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as error:  # publish futures raise many kinds
                failed.setdefault(key, f"{type(error).__name__}: {error}")
        if failed:
            for key in failed:
                # A failed publish pauses its ordering key until resumed; the
                # outbox will retry the whole message, in order.
                self._publisher.resume_publish(self._topic, key)
            log.warning("pubsub.publish_failed", topic=self._topic, ordering_keys=sorted(failed))
            raise StoreUnavailable(f"pubsub: publish failed for {sorted(failed)}: {failed}")
        log.debug("pubsub.published", topic=self._topic, messages=len(futures))

    def close(self) -> None:
        # Under the publish lock: no publish runs while the client stops. It
        # flushes, and a failed stop loses nothing: every publish waited.
        with self._lock:
            self._life.close(self._publisher.stop, "pubsub.close_failed")
