"""Money that moves, through the whole composed service and the Stripe fake:
charges reach the subscription's invoice as meter events (once each, despite
failures and restarts), the usage audit sees a difference, and an unpaid
subscription stops charges after its grace period until it is paid."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from actors.stripe.usage import TOPIC_STRIPE_USAGE, StripeUsageSink
from ledger.clock import format_rfc3339
from tests.integration.conftest import ADMIN_TOKEN
from tests.stripe.helpers import FAR_FUTURE, entitlement_of, wait_until
from tests.stripe.stack import METER_EVENT, Stack, Start, stop_stack, subscriber


def _ledger_sum(stack: Stack, customer_id: str) -> int:
    return sum(r.amount_minor for r in stack.runtime.adapters.store.iter_receipts(customer_id))


async def test_failed_deliveries_are_retried_until_they_land_and_counted_once(
    start_stack: Start,
) -> None:
    stack = await start_stack()
    cus, customer_id, api_key, _ = await subscriber(stack, "meter@example.com")
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
    from actors.stripe.usage import UsageAuditor
    from gateway.stripe.settings import build_stripe_client, load

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
    cus, customer_id, api_key, _ = await subscriber(stack, "restart@example.com")
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
    cus, customer_id, api_key, sub = await subscriber(stack, "late@example.com",
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
    cus, customer_id, api_key, _ = await subscriber(stack, "invoice@example.com")
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
