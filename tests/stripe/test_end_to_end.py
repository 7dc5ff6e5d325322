"""Stripe through the whole composed service: a signed webhook turns a
subscription into an entitlement the charge path enforces, and a cancelled
subscription stops further charges on the live account."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.compose import Runtime, build_runtime
from tests.fakes import FakeStripe
from tests.integration.conftest import ADMIN_TOKEN, base_settings, now_rfc3339
from tests.stripe.conftest import PLANS, Prices
from tests.stripe.helpers import entitlement_of, wait_until


@pytest.fixture
async def stack(
    tmp_path: Path,
    signing_key_file: Path,
    fake_stripe: FakeStripe,
    prices: Prices,
    webhook_secret: str,
) -> AsyncIterator[tuple[Runtime, aiohttp.ClientSession]]:
    environ = {
        "STRIPE_SECRET_KEY": fake_stripe.api_key,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_API_BASE": fake_stripe.url,
        "STRIPE_PLANS": json.dumps(PLANS),
    }
    settings = base_settings(tmp_path / "data", signing_key_file)
    loop = asyncio.get_running_loop()
    runtime = await loop.run_in_executor(None, build_runtime, settings, environ)
    server = TestServer(runtime.make_app(), host="127.0.0.1", port=0)
    await server.start_server()
    session = aiohttp.ClientSession(base_url=str(server.make_url("")).rstrip("/"))
    try:
        yield runtime, session
    finally:
        await session.close()
        await server.close()
        await loop.run_in_executor(None, runtime.stop)


async def _deliver(
    session: aiohttp.ClientSession, fake: FakeStripe, event: dict[str, Any], secret: str
) -> None:
    body, headers = fake.delivery(event, secret)
    async with session.post("/v1/stripe/webhook", data=body, headers=headers) as response:
        assert response.status == 200, await response.text()


async def _charge(
    session: aiohttp.ClientSession, customer_id: str, api_key: str, key: str, timestamp: str
) -> int:
    async with session.post(
        "/v1/events",
        json={
            "idempotent_key": key,
            "customer_id": customer_id,
            "entitlement_id": "subscription",
            "amount": "1.00",
            "currency": "USD",
            "usage_description": "a bot hour",
            "timestamp": timestamp,
        },
        headers={"Authorization": f"Bearer {api_key}"},
    ) as response:
        return response.status


async def test_subscription_grants_and_cancellation_revokes_charging(
    stack: tuple[Runtime, aiohttp.ClientSession],
    fake_stripe: FakeStripe,
    prices: Prices,
    webhook_secret: str,
) -> None:
    runtime, session = stack
    store = runtime.adapters.store
    stripe_customer = fake_stripe.add_customer("e2e-buyer@example.com")
    subscription = fake_stripe.add_subscription(stripe_customer["id"], prices.pro["id"])
    await _deliver(
        session,
        fake_stripe,
        fake_stripe.event("customer.subscription.created", subscription),
        webhook_secret,
    )
    await wait_until(lambda: entitlement_of(store, stripe_customer["id"]) is not None)
    entitlement = entitlement_of(store, stripe_customer["id"])
    assert entitlement is not None and entitlement.status == "active"
    customer = store.find_customer_by_stripe_id(stripe_customer["id"])
    assert customer is not None
    async with session.post(
        f"/v1/customers/{customer.customer_id}/api-keys",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as response:
        api_key = (await response.json())["api_key"]
    first_at = now_rfc3339()
    assert await _charge(session, customer.customer_id, api_key, "hour-1", first_at) == 202

    cancelled = fake_stripe.update_subscription(subscription["id"], status="canceled")
    await _deliver(
        session,
        fake_stripe,
        fake_stripe.event("customer.subscription.deleted", cancelled),
        webhook_secret,
    )

    def revoked() -> bool:
        current = entitlement_of(store, stripe_customer["id"])
        return current is not None and not current.chargeable

    await wait_until(revoked)
    assert await _charge(session, customer.customer_id, api_key, "hour-2", now_rfc3339()) == 402
    # The earlier charge stays, and replays, untouched by the cancellation.
    assert await _charge(session, customer.customer_id, api_key, "hour-1", first_at) == 202
