"""Outbound webhooks beyond the LedgerStore port: a customer's endpoints, the
alert thresholds of its entitlements, and the events sent to it (threshold
alerts) with their delivery status.

A separate port, as `web_store` is, so adapters without the tables (Spanner,
until it has them) are not forced to grow it: the service turns threshold
alerts on only when `isinstance(store, WebhookStore)`.

The events are written by `commit_batch` (`ReceiptWrite.events`) in the
commit of the receipt that crossed the threshold; an event per (customer,
entitlement, period, threshold) at most, enforced by the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ledger.errors import LedgerError


class TooManyEndpoints(LedgerError):
    """The customer already has as many webhook endpoints as allowed."""


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where a customer's events go. `secret` signs them (HMAC-SHA256, the
    way Stripe signs its webhooks); after a rotation the previous secret
    signs too until `previous_secret_expires_at`."""

    endpoint_id: str
    customer_id: str
    url: str
    secret: str
    created_at: str
    previous_secret: str | None = None
    previous_secret_expires_at: str | None = None

    def signing_secrets(self, now: str) -> tuple[str, ...]:
        """The secrets to sign with now (RFC 3339 strings compare in order)."""
        expires = self.previous_secret_expires_at
        if self.previous_secret is not None and expires is not None and now < expires:
            return (self.secret, self.previous_secret)
        return (self.secret,)


# Delivery statuses of an outbound event.
EVENT_PENDING = "pending"  # not delivered yet (or being retried)
EVENT_DELIVERED = "delivered"  # every endpoint of the customer answered 2xx
EVENT_NO_ENDPOINT = "no_endpoint"  # the customer had no endpoint when it was sent


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    """One event for a customer, with its delivery record.

    `body` is the JSON sent, byte for byte the same on every attempt (a retry
    is the same event, never a second one). `period_start` is "" for an
    entitlement without a billing period."""

    event_id: str
    customer_id: str
    event_type: str
    created_at: str
    body: bytes
    entitlement_id: str
    period_start: str
    threshold_pct: int
    status: str = EVENT_PENDING
    attempts: int = 0
    last_attempt_at: str | None = None
    last_error: str | None = None
    delivered_at: str | None = None
    # Endpoints that have it (a retry goes only to the others).
    delivered_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """What one delivery pass of an event did."""

    attempted_at: str
    status: str
    delivered_to: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[OutboundEvent]
    has_more: bool


@runtime_checkable
class WebhookStore(Protocol):
    def create_webhook_endpoint(self, endpoint: WebhookEndpoint, per_customer_max: int) -> None:
        """TooManyEndpoints if the customer already has `per_customer_max` endpoints."""
        ...

    def list_webhook_endpoints(self, customer_id: str) -> list[WebhookEndpoint]:
        """Oldest first."""
        ...

    def delete_webhook_endpoint(self, customer_id: str, endpoint_id: str) -> None:
        """NotFound unless the customer has this endpoint."""
        ...

    def rotate_webhook_secret(
        self, customer_id: str, endpoint_id: str, secret: str, previous_expires_at: str
    ) -> WebhookEndpoint:
        """The current secret becomes the previous one (signing until
        `previous_expires_at`); NotFound unless the customer has it."""
        ...

    def alert_thresholds(self, customer_id: str) -> dict[str, tuple[int, ...]]:
        """Thresholds (percent of quota) set per entitlement; absent: the default."""
        ...

    def set_alert_thresholds(
        self, customer_id: str, entitlement_id: str, thresholds_pct: tuple[int, ...],
        updated_at: str,
    ) -> None: ...

    def fired_thresholds(self, customer_id: str) -> set[tuple[str, str, int]]:
        """(entitlement_id, period_start, threshold_pct) of every event stored."""
        ...

    def get_outbound_event(self, event_id: str) -> OutboundEvent | None: ...

    def list_outbound_events(
        self, customer_id: str, *, starting_after: str | None, ending_before: str | None,
        limit: int,
    ) -> EventPage:
        """Newest first, as Stripe lists; the cursors are event ids of this
        customer (NotFound otherwise)."""
        ...

    def record_delivery(self, event_id: str, attempt: DeliveryAttempt) -> None:
        """Count an attempt and set the status; unknown ids are ignored."""
        ...
