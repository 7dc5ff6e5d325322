"""The whole composed service (real SQLite, real HTTP on loopback) beside the
Stripe fake, with one metered plan: what the money and dispute tests drive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from actors.stripe.usage import TOPIC_STRIPE_USAGE
from gateway.compose import Runtime, build_runtime
from tests.fakes import FakeStripe
from tests.integration.conftest import ADMIN_TOKEN, base_settings, now_rfc3339
from tests.stripe.helpers import entitlement_of, wait_until

METER_EVENT = "vexa_usage"
GRACE_S = 3 * 86_400


@dataclass
class Stack:
    runtime: Runtime
    server: TestServer
    session: aiohttp.ClientSession
    fake: FakeStripe
    secret: str
    meter: dict[str, Any]
    price: dict[str, Any]

    async def deliver(self, event_type: str, obj: dict[str, Any]) -> None:
        body, headers = self.fake.delivery(self.fake.event(event_type, obj), self.secret)
        async with self.session.post("/v1/stripe/webhook", data=body,
                                     headers=headers) as response:
            assert response.status == 200, await response.text()

    async def charge(self, customer_id: str, api_key: str, key: str,
                     amount: str = "1.00") -> tuple[int, dict[str, Any]]:
        async with self.session.post(
            "/v1/events",
            json={"idempotent_key": key, "customer_id": customer_id,
                  "entitlement_id": "subscription", "amount": amount, "currency": "USD",
                  "usage_description": "a bot hour", "timestamp": now_rfc3339()},
            headers={"Authorization": f"Bearer {api_key}"},
        ) as response:
            return response.status, await response.json()

    def backlog(self) -> int:
        return self.runtime.adapters.store.outbox_backlog().get(TOPIC_STRIPE_USAGE, 0)


Start = Callable[[], Awaitable[Stack]]


@pytest.fixture
async def start_stack(tmp_path: Path, signing_key_file: Path, fake_stripe: FakeStripe,
                      webhook_secret: str) -> AsyncIterator[Start]:
    """Starts (and at the end stops) the service on one data directory; a
    second call after `stop_stack` is a restart on the same ledger."""
    meter = fake_stripe.add_meter(METER_EVENT)
    price = fake_stripe.add_price(lookup_key="pro_metered", unit_amount=2900)
    plans = {"pro_metered": {"max_bots": 5, "quota": "50.00", "policy": "hard",
                             "meter_event_name": METER_EVENT, "meter_id": meter["id"]}}
    environ = {"STRIPE_SECRET_KEY": fake_stripe.api_key, "STRIPE_WEBHOOK_SECRET": webhook_secret,
               "STRIPE_API_BASE": fake_stripe.url, "STRIPE_PLANS": json.dumps(plans),
               "STRIPE_PAYMENT_GRACE_S": str(GRACE_S)}
    settings = base_settings(tmp_path / "data", signing_key_file)
    loop = asyncio.get_running_loop()
    running: list[Stack] = []

    async def start() -> Stack:
        runtime = await loop.run_in_executor(None, build_runtime, settings, environ)
        server = TestServer(runtime.make_app(), host="127.0.0.1", port=0)
        await server.start_server()
        session = aiohttp.ClientSession(base_url=str(server.make_url("")).rstrip("/"))
        stack = Stack(runtime, server, session, fake_stripe, webhook_secret, meter, price)
        running.append(stack)
        return stack

    yield start
    for stack in running:
        await stop_stack(stack)


async def stop_stack(stack: Stack) -> None:
    if stack.session.closed:
        return
    await stack.session.close()
    await stack.server.close()
    await asyncio.get_running_loop().run_in_executor(None, stack.runtime.stop)


async def subscriber(stack: Stack, email: str, *, status: str = "active",
                      period_start: int | None = None) -> tuple[str, str, str, dict[str, Any]]:
    """(stripe customer id, our customer id, API key, subscription)."""
    price = stack.price
    stripe_customer = stack.fake.add_customer(email)
    sub = stack.fake.add_subscription(stripe_customer["id"], price["id"], status=status,
                                      period_start=period_start)
    await stack.deliver("customer.subscription.created", sub)
    store = stack.runtime.adapters.store
    await wait_until(lambda: entitlement_of(store, stripe_customer["id"]) is not None)
    customer = store.find_customer_by_stripe_id(stripe_customer["id"])
    assert customer is not None
    async with stack.session.post(f"/v1/customers/{customer.customer_id}/api-keys",
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
        api_key = (await response.json())["api_key"]
    return stripe_customer["id"], customer.customer_id, api_key, sub
