"""Helpers shared by the Stripe tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from ledger import Entitlement
from ledger.ports import LedgerStore
from tests.fakes import FakeStripe

FAR_FUTURE = "9999-12-31T23:59:59.999999Z"


async def deliver(client: TestClient, fake: FakeStripe, event: dict[str, Any],
                  secret: str) -> int:
    body, headers = fake.delivery(event, secret)
    response = await client.post("/v1/stripe/webhook", data=body, headers=headers)
    return response.status


def pending(store: LedgerStore) -> list[Any]:
    return store.pending_webhook_events(FAR_FUTURE, 1000)


async def drain(run_once: Callable[[], bool], store: LedgerStore, *, timeout_s: float = 10.0,
                ) -> None:
    """Run the worker until nothing is pending (due or not)."""
    deadline = time.monotonic() + timeout_s
    while pending(store):
        await asyncio.to_thread(run_once)
        if time.monotonic() > deadline:
            raise AssertionError(f"events still pending: {pending(store)}")
        await asyncio.sleep(0.01)


def entitlement_of(store: LedgerStore, stripe_customer_id: str,
                   entitlement_id: str = "subscription") -> Entitlement | None:
    customer = store.find_customer_by_stripe_id(stripe_customer_id)
    if customer is None:
        return None
    return store.get_entitlements(customer.customer_id).get(entitlement_id)


def grant(entitlement: Entitlement | None) -> tuple[Any, ...] | None:
    """What an entitlement grants, without ids, timestamps or usage."""
    if entitlement is None:
        return None
    return (entitlement.status, entitlement.plan, entitlement.max_bots, entitlement.quota_minor,
            entitlement.policy, entitlement.period_start, entitlement.period_end,
            entitlement.trial_end, entitlement.cancel_at_period_end)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def subscribe_and_sync(harness: Any, fake: FakeStripe, price_id: str, secret: str,
                             email: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new Stripe customer subscribes; its webhook is delivered and processed.
    Returns (Stripe customer, Stripe subscription)."""
    customer = fake.add_customer(email)
    sub = fake.add_subscription(customer["id"], price_id)
    event = fake.event("customer.subscription.created", sub)
    assert await deliver(harness.client, fake, event, secret) == 200
    await drain(harness.worker.run_once, harness.store)
    return customer, sub
