"""Usage to Stripe: every committed receipt of a metered customer reaches the
subscription's invoice, and a periodic audit compares both sides.

Delivery is the outbox's (topic `receipt.stripe_usage`): the message is
committed with the receipt, delivered at least once, in order per customer,
retried with backoff. What makes "at least once" count once on the invoice:

- a charge is a Billing meter event whose `identifier` is the receipt id
  (Stripe keeps one event per identifier) and whose request carries the same
  id as its Idempotency-Key;
- a reversal (a negative receipt) cannot be a meter event: Stripe refuses
  negative values, and a meter event adjustment can only cancel a whole
  event, within 24 hours of it. It is a negative invoice item on the
  customer's subscription instead (a credit on the next invoice), any time
  and for any part of a charge, under the reversal's receipt id as
  Idempotency-Key.

A customer without a Stripe customer id, or whose plan names no meter, is not
reported (nothing to bill it on). A request Stripe refuses as invalid is not
retried (a retry cannot succeed): it is counted and logged, and the audit
shows the difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import stripe
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from actors.stripe._plans import PlanSpec
from actors.stripe._poll import Doorbell, PollingActor
from ledger import Customer, Entitlement, LedgerStore, StoredReceipt
from ledger.clock import parse_rfc3339
from ledger.limits import usage_audit_receipts_max
from supervisor import Link

__all__ = [
    "TOPIC_STRIPE_USAGE",
    "StripeUsageSink",
    "UsageAudit",
    "UsageAuditor",
    "UsageMetrics",
    "epoch_s",
]

log = structlog.get_logger(__name__)

TOPIC_STRIPE_USAGE: Final = "receipt.stripe_usage"


class UsageMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reported = Counter(
            "billing_stripe_usage_reported",
            "Receipts reported to Stripe, by kind (meter_event, credit).",
            ["kind"],
            registry=registry,
        )
        self.rejected = Counter(
            "billing_stripe_usage_rejected",
            "Receipts Stripe refused as invalid (not retried; the audit shows them).",
            ["kind"],
            registry=registry,
        )
        self.audit_differences = Counter(
            "billing_stripe_usage_differences",
            "Audits where a customer's period usage in the ledger and in Stripe differ.",
            registry=registry,
        )
        self.audit_difference_minor = Gauge(
            "billing_stripe_usage_difference_minor",
            "Sum over customers of |ledger - Stripe| usage in the last audit pass.",
            registry=registry,
        )


class _Plans:
    """Who is metered, and on which meter: read from the store per batch."""

    def __init__(self, store: LedgerStore, plans: Mapping[str, PlanSpec]) -> None:
        self._store = store
        self._plans = plans

    def metered(self, customer_id: str, entitlement_id: str
                ) -> tuple[Customer, Entitlement, PlanSpec] | None:
        customer = self._store.get_customer(customer_id)
        if customer is None or customer.stripe_customer_id is None:
            return None
        entitlement = self._store.get_entitlements(customer_id).get(entitlement_id)
        spec = self._plans.get(entitlement.plan or "") if entitlement is not None else None
        if entitlement is None or spec is None or spec.meter_event_name is None:
            return None
        return customer, entitlement, spec


def epoch_s(rfc3339: str) -> int:
    """Whole epoch seconds: a meter event's `timestamp` (so an invoice's period
    holds exactly the receipts recorded within it)."""
    return int(parse_rfc3339(rfc3339).timestamp())


class StripeUsageSink:
    """The outbox sink of TOPIC_STRIPE_USAGE: `sink(receipts)` reports them
    in order; any retryable failure raises, and the relay retries the batch
    (what was already reported is deduplicated by Stripe)."""

    def __init__(self, *, store: LedgerStore, client: stripe.StripeClient,
                 plans: Mapping[str, PlanSpec], metrics: UsageMetrics) -> None:
        self._plans = _Plans(store, plans)
        self._client = client
        self.metrics = metrics

    def __call__(self, receipts: Sequence[StoredReceipt]) -> None:
        found: dict[tuple[str, str], tuple[Customer, Entitlement, PlanSpec] | None] = {}
        for receipt in receipts:
            key = (receipt.customer_id, receipt.entitlement_id)
            if key not in found:
                found[key] = self._plans.metered(*key)
            metered = found[key]
            if metered is not None and receipt.amount_minor != 0:
                self._report(receipt, *metered)

    def _report(self, receipt: StoredReceipt, customer: Customer, entitlement: Entitlement,
                spec: PlanSpec) -> None:
        kind = "meter_event" if receipt.amount_minor > 0 else "credit"
        try:
            if receipt.amount_minor > 0:
                self._meter_event(receipt, customer, spec)
            else:
                self._credit(receipt, customer)
        except stripe.InvalidRequestError as error:
            # 400/404: the same request fails again; do not hold the customer's queue.
            self.metrics.rejected.labels(kind).inc()
            log.error("stripe_usage.rejected", receipt_id=receipt.receipt_id, kind=kind,
                      customer_id=receipt.customer_id, error=error.user_message,
                      request_id=error.request_id)
            return
        self.metrics.reported.labels(kind).inc()

    def _meter_event(self, receipt: StoredReceipt, customer: Customer, spec: PlanSpec) -> None:
        self._client.v1.billing.meter_events.create(
            params={
                "event_name": spec.meter_event_name or "",
                "identifier": receipt.receipt_id,
                "timestamp": epoch_s(receipt.recorded_at),
                "payload": {
                    "stripe_customer_id": customer.stripe_customer_id or "",
                    "value": str(receipt.amount_minor),
                },
            },
            options={"idempotency_key": receipt.receipt_id},
        )

    def _credit(self, receipt: StoredReceipt, customer: Customer) -> None:
        self._client.v1.invoice_items.create(
            params={
                "customer": customer.stripe_customer_id or "",
                "amount": receipt.amount_minor,
                "currency": receipt.currency.lower(),
                "description": f"Reversal {receipt.receipt_id}",
                "metadata": {"receipt_id": receipt.receipt_id},
            },
            options={"idempotency_key": receipt.receipt_id},
        )


def _minute_floor(epoch_s: int) -> int:
    return epoch_s - epoch_s % 60


def _minute_ceil(epoch_s: int) -> int:
    return math.ceil(epoch_s / 60) * 60


class UsageAuditor:
    """Compares each metered customer's current period: the sum of its
    charges in the ledger against Stripe's meter event summaries.

    Only charges are compared (reversals are invoice items, not meter
    events). A pass is skipped while usage is still queued for Stripe: the
    queue would show as a difference that is only a delay."""

    def __init__(self, *, store: LedgerStore, client: stripe.StripeClient,
                 plans: Mapping[str, PlanSpec], entitlement_id: str,
                 metrics: UsageMetrics) -> None:
        self._store = store
        self._client = client
        self._plans = _Plans(store, plans)
        self._entitlement_id = entitlement_id
        self._metrics = metrics

    def run_once(self) -> dict[str, tuple[int, int]]:
        """{customer_id: (ledger_minor, stripe_minor)} of every difference found."""
        if self._store.outbox_backlog().get(TOPIC_STRIPE_USAGE, 0):
            log.info("stripe_usage.audit_deferred", reason="usage still queued")
            return {}
        differences: dict[str, tuple[int, int]] = {}
        for customer_id in self._store.list_customer_ids():
            metered = self._plans.metered(customer_id, self._entitlement_id)
            if metered is None or metered[2].meter_id is None:
                continue
            compared = self.compare(*metered)
            if compared is not None and compared[0] != compared[1]:
                differences[customer_id] = compared
                self._metrics.audit_differences.inc()
                log.error("stripe_usage.difference", customer_id=customer_id,
                          ledger_minor=compared[0], stripe_minor=compared[1],
                          period_start=metered[1].period_start)
        self._metrics.audit_difference_minor.set(
            sum(abs(a - b) for a, b in differences.values()))
        return differences

    def compare(self, customer: Customer, entitlement: Entitlement, spec: PlanSpec
                ) -> tuple[int, int] | None:
        """(ledger, Stripe) usage of the entitlement's current period, or None."""
        bounds = period_bounds(entitlement)
        if bounds is None:
            return None
        start, end = bounds
        ledger_minor = 0
        for count, receipt in enumerate(self._store.iter_receipts(customer.customer_id)):
            if count >= usage_audit_receipts_max:
                log.warning("stripe_usage.audit_truncated", customer_id=customer.customer_id)
                return None
            at = epoch_s(receipt.recorded_at)
            if (receipt.entitlement_id == entitlement.entitlement_id
                    and receipt.amount_minor > 0 and start <= at < end):
                ledger_minor += receipt.amount_minor
        summaries = self._client.v1.billing.meters.event_summaries.list(
            spec.meter_id or "",
            params={"customer": customer.stripe_customer_id or "",
                    "start_time": start, "end_time": end},
        )
        stripe_minor = sum(int(s["aggregated_value"]) for s in summaries.auto_paging_iter())
        return ledger_minor, stripe_minor


class UsageAudit(PollingActor):
    """Supervised actor running UsageAuditor every `interval_s`."""

    def __init__(self, link: Link | None, *, auditor: UsageAuditor, interval_s: float) -> None:
        super().__init__(link, Doorbell(), interval_s)
        self._auditor = auditor

    def poll_once(self) -> bool:
        try:
            self._auditor.run_once()
        except stripe.StripeError as error:
            log.warning("stripe_usage.audit_failed", error=type(error).__name__)
        return False


def period_bounds(entitlement: Entitlement) -> tuple[int, int] | None:
    """The entitlement's period as whole minutes (Stripe's summaries ask for them)."""
    if entitlement.period_start is None or entitlement.period_end is None:
        return None
    return (_minute_floor(epoch_s(entitlement.period_start)),
            _minute_ceil(epoch_s(entitlement.period_end)))

