"""StripeSync: every event triggers a reconciliation from Stripe's current
state, so duplicated, shuffled and delayed deliveries all end in the same
entitlement, and nothing is lost while Stripe is down."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from actors.stripe._poll import Doorbell, RetryPolicy
from actors.stripe.sync import StripeSync, StripeSyncWorker
from gateway.stripe.routes import StripeDeps
from ledger import GENESIS_HASH, ReceiptWrite, StoredReceipt
from ledger.clock import utc_now_rfc3339
from ledger.sqlite import SqliteLedger
from tests.fakes import FakeStripe
from tests.stripe.conftest import Harness, Prices, make_reconciler, start_app
from tests.stripe.helpers import (
    deliver,
    drain,
    entitlement_of,
    grant,
    pending,
    subscribe_and_sync,
    wait_until,
)

DAY = 86400


def _charge(store: SqliteLedger, customer_id: str, amount_minor: int) -> None:
    """One receipt through the real commit path (that is what adds usage)."""
    receipt = StoredReceipt(
        customer_id=customer_id, seq=1, receipt_id="rcpt_test1", idempotency_key="k1",
        request_fingerprint="f1", entitlement_id="subscription", amount_minor=amount_minor,
        currency="USD", receipt_hash="sha256:" + "1" * 64, previous_receipt_hash=GENESIS_HASH,
        balance_after_minor=amount_minor, recorded_at=utc_now_rfc3339(), receipt_json=b"{}",
    )
    store.commit_batch([ReceiptWrite(receipt)], [])


def _lifecycle(fake: FakeStripe, prices: Prices) -> tuple[str, list[tuple[Any, str]]]:
    """A customer's story as Stripe tells it: mutations, each with its event type."""
    customer = fake.add_customer("Story@Example.com")
    cid = customer["id"]
    start = int(time.time()) - 10 * DAY
    steps: list[tuple[Any, str]] = []
    sub = fake.add_subscription(cid, prices.pro["id"], status="trialing",
                                trial_end=start + 3600, period_start=start)
    steps.append((lambda: fake.subscriptions_of(cid)[0], "customer.subscription.created"))
    sub_id = sub["id"]
    steps.append((lambda: fake.update_subscription(sub_id, status="active"),
                  "customer.subscription.updated"))
    steps.append((lambda: fake.update_subscription(
        sub_id, period_start=start + 30 * DAY, period_end=start + 60 * DAY),
        "invoice.paid"))
    steps.append((lambda: fake.update_subscription(sub_id, cancel_at_period_end=True),
                  "customer.subscription.updated"))
    return cid, steps


def _event_object(event_type: str, sub: dict[str, Any]) -> dict[str, Any]:
    if event_type.startswith("invoice."):
        from tests.fakes.stripe_server import fixture

        invoice = fixture("invoice")
        invoice.update(customer=sub["customer"], subscription=sub["id"])
        return invoice
    return sub


async def test_shuffled_triplicate_delivery_converges_to_in_order_result(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str,
    tmp_path: Path,
) -> None:
    cid, steps = _lifecycle(fake_stripe, prices)
    events = []
    # In order, in real time: each event delivered and processed right after its change.
    for mutate, event_type in steps:
        sub = mutate()
        event = fake_stripe.event(event_type, _event_object(event_type, sub))
        events.append(event)
        assert await deliver(harness.client, fake_stripe, event, webhook_secret) == 200
        await drain(harness.worker.run_once, harness.store)
    in_order = entitlement_of(harness.store, cid)
    assert in_order is not None
    assert (in_order.status, in_order.plan, in_order.max_bots, in_order.quota_minor) == (
        "active", "pro_monthly", 5, 5000)
    assert in_order.cancel_at_period_end is True

    # A second ledger receives every event three times, shuffled, after the fact.
    other = SqliteLedger.open(tmp_path / "other.sqlite")
    try:
        changed: list[str] = []
        reconciler = make_reconciler(other, harness.settings, harness.metrics, changed)
        deps = StripeDeps(settings=harness.settings, store=other,
                          stripe=reconciler.stripe_client, wake_sync=lambda: None,
                          metrics=harness.metrics, reconciler=reconciler)
        client = await start_app(deps)
        worker = StripeSyncWorker(store=other, reconciler=reconciler, metrics=harness.metrics,
                                  batch_max=3)
        deliveries = events * 3
        random.Random(7).shuffle(deliveries)
        try:
            for index, event in enumerate(deliveries):
                assert await deliver(client, fake_stripe, event, webhook_secret) == 200
                if index % 4 == 0:  # some processed mid-stream, some batched
                    await asyncio.to_thread(worker.run_once)
            await drain(worker.run_once, other)
        finally:
            await client.close()
        assert grant(entitlement_of(other, cid)) == grant(in_order)
        assert len(other.list_customer_ids()) == 1
        assert changed, "the account actor was never told to reload"
    finally:
        other.close()


