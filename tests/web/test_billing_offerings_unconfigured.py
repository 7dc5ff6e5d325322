"""Stripe configured without a Checkout price or a trial price: Subscribe and
"Try it for an hour" answer a 503 page that says which is missing, and send
nothing to Stripe."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Service
from tests.web.conftest import StripeStandIn, csrf_of, http_sign_in


@pytest.fixture
def web_environ(stripe_stand_in: StripeStandIn) -> dict[str, str]:
    environ = stripe_stand_in.environ()
    del environ["STRIPE_CHECKOUT_PRICE_ID"], environ["STRIPE_TRIAL_PRICE_ID"]
    return environ


@pytest.mark.parametrize(("path", "message"), [
    ("/pricing/subscribe", "Subscriptions are not configured on this server."),
    ("/pricing/trial", "Trials are not configured on this server."),
])
async def test_an_offering_without_its_price_answers_503_saying_so(
    web_service: Service, stripe_stand_in: StripeStandIn, path: str, message: str
) -> None:
    client = await http_sign_in(web_service, "buyer@example.com")
    async with client, client.post(path, allow_redirects=False,
                                   data={"csrf_token": await csrf_of(client, "/pricing")}) as go:
        assert go.status == 503
        assert message in await go.text()
    assert stripe_stand_in.fake.checkout_sessions == []
