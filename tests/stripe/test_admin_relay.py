"""AdminApiRelay: entitlement changes reach the Admin API despite failures,
and retries never create a second user."""

from __future__ import annotations

import asyncio
import time

from actors.delivery.admin_api import (
    ADMIN_API_TOPIC,
    AdminApiClient,
    AdminApiRelay,
    AdminApiRelayWorker,
)
from actors.stripe._poll import Doorbell, RetryPolicy
from tests.fakes import FakeAdminApi, FakeStripe
from tests.stripe.conftest import Harness, Prices
from tests.stripe.helpers import FAR_FUTURE, deliver, drain, subscribe_and_sync, wait_until


async def _subscribe(harness: Harness, fake: FakeStripe, prices: Prices, secret: str,
                     email: str) -> str:
    customer, _ = await subscribe_and_sync(harness, fake, prices.pro["id"], secret, email)
    return str(customer["id"])


def _relay(harness: Harness, admin: FakeAdminApi, token: str | None = None
           ) -> AdminApiRelayWorker:
    client = AdminApiClient(admin.url, token or admin.token, timeout_s=5.0)
    return AdminApiRelayWorker(store=harness.store, client=client, metrics=harness.metrics,
                               retry=RetryPolicy(0.05, 0.2))


def _backlog(harness: Harness) -> int:
    return harness.store.outbox_backlog().get(ADMIN_API_TOPIC, 0)


async def _run_until_delivered(harness: Harness, relay: AdminApiRelayWorker) -> None:
    deadline = time.monotonic() + 10
    while _backlog(harness):
        await asyncio.to_thread(relay.run_once)
        assert time.monotonic() < deadline, "Admin API update never delivered"
        await asyncio.sleep(0.05)


async def test_admin_api_failures_are_retried_until_delivered_without_duplicate_user(
    harness: Harness, fake_stripe: FakeStripe, fake_admin: FakeAdminApi, prices: Prices,
    webhook_secret: str,
) -> None:
    await _subscribe(harness, fake_stripe, prices, webhook_secret, "relay@example.com")
    assert _backlog(harness) == 1
    fake_admin.fail_next(3)
    relay = _relay(harness, fake_admin)
    await _run_until_delivered(harness, relay)
    [user] = fake_admin.users_with_email("relay@example.com")
    assert user["max_concurrent_bots"] == 5
    assert user["data"]["billing"]["status"] == "active"
    assert user["data"]["billing"]["quota_minor"] == 5000
    failures = harness.metrics.registry.get_sample_value(
        "billing_admin_api_failures_total", {"reason": "find_user_failed"})
    assert failures is not None and failures >= 1


async def test_create_conflict_counts_as_found(
    harness: Harness, fake_stripe: FakeStripe, fake_admin: FakeAdminApi, prices: Prices,
    webhook_secret: str,
) -> None:
    await _subscribe(harness, fake_stripe, prices, webhook_secret, "race@example.com")
    # Someone creates the user between our lookup and our create.
    client = AdminApiClient(fake_admin.url, fake_admin.token)
    real_find = client.find_user
    calls = {"n": 0}

    def find_then_race(email: str) -> dict[str, object] | None:
        calls["n"] += 1
        if calls["n"] == 1:
            AdminApiClient(fake_admin.url, fake_admin.token).ensure_user(email)
            return None
        return real_find(email)

    client.find_user = find_then_race  # type: ignore[method-assign]
    relay = AdminApiRelayWorker(store=harness.store, client=client, metrics=harness.metrics)
    await asyncio.to_thread(relay.run_once)
    assert _backlog(harness) == 0
    assert len(fake_admin.users_with_email("race@example.com")) == 1
    assert fake_admin.create_attempts == 2  # the racer's and our conflicting one


async def test_wrong_admin_token_is_refused_and_kept_for_retry(
    harness: Harness, fake_stripe: FakeStripe, fake_admin: FakeAdminApi, prices: Prices,
    webhook_secret: str,
) -> None:
    await _subscribe(harness, fake_stripe, prices, webhook_secret, "token@example.com")
    relay = _relay(harness, fake_admin, token="adm_wrong")
    await asyncio.to_thread(relay.run_once)
    assert fake_admin.users == {}
    [kept] = harness.store.pending_outbox(ADMIN_API_TOPIC, FAR_FUTURE, 10)
    assert kept.attempts == 1 and kept.last_error


async def test_relay_actor_delivers_the_newest_state(
    harness: Harness, fake_stripe: FakeStripe, fake_admin: FakeAdminApi, prices: Prices,
    webhook_secret: str,
) -> None:
    cid = await _subscribe(harness, fake_stripe, prices, webhook_secret, "actor2@example.com")
    [sub] = fake_stripe.subscriptions_of(cid)
    cancelled = fake_stripe.update_subscription(sub["id"], status="canceled")
    await deliver(harness.client, fake_stripe,
                  fake_stripe.event("customer.subscription.deleted", cancelled), webhook_secret)
    await drain(harness.worker.run_once, harness.store)
    assert _backlog(harness) == 2
    fake_admin.fail_next(1)
    doorbell = Doorbell()
    ref = AdminApiRelay.start(None, store=harness.store,
                              client=AdminApiClient(fake_admin.url, fake_admin.token),
                              metrics=harness.metrics, doorbell=doorbell, poll_interval_s=0.05,
                              retry=RetryPolicy(0.05, 0.1))
    try:
        await wait_until(lambda: _backlog(harness) == 0)
    finally:
        ref.stop(timeout=10)
    [user] = fake_admin.users_with_email("actor2@example.com")
    assert user["data"]["billing"]["status"] == "canceled"
    assert user["data"]["billing"]["chargeable"] is False
    # A cancelled subscription keeps its plan on record but grants no bots.
    assert user["max_concurrent_bots"] == 0
