"""StripeSync: turns recorded Stripe webhook events into entitlements, and
answers disputes.

The webhook route only verifies and records events (durably, deduplicated by
id); this actor takes due events from the store, reconciles each named
customer from Stripe's current state (or, for `charge.dispute.created`,
submits the evidence: actors.stripe.disputes), and marks the event processed. When
Stripe cannot be reached the event stays pending and is retried with
exponential backoff, so nothing is lost while Stripe is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import orjson
import stripe
import structlog

from actors.stripe._metrics import StripeMetrics
from actors.stripe._plans import PlanSpec
from actors.stripe._poll import Doorbell, PollingActor, RetryPolicy
from actors.stripe._reconcile import ADMIN_API_TOPIC, Reconciler, ReconcileResult, SkipEvent
from actors.stripe.disputes import (
    DISPUTE_CREATED,
    DisputeIgnored,
    DisputeResponder,
    dispute_id_of,
)
from ledger import LedgerStore, WebhookEvent
from ledger.clock import utc_now_rfc3339
from ledger.limits import webhook_batch_max, webhook_error_chars_max
from supervisor import Link

__all__ = [
    "ADMIN_API_TOPIC",
    "HANDLED_EVENT_PREFIXES",
    "Doorbell",
    "PlanSpec",
    "ReconcileResult",
    "Reconciler",
    "RetryPolicy",
    "StripeSync",
    "StripeSyncWorker",
    "is_handled_event",
    "stripe_customer_of",
]

log = structlog.get_logger(__name__)

HANDLED_EVENT_PREFIXES: Final = ("customer.subscription.", "checkout.session.", "invoice.")
HANDLED_EVENT_TYPES: Final = frozenset({DISPUTE_CREATED})
WEBHOOK_RETRY: Final = RetryPolicy(base_s=2.0, max_s=3600.0)


def is_handled_event(event_type: str) -> bool:
    return event_type.startswith(HANDLED_EVENT_PREFIXES) or event_type in HANDLED_EVENT_TYPES


def stripe_customer_of(event: dict[str, Any]) -> str | None:
    """The Stripe customer an event is about, or None. Only the id is trusted."""
    obj = (event.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        return None
    if obj.get("object") == "customer":
        value = obj.get("id")
    else:
        value = obj.get("customer")
        if isinstance(value, dict):  # an expanded customer
            value = value.get("id")
    return value if isinstance(value, str) and value.startswith("cus_") else None


class StripeSyncWorker:
    """The work, without the actor: `run_once()` processes one bounded batch.

    Not thread-safe by itself: one StripeSync actor (one thread) drives it.
    """

    def __init__(
        self,
        *,
        store: LedgerStore,
        reconciler: Reconciler,
        metrics: StripeMetrics,
        batch_max: int = webhook_batch_max,
        retry: RetryPolicy = WEBHOOK_RETRY,
        clock: Callable[[], str] = utc_now_rfc3339,
        disputes: DisputeResponder | None = None,
    ) -> None:
        self._store = store
        self._reconciler = reconciler
        self._metrics = metrics
        self._batch_max = batch_max
        self._retry = retry
        self._clock = clock
        self._disputes = disputes

    def run_once(self) -> bool:
        """Process due events; True if a full batch was taken (more may be due)."""
        now = self._clock()
        events = self._store.pending_webhook_events(now, self._batch_max)
        # Several events about one customer need one reconciliation.
        by_customer: dict[str, list[WebhookEvent]] = {}
        for event in events:
            if event.event_type == DISPUTE_CREATED:
                self._dispute(event)
                continue
            customer = self._customer_of(event)
            if customer is None:
                self._store.mark_webhook_processed(event.event_id, self._clock())
                self._metrics.webhook_events.labels(event.event_type, "no_customer").inc()
                continue
            by_customer.setdefault(customer, []).append(event)
        for stripe_customer_id, group in by_customer.items():
            self._process(stripe_customer_id, group)
        return len(events) >= self._batch_max

    def _customer_of(self, event: WebhookEvent) -> str | None:
        if not is_handled_event(event.event_type):
            return None
        decoded = _decoded(event)
        return stripe_customer_of(decoded) if decoded is not None else None

    def _dispute(self, event: WebhookEvent) -> None:
        """Answer the dispute (once; see actors.stripe.disputes)."""
        decoded = _decoded(event)
        dispute_id = dispute_id_of(decoded) if decoded is not None else None
        if dispute_id is None or self._disputes is None:
            log.warning("stripe_dispute.not_handled", event_id=event.event_id,
                        reason="no dispute id" if dispute_id is None else "no evidence source")
            self._settle_dispute(event, "ignored")
            return
        try:
            self._disputes.respond(dispute_id, event.attempts)
        except DisputeIgnored as ignored:
            log.warning("stripe_dispute.ignored", event_id=event.event_id,
                        dispute_id=dispute_id, reason=str(ignored))
            self._settle_dispute(event, "ignored")
        except stripe.InvalidRequestError as error:
            # The same evidence is refused again: a person must answer it.
            log.error("stripe_dispute.refused", event_id=event.event_id, dispute_id=dispute_id,
                      error=error.user_message, code=error.code, request_id=error.request_id)
            self._settle_dispute(event, "refused")
        except stripe.StripeError as error:
            self._metrics.disputes.labels("retry_later").inc()
            self._retry_later([event], error)
        else:
            self._settle_dispute(event, "submitted")

    def _settle_dispute(self, event: WebhookEvent, result: str) -> None:
        self._metrics.disputes.labels(result).inc()
        self._settle([event], result)

    def _process(self, stripe_customer_id: str, group: list[WebhookEvent]) -> None:
        try:
            result = self._reconciler.reconcile(stripe_customer_id)
        except SkipEvent as skip:
            log.warning("stripe_sync.skipped", stripe_customer=stripe_customer_id,
                        reason=str(skip))
            self._settle(group, "skipped")
            return
        except stripe.StripeError as error:
            self._retry_later(group, error)
            return
        self._settle(group, "changed" if result.changed else "unchanged")

    def _settle(self, group: list[WebhookEvent], result: str) -> None:
        processed_at = self._clock()
        for event in group:
            self._store.mark_webhook_processed(event.event_id, processed_at)
            self._metrics.webhook_events.labels(event.event_type, f"processed_{result}").inc()

    def _retry_later(self, group: list[WebhookEvent], error: stripe.StripeError) -> None:
        now = self._clock()
        reason = f"{type(error).__name__}: {error.user_message or ''}"[:webhook_error_chars_max]
        for event in group:
            next_at = self._retry.next_attempt_at(now, event.attempts)
            self._store.mark_webhook_failed(event.event_id, reason, next_at)
            self._metrics.webhook_events.labels(event.event_type, "retry_later").inc()
            log.warning(
                "stripe_sync.retry_later",
                event_id=event.event_id,
                attempts=event.attempts + 1,
                next_attempt_at=next_at,
                error=type(error).__name__,
                request_id=getattr(error, "request_id", None),
            )

def _decoded(event: WebhookEvent) -> dict[str, Any] | None:
    try:
        decoded = orjson.loads(event.payload)
    except orjson.JSONDecodeError:
        log.error("stripe_sync.payload_unreadable", event_id=event.event_id)
        return None
    return decoded if isinstance(decoded, dict) else None


class StripeSync(PollingActor):
    """Supervised actor driving StripeSyncWorker.

    Start with `StripeSync.start(link, store=..., reconciler=..., metrics=...,
    doorbell=...)`; the gateway's `wake_sync` is `doorbell.ring`.
    """

    def __init__(
        self,
        link: Link | None,
        *,
        store: LedgerStore,
        reconciler: Reconciler,
        metrics: StripeMetrics,
        doorbell: Doorbell,
        poll_interval_s: float = 5.0,
        batch_max: int = webhook_batch_max,
        retry: RetryPolicy = WEBHOOK_RETRY,
        disputes: DisputeResponder | None = None,
    ) -> None:
        super().__init__(link, doorbell, poll_interval_s)
        self._worker = StripeSyncWorker(
            store=store, reconciler=reconciler, metrics=metrics, batch_max=batch_max,
            retry=retry, disputes=disputes,
        )

    def poll_once(self) -> bool:
        started = time.monotonic()
        more = self._worker.run_once()
        log.debug("stripe_sync.polled", seconds=round(time.monotonic() - started, 3))
        return more