async def test_renewal_resets_usage_only_when_the_period_changes(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str
) -> None:
    customer, sub = await subscribe_and_sync(harness, fake_stripe, prices.pro["id"],
                                             webhook_secret, "renew@example.com")
    first = entitlement_of(harness.store, customer["id"])
    assert first is not None
    # Usage accrued by a charge; a same-period event keeps it.
    _charge(harness.store, first.customer_id, 700)
    assert entitlement_of(harness.store, customer["id"]).used_minor == 700  # type: ignore[union-attr]
    await deliver(harness.client, fake_stripe,
                  fake_stripe.event("customer.subscription.updated", sub), webhook_secret)
    await drain(harness.worker.run_once, harness.store)
    same = entitlement_of(harness.store, customer["id"])
    assert same is not None and same.used_minor == 700
    now = int(time.time())
    renewed = fake_stripe.update_subscription(sub["id"], period_start=now + 10,
                                              period_end=now + 30 * DAY)
    await deliver(harness.client, fake_stripe,
                  fake_stripe.event("invoice.paid", _event_object("invoice.paid", renewed)),
                  webhook_secret)
    await drain(harness.worker.run_once, harness.store)
    after = entitlement_of(harness.store, customer["id"])
    assert after is not None and after.used_minor == 0
    assert after.period_start != first.period_start


async def test_cancelled_subscription_is_not_chargeable(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str
) -> None:
    customer, sub = await subscribe_and_sync(harness, fake_stripe, prices.pro["id"],
                                             webhook_secret, "leaver@example.com")
    active = entitlement_of(harness.store, customer["id"])
    assert active is not None and active.chargeable
    cancelled = fake_stripe.update_subscription(sub["id"], status="canceled")
    await deliver(harness.client, fake_stripe,
                  fake_stripe.event("customer.subscription.deleted", cancelled), webhook_secret)
    await drain(harness.worker.run_once, harness.store)
    after = entitlement_of(harness.store, customer["id"])
    assert after is not None
    assert after.status == "canceled" and not after.chargeable
    local = harness.store.find_customer_by_stripe_id(customer["id"])
    assert local is not None and harness.changed.count(local.customer_id) == 2


async def test_best_subscription_wins_over_newer_cancelled_one(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str
) -> None:
    customer = fake_stripe.add_customer("two@example.com")
    fake_stripe.add_subscription(customer["id"], prices.team_yearly["id"])
    old = fake_stripe.add_subscription(customer["id"], prices.pro["id"],
                                       period_start=int(time.time()) + 5)
    cancelled = fake_stripe.update_subscription(old["id"], status="canceled")
    await deliver(harness.client, fake_stripe,
                  fake_stripe.event("customer.subscription.deleted", cancelled), webhook_secret)
    await drain(harness.worker.run_once, harness.store)
    entitlement = entitlement_of(harness.store, customer["id"])
    assert entitlement is not None
    assert (entitlement.status, entitlement.plan, entitlement.quota_minor,
            entitlement.policy) == ("active", "team_yearly", None, "soft")


async def test_stripe_down_keeps_the_event_until_it_is_back(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str
) -> None:
    customer = fake_stripe.add_customer("outage@example.com")
    sub = fake_stripe.add_subscription(customer["id"], prices.pro["id"])
    assert await deliver(harness.client, fake_stripe,
                         fake_stripe.event("customer.subscription.created", sub),
                         webhook_secret) == 200
    for mode in ("500", "drop"):
        fake_stripe.fail(mode)
        await asyncio.to_thread(harness.worker.run_once)
        [kept] = pending(harness.store)
        assert kept.processed_at is None and kept.last_error
        assert entitlement_of(harness.store, customer["id"]) is None
        await asyncio.sleep(0.5)  # past the (test-sized) backoff
    [kept] = pending(harness.store)
    assert kept.attempts == 2 and kept.next_attempt_at is not None
    fake_stripe.recover()
    await drain(harness.worker.run_once, harness.store)
    entitlement = entitlement_of(harness.store, customer["id"])
    assert entitlement is not None and entitlement.status == "active"


async def test_stripe_sync_actor_processes_webhooks_and_survives_an_outage(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str
) -> None:
    doorbell = Doorbell()
    ref = StripeSync.start(None, store=harness.store, reconciler=harness.reconciler,
                           metrics=harness.metrics, doorbell=doorbell, poll_interval_s=0.1,
                           retry=RetryPolicy(0.05, 0.2))
    try:
        customer = fake_stripe.add_customer("actor@example.com")
        sub = fake_stripe.add_subscription(customer["id"], prices.pro["id"])
        fake_stripe.fail("500", times=3)
        await deliver(harness.client, fake_stripe,
                      fake_stripe.event("customer.subscription.created", sub), webhook_secret)
        doorbell.ring()
        # The event is marked processed just after the entitlement is stored.
        await wait_until(
            lambda: entitlement_of(harness.store, customer["id"]) is not None
            and pending(harness.store) == []
        )
        entitlement = entitlement_of(harness.store, customer["id"])
        assert entitlement is not None and entitlement.status == "active"
    finally:
        ref.stop(timeout=10)
