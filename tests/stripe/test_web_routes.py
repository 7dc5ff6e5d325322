"""The web app's billing routes: trial keys, portal, checkout-or-portal, stats."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from gateway.stripe.routes import StripeDeps
from ledger.api_keys import hash_api_key
from tests.fakes import FakeStripe
from tests.stripe.conftest import Harness, Prices, start_app


async def _post(harness: Harness, path: str, body: Any, *, auth: bool = True
                ) -> tuple[int, dict[str, Any]]:
    headers = harness.service_headers() if auth else {}
    response = await harness.client.post(path, json=body, headers=headers)
    return response.status, await response.json()


async def test_trial_issues_a_working_key_once(harness: Harness, fake_stripe: FakeStripe,
                                               prices: Prices) -> None:
    status, body = await _post(harness, "/v1/trials/api-key", {"email": "New.User@Example.com"})
    assert status == 201, body
    assert body["api_key"].startswith("sk_test_") and body["status"] == "trialing"
    key = harness.store.resolve_api_key(hash_api_key(body["api_key"]))
    assert key is not None and key.customer_id == body["customer_id"]
    entitlement = harness.store.get_entitlements(body["customer_id"])["subscription"]
    assert entitlement.chargeable and entitlement.plan == "trial"
    [sub] = fake_stripe.subscriptions_of(body["stripe_customer_id"])
    assert sub["status"] == "trialing"
    assert abs(sub["trial_end"] - (int(time.time()) + 3600)) < 60

    status, again = await _post(harness, "/v1/trials/api-key", {"email": "new.user@example.com"})
    assert status == 409 and again["error"]["code"] == "trial_already_used"
    assert "api_key" not in again
    assert len(fake_stripe.subscriptions_of(body["stripe_customer_id"])) == 1
    assert len(fake_stripe.customers_by_email("new.user@example.com")) == 1


async def test_trial_refused_for_an_email_that_already_paid(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices
) -> None:
    customer = fake_stripe.add_customer("paid@example.com")
    fake_stripe.add_subscription(customer["id"], prices.pro["id"], status="canceled")
    status, body = await _post(harness, "/v1/trials/api-key", {"email": "paid@example.com"})
    assert status == 409 and body["error"]["code"] == "trial_already_used"


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "param"),
    [
        ("/v1/trials/api-key", {}, 400, "parameter_missing", "email"),
        ("/v1/trials/api-key", {"email": "not-an-email"}, 400, "email_invalid", "email"),
        ("/v1/trials/api-key", {"email": 42}, 400, "email_invalid", "email"),
        ("/v1/trials/api-key", [1, 2], 400, "invalid_type", None),
        ("/v1/portal/session", {}, 400, "parameter_missing", "email"),
        ("/v1/portal/session", {"customer_id": "cust_nope"}, 404, "customer_not_found",
         "customer_id"),
        ("/v1/portal/session", {"email": "nobody@example.com"}, 404, "customer_not_found",
         "email"),
        ("/v1/stripe/resolve-url", {"customer_id": "cust_nope"}, 404, "customer_not_found",
         "customer_id"),
        ("/v1/stripe/resolve-url", {"email": "a@b"}, 400, "email_invalid", "email"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(harness: Harness, path: str, body: Any, status: int,
                                          code: str, param: str | None) -> None:
    got_status, got = await _post(harness, path, body)
    assert got_status == status
    assert got["error"]["code"] == code and got["error"]["param"] == param
    assert got["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/v1/trials/api-key", "/v1/portal/session",
                                  "/v1/stripe/resolve-url"])
async def test_service_token_required(harness: Harness, path: str) -> None:
    status, body = await _post(harness, path, {"email": "x@example.com"}, auth=False)
    assert status == 401 and body["error"]["code"] == "invalid_service_token"
    response = await harness.client.post(path, json={"email": "x@example.com"},
                                         headers={"Authorization": "Bearer wrong"})
    assert response.status == 401


async def test_portal_session_for_a_known_customer(harness: Harness, fake_stripe: FakeStripe,
                                                   prices: Prices) -> None:
    status, trial = await _post(harness, "/v1/trials/api-key", {"email": "portal@example.com"})
    assert status == 201
    for body in ({"email": "portal@example.com"}, {"customer_id": trial["customer_id"]}):
        status, got = await _post(harness, "/v1/portal/session", body)
        assert status == 200, got
        assert got["url"].startswith("https://billing.stripe.com/")
    session = fake_stripe.portal_sessions[-1]
    assert session["customer"] == trial["stripe_customer_id"]
    assert session["return_url"] == "https://app.example.com/account"


async def test_resolve_url_checkout_then_portal(harness: Harness, fake_stripe: FakeStripe,
                                                prices: Prices) -> None:
    status, got = await _post(harness, "/v1/stripe/resolve-url", {"email": "buyer@example.com"})
    assert status == 200 and got["kind"] == "checkout"
    checkout = fake_stripe.checkout_sessions[-1]
    assert checkout["customer_email"] == "buyer@example.com"
    assert checkout["mode"] == "subscription" and got["url"] == checkout["url"]

    customer = fake_stripe.add_customer("buyer@example.com")
    sub = fake_stripe.add_subscription(customer["id"], prices.pro["id"])
    status, got = await _post(harness, "/v1/stripe/resolve-url", {"email": "buyer@example.com"})
    assert status == 200 and got["kind"] == "portal"

    fake_stripe.update_subscription(sub["id"], status="canceled")
    status, got = await _post(harness, "/v1/stripe/resolve-url", {"email": "buyer@example.com"})
    assert got["kind"] == "checkout"
    assert fake_stripe.checkout_sessions[-1]["customer"] == customer["id"]


async def test_stats_counts_statuses_and_normalises_mrr(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices
) -> None:
    assert (await _post(harness, "/v1/trials/api-key", {"email": "t1@example.com"}))[0] == 201
    for email, price in (("m1@example.com", prices.pro), ("m2@example.com", prices.pro),
                         ("y1@example.com", prices.team_yearly)):
        customer = fake_stripe.add_customer(email)
        fake_stripe.add_subscription(customer["id"], price["id"])
    weekly = fake_stripe.add_price(lookup_key="weekly", unit_amount=700, interval="week")
    fake_stripe.add_subscription(fake_stripe.add_customer("w@example.com")["id"], weekly["id"])
    response = await harness.client.get("/v1/stats", headers=harness.service_headers())
    assert response.status == 200
    stats = await response.json()
    assert stats["customers_by_status"] == {"trialing": 1}
    assert stats["active_trials"] == 1
    # 2 x 29.00 monthly; 1200.00 yearly = 100.00/month; 7.00 weekly = 7*52/12 = 30.33
    assert stats["mrr_minor"] == {"pro_monthly": {"USD": 5800}, "team_yearly": {"USD": 10000},
                                  "weekly": {"USD": 3033}}
    assert stats["receipts_by_currency_day"] == []


async def test_stripe_down_answers_503_with_retry_after(harness: Harness,
                                                        fake_stripe: FakeStripe) -> None:
    fake_stripe.fail("drop")
    response = await harness.client.post("/v1/trials/api-key", json={"email": "d@example.com"},
                                          headers=harness.service_headers())
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert (await response.json())["error"]["code"] == "stripe_unavailable"


async def test_routes_answer_503_when_stripe_is_not_configured(harness: Harness) -> None:
    settings = dataclasses.replace(harness.settings, secret_key=None)
    deps = StripeDeps(settings=settings, store=harness.store, stripe=None,
                      wake_sync=lambda: None, metrics=harness.metrics)
    client = await start_app(deps)
    try:
        for path in ("/v1/trials/api-key", "/v1/portal/session", "/v1/stripe/resolve-url"):
            response = await client.post(path, json={"email": "x@example.com"},
                                         headers=harness.service_headers())
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "stripe_not_configured"
    finally:
        await client.close()
