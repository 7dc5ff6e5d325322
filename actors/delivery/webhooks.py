"""Customer webhooks: events (threshold alerts) POSTed to the customer's
endpoints, signed the way Stripe signs its own, delivered at least once.

Delivery is the outbox's (topic `customer.webhook`, a message per event,
committed with the receipt that set it off): retried with backoff until
every endpoint of the customer has answered 2xx. A retry sends the same
bytes under the same event id (`evt_...`), which is what receivers
deduplicate on; an endpoint that has an event is not sent it again.

Signature: header `Vexa-Signature: t=<unix seconds>,v1=<hex>`, where
hex = HMAC-SHA256(endpoint secret, "<t>.<body>"), exactly Stripe's scheme,
so Stripe's libraries verify it (`stripe.WebhookSignature.verify_header`).
While a rotated secret is still valid there are two `v1=` entries, new
first, as Stripe sends during a secret roll.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Final

import structlog
from prometheus_client import CollectorRegistry, Counter

from actors.delivery.outbox import MessageResults
from ledger import OutboxMessage
from ledger.clock import parse_rfc3339, utc_now_rfc3339
from ledger.limits import webhook_error_chars_max
from ledger.webhook_store import (
    EVENT_DELIVERED,
    EVENT_NO_ENDPOINT,
    EVENT_PENDING,
    DeliveryAttempt,
    OutboundEvent,
    WebhookEndpoint,
    WebhookStore,
)

__all__ = ["SIGNATURE_HEADER", "WebhookMetrics", "WebhookSink", "signature_header"]

log = structlog.get_logger(__name__)

SIGNATURE_HEADER: Final = "Vexa-Signature"
_USER_AGENT: Final = "Vexa-Billing-Webhooks/1"

# POST(url, body, headers, timeout_s) -> None on a 2xx, else why not.
Post = Callable[[str, bytes, dict[str, str], float], str | None]


def signature_header(body: bytes, secrets: Sequence[str], timestamp_s: int) -> str:
    """`t=...,v1=...[,v1=...]`: Stripe's webhook signature, one v1 per secret."""
    signed = f"{timestamp_s}.".encode() + body
    parts = [f"t={timestamp_s}"]
    parts += [
        "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        for secret in secrets
    ]
    return ",".join(parts)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery (as at Stripe): the body is not re-sent elsewhere."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post_json(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> str | None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return f"HTTP {error.code}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return type(error).__name__ + ": " + str(error)
    return None if 200 <= status < 300 else f"HTTP {status}"


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "billing_webhook_attempts",
            "Customer webhook POSTs, by result (delivered, failed).",
            ["result"],
            registry=registry,
        )


class WebhookSink:
    """The outbox's message sink of TOPIC_WEBHOOKS (see actors.delivery.outbox). After a
    failure, the customer's later events in the batch wait (order per customer)."""

    def __init__(self, *, store: WebhookStore, metrics: WebhookMetrics, timeout_s: float,
                 post: Post = post_json, clock: Callable[[], str] = utc_now_rfc3339) -> None:
        self._store = store
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._post = post
        self._clock = clock

    def __call__(self, messages: Sequence[OutboxMessage]) -> MessageResults:
        results = MessageResults()
        held: set[str] = set()
        for message in messages:
            if message.ordering_key in held:
                continue
            error = self.deliver(message.payload.decode())
            if error is None:
                results.delivered.append(message)
            else:
                results.failed[message.message_id] = (message, error)
                held.add(message.ordering_key)
        return results

    def deliver(self, event_id: str) -> str | None:
        """Send the event to each endpoint that lacks it; None when all have it."""
        event = self._store.get_outbound_event(event_id)
        if event is None:
            log.error("webhooks.event_missing", event_id=event_id)
            return None  # nothing to send, ever
        endpoints = self._store.list_webhook_endpoints(event.customer_id)
        now = self._clock()
        if not endpoints:
            self._store.record_delivery(event_id, DeliveryAttempt(now, EVENT_NO_ENDPOINT, ()))
            return None
        targets = [e for e in endpoints if e.endpoint_id not in event.delivered_to]
        if not targets:
            return None  # delivered before a crash took the outbox's acknowledgement
        delivered = list(event.delivered_to)
        errors = []
        for endpoint in targets:
            error = self._send(event, endpoint, now)
            if error is None:
                delivered.append(endpoint.endpoint_id)
            else:
                errors.append(f"{endpoint.endpoint_id}: {error}")
        status = EVENT_PENDING if errors else EVENT_DELIVERED
        message = "; ".join(errors)[:webhook_error_chars_max] or None
        self._store.record_delivery(event_id, DeliveryAttempt(now, status, tuple(delivered),
                                                              message))
        return message

    def _send(self, event: OutboundEvent, endpoint: WebhookEndpoint, now: str) -> str | None:
        timestamp_s = int(parse_rfc3339(now).timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            SIGNATURE_HEADER: signature_header(event.body, endpoint.signing_secrets(now),
                                               timestamp_s),
        }
        error = self._post(endpoint.url, event.body, headers, self._timeout_s)
        self._metrics.attempts.labels("failed" if error else "delivered").inc()
        if error is not None:
            log.warning("webhooks.delivery_failed", event_id=event.event_id,
                        endpoint_id=endpoint.endpoint_id, error=error)
        return error
