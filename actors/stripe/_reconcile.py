"""Reconcile one customer from Stripe's current state.

Webhook payloads arrive late, twice, and out of order, so they are only used
to learn WHICH customer changed; what the customer is entitled to is always
recomputed from all of their subscriptions as Stripe lists them now. Two
reconciliations of the same state therefore write the same entitlement.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
import stripe
import structlog

from actors.stripe._metrics import StripeMetrics
from actors.stripe._plans import (
    PlanSpec,
    choose_best_subscription,
    entitlement_from_subscription,
    field_of,
    no_subscription_entitlement,
    same_grant,
    subscription_price,
)
from ledger import AlreadyExists, Customer, Entitlement, LedgerStore, OutboxMessage
from ledger.clock import utc_now_rfc3339
from ledger.limits import subscriptions_per_customer_max

__all__ = [
    "ADMIN_API_TOPIC",
    "ReconcileResult",
    "Reconciler",
    "SkipEvent",
    "list_subscriptions",
    "new_customer_id",
    "normalize_email",
]

log = structlog.get_logger(__name__)

ADMIN_API_TOPIC = "entitlement.admin_api"
_LIST_PAGE = 100
# Striped locks: two reconciliations of one customer (webhook worker and a
# trial request) never interleave; a fixed number bounds the memory.
_LOCK_STRIPES = 64
_DEFAULT_CURRENCY = "USD"


class SkipEvent(Exception):
    """Nothing can or should be done for this customer; the event is settled."""


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    customer: Customer
    entitlement: Entitlement
    changed: bool
    subscription: Any | None


def normalize_email(email: str) -> str:
    return email.strip().lower()


def new_customer_id() -> str:
    return "cust_" + secrets.token_hex(8)


def list_subscriptions(client: stripe.StripeClient, stripe_customer_id: str) -> list[Any]:
    """Every subscription of the customer, whatever its status (bounded)."""
    page = client.v1.subscriptions.list(
        params={
            "customer": stripe_customer_id,
            "status": "all",
            "limit": _LIST_PAGE,
            # Prices are always embedded in items; expanding their product
            # lets a plan be described on the product too.
            "expand": ["data.items.data.price.product"],
        }
    )
    found: list[Any] = []
    for subscription in page.auto_paging_iter():
        found.append(subscription)
        if len(found) >= subscriptions_per_customer_max:
            log.warning("stripe_sync.too_many_subscriptions", stripe_customer=stripe_customer_id)
            break
    return found


class Reconciler:
    """Shared by StripeSync (webhooks) and the trial route (immediate entitlement)."""

    def __init__(
        self,
        *,
        store: LedgerStore,
        stripe_client: stripe.StripeClient,
        plans: Mapping[str, PlanSpec],
        entitlement_id: str,
        on_entitlement_changed: Callable[[str], None],
        metrics: StripeMetrics,
        clock: Callable[[], str] = utc_now_rfc3339,
    ) -> None:
        self._store = store
        self._stripe = stripe_client
        self._plans = plans
        self._entitlement_id = entitlement_id
        self._on_changed = on_entitlement_changed
        self._metrics = metrics
        self._clock = clock
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))

    @property
    def stripe_client(self) -> stripe.StripeClient:
        return self._stripe

    def _lock_for(self, stripe_customer_id: str) -> threading.Lock:
        digest = hashlib.sha256(stripe_customer_id.encode()).digest()
        return self._locks[digest[0] % _LOCK_STRIPES]

    def reconcile(self, stripe_customer_id: str) -> ReconcileResult:
        """Fetch, decide, store. Raises stripe.StripeError (retry later) or SkipEvent."""
        started = time.monotonic()
        outcome = "error"
        try:
            with self._lock_for(stripe_customer_id):
                result = self._reconcile_locked(stripe_customer_id)
            outcome = "changed" if result.changed else "unchanged"
            return result
        except SkipEvent:
            outcome = "skipped"
            raise
        finally:
            self._metrics.reconcile_seconds.labels(outcome).observe(time.monotonic() - started)

    def _reconcile_locked(self, stripe_customer_id: str) -> ReconcileResult:
        subscriptions = list_subscriptions(self._stripe, stripe_customer_id)
        best = choose_best_subscription(subscriptions)
        customer = self._local_customer(stripe_customer_id, best)
        now = self._clock()
        if best is None:
            wanted = no_subscription_entitlement(customer.customer_id, self._entitlement_id, now)
        else:
            try:
                wanted = entitlement_from_subscription(
                    customer_id=customer.customer_id,
                    entitlement_id=self._entitlement_id,
                    subscription=best,
                    plans=self._plans,
                    updated_at=now,
                )
            except ValueError as error:
                # A price whose metadata cannot be read grants nothing.
                log.error(
                    "stripe_sync.bad_plan", customer_id=customer.customer_id, error=str(error)
                )
                wanted = replace(
                    no_subscription_entitlement(customer.customer_id, self._entitlement_id, now),
                    status="misconfigured",
                )
        current = self._store.get_entitlements(customer.customer_id).get(self._entitlement_id)
        if same_grant(current, wanted):
            return ReconcileResult(customer, current or wanted, False, best)
        reset_usage = current is not None and current.period_start != wanted.period_start
        # Outbox first: a crash before put_entitlement leaves the event pending,
        # the retry sees the change again and re-sends the (idempotent) update.
        self._store.enqueue_outbox([self._admin_message(customer, wanted, best, now)])
        self._store.put_entitlement(wanted, reset_usage=reset_usage)
        log.info(
            "stripe_sync.entitlement_changed",
            customer_id=customer.customer_id,
            status=wanted.status,
            plan=wanted.plan,
            reset_usage=reset_usage,
        )
        try:
            self._on_changed(customer.customer_id)
        except Exception:
            # The store is already right; the account reloads on its next start.
            log.exception("stripe_sync.on_entitlement_changed_failed",
                          customer_id=customer.customer_id)
        return ReconcileResult(customer, wanted, True, best)

    def _local_customer(self, stripe_customer_id: str, best: Any | None) -> Customer:
        found = self._store.find_customer_by_stripe_id(stripe_customer_id)
        if found is not None:
            return found
        remote = self._stripe.v1.customers.retrieve(stripe_customer_id)
        if field_of(remote, "deleted"):
            raise SkipEvent("stripe customer deleted")
        raw_email = field_of(remote, "email")
        if not raw_email:
            raise SkipEvent("stripe customer has no email")
        email = normalize_email(str(raw_email))
        by_email = self._store.find_customer_by_email(email)
        if by_email is not None:
            if by_email.stripe_customer_id not in (None, stripe_customer_id):
                log.warning(
                    "stripe_sync.email_linked_elsewhere",
                    customer_id=by_email.customer_id,
                    stripe_customer=stripe_customer_id,
                )
                raise SkipEvent("email already linked to another Stripe customer")
            self._store.set_stripe_customer_id(by_email.customer_id, stripe_customer_id)
            return replace(by_email, stripe_customer_id=stripe_customer_id)
        price = subscription_price(best) if best is not None else None
        currency = str(field_of(price, "currency", _DEFAULT_CURRENCY)).upper()
        customer = Customer(
            customer_id=new_customer_id(),
            email=email,
            currency=currency,
            created_at=self._clock(),
            stripe_customer_id=stripe_customer_id,
        )
        try:
            self._store.create_customer(customer)
        except AlreadyExists:
            again = self._store.find_customer_by_email(email)
            if again is None:
                raise
            return again
        log.info("stripe_sync.customer_created", customer_id=customer.customer_id)
        return customer

    def _admin_message(
        self, customer: Customer, entitlement: Entitlement, best: Any | None, now: str
    ) -> OutboxMessage:
        price = subscription_price(best) if best is not None else None
        payload = {
            "customer_id": customer.customer_id,
            "email": customer.email,
            "stripe_customer_id": customer.stripe_customer_id,
            "entitlement": {
                "entitlement_id": entitlement.entitlement_id,
                "status": entitlement.status,
                "chargeable": entitlement.chargeable,
                "plan": entitlement.plan,
                "max_bots": entitlement.max_bots,
                "quota_minor": entitlement.quota_minor,
                "currency": str(field_of(price, "currency", customer.currency)).upper(),
                "policy": entitlement.policy,
                "period_start": entitlement.period_start,
                "period_end": entitlement.period_end,
                "trial_end": entitlement.trial_end,
                "cancel_at_period_end": entitlement.cancel_at_period_end,
                "updated_at": entitlement.updated_at,
            },
        }
        return OutboxMessage(
            message_id="obx_" + secrets.token_hex(12),
            topic=ADMIN_API_TOPIC,
            ordering_key=customer.customer_id,
            payload=orjson.dumps(payload),
            created_at=now,
        )
