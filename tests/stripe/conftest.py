"""Fixtures: the fake Stripe and Admin API servers, a real SqliteLedger on a
temp file, and the real aiohttp app with the Stripe routes on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from actors.stripe._metrics import StripeMetrics
from actors.stripe._poll import Doorbell, RetryPolicy
from actors.stripe.sync import Reconciler, StripeSyncWorker
from gateway.app import api_app
from gateway.http_metrics import HttpMetrics
from gateway.stripe.routes import StripeDeps, add_stripe_routes
from gateway.stripe.settings import StripeSettings, build_stripe_client, load
from ledger.sqlite import SqliteLedger
from tests.fakes import FakeAdminApi, FakeStripe
from tests.stripe.stack import start_stack  # noqa: F401  (the composed service, a fixture)

PLANS = {
    "pro_monthly": {"max_bots": 5, "quota": "50.00", "policy": "hard"},
    "team_yearly": {"max_bots": 20, "quota": None, "policy": "soft"},
    "trial": {"max_bots": 1, "quota": "1.00", "policy": "hard"},
}


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_admin() -> Iterator[FakeAdminApi]:
    fake = FakeAdminApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(16)


@pytest.fixture
def service_token() -> str:
    return "svc_" + secrets.token_hex(16)


@dataclass
class Prices:
    pro: dict[str, Any]
    team_yearly: dict[str, Any]
    trial: dict[str, Any]


@pytest.fixture
def prices(fake_stripe: FakeStripe) -> Prices:
    return Prices(
        pro=fake_stripe.add_price(lookup_key="pro_monthly", unit_amount=2900),
        team_yearly=fake_stripe.add_price(lookup_key="team_yearly", unit_amount=120000,
                                          interval="year"),
        trial=fake_stripe.add_price(lookup_key="trial", unit_amount=0),
    )


@pytest.fixture
def settings(fake_stripe: FakeStripe, fake_admin: FakeAdminApi, webhook_secret: str,
             service_token: str, prices: Prices) -> StripeSettings:
    environ = {
        "STRIPE_SECRET_KEY": fake_stripe.api_key,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_API_BASE": fake_stripe.url,
        "ADMIN_API_URL": fake_admin.url,
        "ADMIN_API_TOKEN": fake_admin.token,
        "PORTAL_RETURN_URL": "https://app.example.com/account",
        "BILLING_SERVICE_TOKEN": service_token,
        "STRIPE_TRIAL_PRICE_ID": prices.trial["id"],
        "STRIPE_CHECKOUT_PRICE_ID": prices.pro["id"],
        "STRIPE_CHECKOUT_SUCCESS_URL": "https://app.example.com/welcome",
        "STRIPE_CHECKOUT_CANCEL_URL": "https://app.example.com/pricing",
        "STRIPE_PLANS": json.dumps(PLANS),
    }
    # No library-level retries in tests: the fakes' failures must reach our code.
    return dataclasses.replace(load(None, environ), max_network_retries=0, read_timeout_s=5.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger.open(tmp_path / "ledger.sqlite")
    yield ledger
    ledger.close()


@pytest.fixture
def metrics() -> StripeMetrics:
    return StripeMetrics(CollectorRegistry())


@dataclass
class Harness:
    """Everything a test drives: the app client, the worker and what it saw."""

    client: TestClient
    store: SqliteLedger
    settings: StripeSettings
    reconciler: Reconciler
    worker: StripeSyncWorker
    doorbell: Doorbell
    metrics: StripeMetrics
    changed: list[str] = field(default_factory=list)
    wakes: list[int] = field(default_factory=list)

    def service_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.service_token}"}


def make_reconciler(store: SqliteLedger, settings: StripeSettings, metrics: StripeMetrics,
                    changed: list[str]) -> Reconciler:
    client = build_stripe_client(settings)
    assert client is not None
    return Reconciler(store=store, stripe_client=client, plans=settings.plans,
                      entitlement_id=settings.entitlement_id,
                      on_entitlement_changed=changed.append, metrics=metrics)


async def start_app(deps: StripeDeps) -> TestClient:
    """The Stripe routes on an app with the gateway's middleware, without the
    rest of the service; blocking calls on a thread as Services.blocking does."""
    app = api_app(HttpMetrics(CollectorRegistry()))
    add_stripe_routes(app, deps, blocking=asyncio.to_thread)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def harness(store: SqliteLedger, settings: StripeSettings,
                  metrics: StripeMetrics) -> AsyncIterator[Harness]:
    changed: list[str] = []
    wakes: list[int] = []
    doorbell = Doorbell()
    reconciler = make_reconciler(store, settings, metrics, changed)

    def wake() -> None:
        wakes.append(1)
        doorbell.ring()

    deps = StripeDeps(settings=settings, store=store, stripe=reconciler.stripe_client,
                      wake_sync=wake, metrics=metrics, reconciler=reconciler)
    client = await start_app(deps)
    worker = StripeSyncWorker(store=store, reconciler=reconciler, metrics=metrics,
                              retry=RetryPolicy(0.05, 0.2))
    yield Harness(client, store, settings, reconciler, worker, doorbell, metrics, changed, wakes)
    await client.close()
