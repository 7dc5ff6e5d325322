"""The web app with Stripe configured (the fake Stripe serving its own
Checkout and portal pages): the pricing page lists the configured plans at
their Stripe prices; Subscribe goes to Checkout, or to the portal for a
customer already subscribed; in Chromium, paying in Checkout sends signed
webhooks and the dashboard shows the subscription active; "Manage billing"
opens the portal and comes back; "Try it for an hour" shows a working key."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.stripe_pages import PAGES_PREFIX
from tests.integration.conftest import Service
from tests.web.conftest import (
    StripeStandIn,
    csrf_of,
    http_sign_in,
    screenshots,
    sign_in,
)

ACTIVE_TIMEOUT_MS = 15_000


@pytest.fixture
def web_environ(stripe_stand_in: StripeStandIn) -> dict[str, str]:
    return stripe_stand_in.environ()


@pytest.fixture
async def billing(web_service: Service, stripe_stand_in: StripeStandIn
                  ) -> AsyncIterator[StripeStandIn]:
    stripe_stand_in.send_webhooks_to(web_service)
    yield stripe_stand_in


def _card(page: str, plan: str) -> str:
    match = re.search(rf'<div class="card plan" data-plan="{plan}">(.*?)</div>', page, re.S)
    assert match is not None, f"no card for {plan}"
    return match.group(1)


async def test_pricing_lists_the_configured_plans_at_their_stripe_prices(
    web_service: Service, billing: StripeStandIn
) -> None:
    async with web_service.session.get("/pricing") as response:
        page = await response.text()
    pro, team, trial = (_card(page, p) for p in ("pro_monthly", "team_yearly", "trial"))
    assert "29.00 USD / month" in pro and "up to 5 bots" in pro and "50.00 (hard limit)" in pro
    assert "1200.00 USD / year" in team and "unlimited (soft limit)" in team
    assert "0.00 USD / month" in trial
    # Subscribe buys the checkout price; the trial card carries the trial.
    assert 'id="subscribe"' in pro and 'id="subscribe"' not in team + trial
    assert 'id="trial"' in trial and 'id="trial"' not in pro + team
    assert page.count('id="subscribe"') == 1 and page.count('id="trial"') == 1


async def test_subscribe_goes_to_checkout_and_back_here_or_to_the_portal_when_subscribed(
    web_service: Service, billing: StripeStandIn
) -> None:
    fake = billing.fake
    client = await http_sign_in(web_service, "new-buyer@example.com")
    async with client:
        async with client.post("/pricing/subscribe", allow_redirects=False,
                               data={"csrf_token": await csrf_of(client, "/pricing")}) as go:
            assert go.status == 303
            assert go.headers["Location"].startswith(fake.url + PAGES_PREFIX + "checkout/")
        session = fake.checkout_sessions[-1]
        assert session["customer_email"] == "new-buyer@example.com"
        assert session["success_url"] == (
            web_service.url + "/dashboard?checkout={CHECKOUT_SESSION_ID}")
        assert session["cancel_url"] == web_service.url + "/pricing"
    subscribed = fake.add_customer("already@example.com")
    fake.add_subscription(subscribed["id"], billing.prices.pro["id"])
    client = await http_sign_in(web_service, "already@example.com")
    async with client, client.post("/pricing/subscribe", allow_redirects=False,
                           data={"csrf_token": await csrf_of(client, "/pricing")}) as go:
        assert go.headers["Location"].startswith(fake.url + PAGES_PREFIX + "portal/")
    assert len(fake.checkout_sessions) == 1  # no second Checkout for the subscriber
    portal = fake.portal_sessions[-1]
    assert portal["customer"] == subscribed["id"]
    assert portal["return_url"] == web_service.url + "/dashboard"


async def test_subscribe_in_checkout_and_come_back_with_the_subscription_active(
    web_service: Service, billing: StripeStandIn, browser: Any
) -> None:
    page = await browser.new_page()
    await sign_in(page, web_service, "buyer@example.com")
    assert "no billing account yet" in await page.inner_text("main")
    await page.goto(web_service.url + "/pricing")
    await screenshots(page, "pricing-stripe")
    await page.click("#subscribe")
    await page.wait_for_url(billing.fake.url + PAGES_PREFIX + "checkout/**")
    assert "pro_monthly" in await page.inner_text("main")
    await page.click("#pay")
    await page.wait_for_url(web_service.url + "/dashboard?checkout=cs_test_*")
    active = page.locator(".card", has_text="Status: active")
    await active.wait_for(timeout=ACTIVE_TIMEOUT_MS)  # the page reloads until it is
    assert "plan pro_monthly" in await active.inner_text()
    await screenshots(page, "dashboard-subscribed")
    assert billing.fake.webhook_deliveries == [
        ("checkout.session.completed", 200), ("customer.subscription.created", 200),
        ("invoice.paid", 200)]
    [session] = billing.fake.checkout_sessions
    assert session["status"] == "complete" and session["payment_status"] == "paid"

    await page.click("text=Manage billing")
    await page.wait_for_url(billing.fake.url + PAGES_PREFIX + "portal/**")
    assert "pro_monthly: active" in await page.inner_text("main")
    await page.click("#return")
    await page.wait_for_url(web_service.url + "/dashboard")

    await page.goto(web_service.url + "/pricing")
    await page.click("#subscribe")  # subscribed already: the portal, not a second Checkout
    await page.wait_for_url(billing.fake.url + PAGES_PREFIX + "portal/**")
    assert len(billing.fake.checkout_sessions) == 1


async def test_try_it_for_an_hour_shows_a_key_that_works(
    web_service: Service, billing: StripeStandIn, browser: Any
) -> None:
    page = await browser.new_page()
    await sign_in(page, web_service, "trier@example.com")
    await page.goto(web_service.url + "/pricing")
    await page.click("#trial")
    secret = await page.input_value("#new-key")
    assert "trialing" in await page.inner_text("main")
    await screenshots(page, "trial")
    async with web_service.session.get("/v1/balance",
                                       headers={"Authorization": f"Bearer {secret}"}) as ok:
        assert ok.status == 200
        [entitlement] = (await ok.json())["entitlements"]
        assert entitlement["status"] == "trialing"
    await page.click("text=Go to the dashboard")
    assert "Status: trialing" in await page.inner_text("main")
