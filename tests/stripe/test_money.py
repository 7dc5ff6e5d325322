"""Money that moves, through the whole composed service and the Stripe fake:
charges reach the subscription's invoice as meter events (once each, despite
failures and restarts), the usage audit sees a difference, and an unpaid
subscription stops charges after its grace period until it is paid."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from actors.stripe_usage import TOPIC_STRIPE_USAGE, StripeUsageSink
from gateway.compose import Runtime, build_runtime
from ledger.clock import format_rfc3339
from tests.fakes import FakeStripe
from tests.integration.conftest import ADMIN_TOKEN, base_settings, now_rfc3339
from tests.stripe.helpers import FAR_FUTURE, entitlement_of, wait_until

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


async def _subscriber(stack: Stack, email: str, *, status: str = "active",
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


def _ledger_sum(stack: Stack, customer_id: str) -> int:
    return sum(r.amount_minor for r in stack.runtime.adapters.store.iter_receipts(customer_id))


async def test_failed_deliveries_are_retried_until_they_land_and_counted_once(
    start_stack: Start,
) -> None:
    stack = await start_stack()
    cus, customer_id, api_key, _ = await _subscriber(stack, "meter@example.com")
    # Stripe takes the first reports but their replies are lost: the same
    # events are sent again and must still count once.
    stack.fake.fail("lost_reply", times=4)
    amounts = ["1.00", "2.50", "0.75", "4.00", "1.25"]
    for index, amount in enumerate(amounts):
        status, _ = await stack.charge(customer_id, api_key, f"hour-{index}", amount)
        assert status == 202
    await wait_until(lambda: stack.backlog() == 0, timeout_s=20)
    assert stack.fake.metered_total(cus, METER_EVENT) == _ledger_sum(stack, customer_id) == 950
    identifiers = [p["identifier"] for m, path, p in stack.fake.requests
                   if path == "/v1/billing/meter_events"]
    receipts = {r.receipt_id for r in stack.runtime.adapters.store.iter_receipts(customer_id)}
    assert set(identifiers) == receipts
    assert len(identifiers) > len(receipts)  # some were sent again, none counted twice
    # The audit agrees with Stripe now, and sees a meter event Stripe lost.
    auditor = _auditor(stack)
    assert auditor.run_once() == {}
    lost = next(iter(stack.fake.meter_events))
    del stack.fake.meter_events[lost]
    assert auditor.run_once()[customer_id][0] == 950
    registry = stack.runtime.services.registry
    assert registry.get_sample_value("billing_stripe_usage_differences_total") == 1


def _auditor(stack: Stack) -> Any:
    from actors.stripe_usage import UsageAuditor
    from gateway.stripe_settings import build_stripe_client, load

    environ_plans = {"pro_metered": {"max_bots": 5, "quota": "50.00",
                                     "meter_event_name": METER_EVENT,
                                     "meter_id": stack.meter["id"]}}
    settings = load(None, {"STRIPE_SECRET_KEY": stack.fake.api_key,
                           "STRIPE_API_BASE": stack.fake.url,
                           "STRIPE_PLANS": json.dumps(environ_plans)})
    client = build_stripe_client(settings)
    return UsageAuditor(store=stack.runtime.adapters.store, client=client, plans=settings.plans,
                        entitlement_id="subscription",
                        metrics=_shared_usage_metrics(stack))


def _shared_usage_metrics(stack: Stack) -> Any:
    """The service's own usage metrics (registered once in its registry)."""
    sink = stack.runtime.adapters.sinks[TOPIC_STRIPE_USAGE]
    assert isinstance(sink, StripeUsageSink)
    return sink.metrics


async def test_a_restart_in_the_middle_of_reporting_loses_and_doubles_nothing(
    start_stack: Start,
) -> None:
    stack = await start_stack()
    cus, customer_id, api_key, _ = await _subscriber(stack, "restart@example.com")
    stack.fake.fail("500")  # Stripe down: usage waits in the outbox
    for index in range(6):
        assert (await stack.charge(customer_id, api_key, f"k-{index}", "3.00"))[0] == 202
    store = stack.runtime.adapters.store
    await wait_until(lambda: any(m.attempts for m in store.pending_outbox(
        TOPIC_STRIPE_USAGE, FAR_FUTURE, 100)))
    assert stack.backlog() == 6
    await stop_stack(stack)
    stack.fake.recover()
    again = await start_stack()
    await wait_until(lambda: again.backlog() == 0, timeout_s=20)
    assert stack.fake.metered_total(cus, METER_EVENT) == _ledger_sum(again, customer_id) == 1800
    assert len(stack.fake.meter_events) == 6


async def test_payment_failure_past_grace_refuses_charges_and_payment_restores_them(
    start_stack: Start,
) -> None:
    stack = await start_stack()
    now = int(time.time())
    cus, customer_id, api_key, sub = await _subscriber(stack, "late@example.com",
                                                       period_start=now - 86_400)
    store = stack.runtime.adapters.store

    async def set_status(status: str, event_type: str, period_start: int) -> None:
        updated = stack.fake.update_subscription(sub["id"], status=status,
                                                 period_start=period_start)
        await stack.deliver(event_type, updated)
        started = format_rfc3339(datetime.fromtimestamp(period_start, UTC))

        def applied() -> bool:
            entitlement = entitlement_of(store, cus)
            return entitlement is not None and (entitlement.status, entitlement.period_start) == (
                status, started)

        await wait_until(applied)

    # Payment failed a day into the period: still inside the grace period.
    await set_status("past_due", "customer.subscription.updated", now - 86_400)
    assert (await stack.charge(customer_id, api_key, "in-grace"))[0] == 202
    # Ten days unpaid: past the grace period.
    await set_status("past_due", "invoice.payment_failed", now - 10 * 86_400)
    status, body = await stack.charge(customer_id, api_key, "past-grace")
    assert (status, body["error"]["code"]) == (402, "payment_required")
    await set_status("unpaid", "customer.subscription.updated", now - 10 * 86_400)
    assert (await stack.charge(customer_id, api_key, "unpaid"))[1]["error"]["code"] == (
        "payment_required")
    # The invoice is paid: charges are accepted again.
    await set_status("active", "invoice.paid", now - 10 * 86_400)
    assert (await stack.charge(customer_id, api_key, "paid"))[0] == 202
    assert _ledger_sum(stack, customer_id) == 200


async def test_charges_and_two_reversals_end_on_the_invoice_with_the_ledger_sum(
    start_stack: Start,
) -> None:
    stack = await start_stack()
    cus, customer_id, api_key, _ = await _subscriber(stack, "invoice@example.com")
    receipt_ids = []
    for day in range(30):  # a month of daily usage
        status, body = await stack.charge(customer_id, api_key, f"day-{day}", f"1.{day:02d}")
        assert status == 202, body
        receipt_ids.append(body["receipt_id"])
    for receipt_id, amount, key in ((receipt_ids[3], "1.03", "r1"), (receipt_ids[9], "0.50", "r2")):
        async with stack.session.post(
            f"/v1/receipts/{receipt_id}/reversals", json={"amount": amount, "reason": "credit"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": key},
        ) as response:
            assert response.status == 202, await response.text()
    await wait_until(lambda: stack.backlog() == 0, timeout_s=20)
    ledger_minor = _ledger_sum(stack, customer_id)
    assert ledger_minor == sum(100 + day for day in range(30)) - 103 - 50
    assert stack.fake.upcoming_invoice_minor(cus, METER_EVENT) == ledger_minor
    credits = stack.fake.invoice_items_of(cus)
    assert sorted(item["amount"] for item in credits) == [-103, -50]
