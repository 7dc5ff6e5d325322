"""The webhook accepts exactly Stripe-signed, recent deliveries; anything else
is refused with a Stripe-shaped 400 and records nothing."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from gateway.stripe.routes import StripeDeps
from tests.fakes import FakeStripe
from tests.fakes.stripe_server import sign_payload
from tests.stripe.conftest import Harness, Prices, start_app
from tests.stripe.helpers import pending


def _event(fake: FakeStripe, prices: Prices) -> dict[str, Any]:
    customer = fake.add_customer("sig@example.com")
    sub = fake.add_subscription(customer["id"], prices.pro["id"])
    return fake.event("customer.subscription.updated", sub)


def _valid(body: bytes, secret: str) -> str:
    return sign_payload(body, secret)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("valid", 200),
        ("tampered_body", 400),
        ("wrong_secret", 400),
        ("stale", 400),
        ("future", 400),
        ("missing_header", 400),
        ("two_v1_one_valid", 200),
        ("garbage_header", 400),
    ],
)
async def test_signature_matrix(harness: Harness, fake_stripe: FakeStripe, prices: Prices,
                                webhook_secret: str, case: str, expected: int) -> None:
    event = _event(fake_stripe, prices)
    body = json.dumps(event).encode()
    now = int(time.time())
    headers = {"Content-Type": "application/json"}
    if case == "valid":
        headers["Stripe-Signature"] = _valid(body, webhook_secret)
    elif case == "tampered_body":
        headers["Stripe-Signature"] = _valid(body, webhook_secret)
        body = body.replace(b"active", b"activf", 1)
    elif case == "wrong_secret":
        headers["Stripe-Signature"] = _valid(body, "whsec_not_the_right_one")
    elif case == "stale":
        headers["Stripe-Signature"] = sign_payload(body, webhook_secret, now - 301)
    elif case == "future":
        headers["Stripe-Signature"] = sign_payload(body, webhook_secret, now + 301)
    elif case == "two_v1_one_valid":
        good = sign_payload(body, webhook_secret, now).split(",")[1]
        bad = sign_payload(body, "whsec_other", now).split(",")[1]
        headers["Stripe-Signature"] = f"t={now},{bad},{good}"
    elif case == "garbage_header":
        headers["Stripe-Signature"] = "t=notanumber,v1=zz"
    response = await harness.client.post("/v1/stripe/webhook", data=body, headers=headers)
    assert response.status == expected
    stored = pending(harness.store)
    if expected == 200:
        assert [e.event_id for e in stored] == [event["id"]]
        assert harness.wakes, "StripeSync was not told about the new event"
    else:
        error = (await response.json())["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_signature"
        assert stored == [] and harness.wakes == []


async def test_rotation_accepts_either_secret(harness: Harness, fake_stripe: FakeStripe,
                                              prices: Prices, webhook_secret: str) -> None:
    new_secret = "whsec_rotated_in"
    settings = dataclasses.replace(harness.settings,
                                   webhook_secrets=(webhook_secret, new_secret))
    deps = StripeDeps(settings=settings, store=harness.store, stripe=None,
                      wake_sync=lambda: None, metrics=harness.metrics)
    client = await start_app(deps)
    try:
        for secret in (webhook_secret, new_secret):
            body, headers = fake_stripe.delivery(_event(fake_stripe, prices), secret)
            response = await client.post("/v1/stripe/webhook", data=body, headers=headers)
            assert response.status == 200
        assert len(pending(harness.store)) == 2
    finally:
        await client.close()


async def test_duplicate_delivery_is_recorded_once(harness: Harness, fake_stripe: FakeStripe,
                                                   prices: Prices, webhook_secret: str) -> None:
    event = _event(fake_stripe, prices)
    answers = []
    for _ in range(3):
        body, headers = fake_stripe.delivery(event, webhook_secret)
        response = await harness.client.post("/v1/stripe/webhook", data=body, headers=headers)
        answers.append((response.status, (await response.json())["duplicate"]))
    assert answers == [(200, False), (200, True), (200, True)]
    assert len(pending(harness.store)) == 1


async def test_unhandled_event_types_are_acknowledged_not_stored(
    harness: Harness, fake_stripe: FakeStripe, webhook_secret: str
) -> None:
    event = fake_stripe.event("plan.created", {"object": "plan", "id": "plan_x"})
    body, headers = fake_stripe.delivery(event, webhook_secret)
    response = await harness.client.post("/v1/stripe/webhook", data=body, headers=headers)
    assert response.status == 200
    assert pending(harness.store) == []


async def test_webhook_without_secret_answers_503(harness: Harness, fake_stripe: FakeStripe,
                                                  prices: Prices, webhook_secret: str) -> None:
    settings = dataclasses.replace(harness.settings, webhook_secrets=(), secret_key=None)
    deps = StripeDeps(settings=settings, store=harness.store, stripe=None,
                      wake_sync=lambda: None, metrics=harness.metrics)
    client = await start_app(deps)
    try:
        body, headers = fake_stripe.delivery(_event(fake_stripe, prices), webhook_secret)
        response = await client.post("/v1/stripe/webhook", data=body, headers=headers)
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "stripe_not_configured"
    finally:
        await client.close()


async def test_a_large_signed_event_is_verified_over_all_its_bytes(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str
) -> None:
    """Stripe events with expanded objects exceed the API's 64 KiB bodies; the
    whole body must be read (not the first chunk) or the signature fails."""
    event = _event(fake_stripe, prices)
    event["data"]["object"]["metadata"] = {f"k{i}": "x" * 400 for i in range(40)}
    event["data"]["padding"] = "p" * 300_000
    body, headers = fake_stripe.delivery(event, webhook_secret)
    assert 256 * 1024 < len(body) < 512 * 1024
    response = await harness.client.post("/v1/stripe/webhook", data=body, headers=headers)
    assert response.status == 200, await response.text()
    assert [e.event_id for e in pending(harness.store)] == [event["id"]]


async def test_an_oversized_webhook_is_refused_with_413(
    harness: Harness, fake_stripe: FakeStripe, prices: Prices, webhook_secret: str
) -> None:
    event = _event(fake_stripe, prices)
    event["data"]["padding"] = "p" * (600 * 1024)
    body, headers = fake_stripe.delivery(event, webhook_secret)
    response = await harness.client.post("/v1/stripe/webhook", data=body, headers=headers)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"
    assert pending(harness.store) == []
