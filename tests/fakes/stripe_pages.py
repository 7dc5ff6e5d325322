"""The fake Stripe's own hosted pages: a minimal Checkout and billing portal
a headless browser can reach offline.

Stripe's API returns the URL of a Checkout Session or portal session; with
`FakeStripe(serve_pages=True)` that URL points at the fake itself, under
PAGES_PREFIX. Paying there does what Stripe does after a successful
Checkout: the session completes, a customer (if the session had only an
email) and an active subscription are made, the webhooks
`checkout.session.completed`, `customer.subscription.created` and
`invoice.paid` are sent signed (`Stripe-Signature`, the scheme the `stripe`
library checks) to `fake.webhook_target`, and the browser is sent to the
session's success URL. Kept apart from stripe_server.py's API handlers.
"""

from __future__ import annotations

import copy
import html
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.stripe_server import FakeStripe

PAGES_PREFIX: Final = "/pages/"
WEBHOOK_TIMEOUT_S: Final = 10.0
_REAL_URLS: Final = {"checkout": "https://checkout.stripe.com/c/pay/",
                     "portal": "https://billing.stripe.com/p/session/"}


@dataclass(frozen=True)
class WebhookTarget:
    """Where the fake sends events, and the endpoint's signing secret."""

    url: str
    secret: str


def page_url(fake: FakeStripe, kind: str, session_id: str) -> str:
    """A session's `url`: Stripe's host, or the fake's own page when it serves them."""
    if not fake.serve_pages:
        return _REAL_URLS[kind] + session_id
    return f"{fake.url}{PAGES_PREFIX}{kind}/{session_id}"


def add_page_routes(app: web.Application, fake: FakeStripe) -> None:
    app.router.add_get(PAGES_PREFIX + "checkout/{id}", _checkout_page(fake))
    app.router.add_post(PAGES_PREFIX + "checkout/{id}", _pay(fake))
    app.router.add_get(PAGES_PREFIX + "portal/{id}", _portal_page(fake))


def _html(title: str, body: str, status: int = 200) -> web.Response:
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)} (fake Stripe)</title></head>"
            f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>")
    return web.Response(text=text, status=status, content_type="text/html")


def _find(items: list[dict[str, Any]], session_id: str) -> dict[str, Any]:
    for item in items:
        if item["id"] == session_id:
            return item
    raise web.HTTPNotFound(text="no such session")


def _checkout_page(fake: FakeStripe) -> Any:
    async def show(request: web.Request) -> web.Response:
        with fake._lock:
            session = copy.deepcopy(_find(fake.checkout_sessions, request.match_info["id"]))
            prices = [copy.deepcopy(fake.prices.get(item.get("price", ""), {}))
                      for item in fake.checkout_line_items.get(session["id"], [])]
        lines = "".join(
            f"<li>{html.escape(str(p.get('lookup_key') or p.get('id')))}: "
            f"{p.get('unit_amount')} {html.escape(str(p.get('currency', '')).upper())} "
            f"(minor units) a {html.escape(str((p.get('recurring') or {}).get('interval')))}</li>"
            for p in prices)
        who = html.escape(str(session.get("customer_email") or session.get("customer")))
        cancel = html.escape(str(session.get("cancel_url") or ""))
        return _html("Checkout", (
            f"<p>Subscribing <strong>{who}</strong> to:</p><ul>{lines}</ul>"
            f'<form method="post"><button type="submit" id="pay">Pay</button></form>'
            f'<p><a href="{cancel}" id="cancel">Cancel</a></p>'))

    return show


def _complete(fake: FakeStripe, session_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Under the fake's lock: the session paid, its subscription made. Returns
    (the session, the events Stripe sends about it)."""
    session = _find(fake.checkout_sessions, session_id)
    if session["status"] != "open":
        return session, []
    items = fake.checkout_line_items.get(session_id) or []
    if not items:
        raise web.HTTPBadRequest(text="the session has no line items")
    customer_id = session.get("customer") or fake._create_customer(
        {"email": session.get("customer_email")})["id"]
    sub = fake._create_subscription(
        customer_id, items[0]["price"], status="active", period_start=None, period_days=30,
        trial_end=None)
    price = sub["items"]["data"][0]["price"]
    invoice = invoice_of(fake, customer_id, sub["id"], int(price["unit_amount"] or 0),
                               price["currency"])
    sub["latest_invoice"] = invoice["id"]
    session.update(status="complete", payment_status="paid", customer=customer_id,
                   subscription=sub["id"], invoice=invoice["id"],
                   amount_total=invoice["amount_paid"], currency=price["currency"])
    events = [fake.event("checkout.session.completed", session),
              fake.event("customer.subscription.created", sub),
              fake.event("invoice.paid", invoice)]
    return session, events


def _pay(fake: FakeStripe) -> Any:
    async def pay(request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["id"]
        with fake._lock:
            session, events = _complete(fake, session_id)
            success_url = str(session["success_url"])
        await deliver(fake, events)
        raise web.HTTPSeeOther(success_url.replace("{CHECKOUT_SESSION_ID}", session_id))

    return pay


async def deliver(fake: FakeStripe, events: list[dict[str, Any]]) -> None:
    """Send `events` in order, signed, to the webhook target; each answer is
    recorded in `fake.webhook_deliveries` as (event type, HTTP status)."""
    target = fake.webhook_target
    if target is None or not events:
        return
    timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        for event in events:
            body, headers = fake.delivery(event, target.secret)
            async with client.post(target.url, data=body, headers=headers) as response:
                status = response.status
            with fake._lock:
                fake.webhook_deliveries.append((str(event["type"]), status))


def _portal_page(fake: FakeStripe) -> Any:
    async def show(request: web.Request) -> web.Response:
        with fake._lock:
            session = copy.deepcopy(_find(fake.portal_sessions, request.match_info["id"]))
            subs = [copy.deepcopy(s) for s in fake.subscriptions.values()
                    if s["customer"] == session["customer"]]
        rows = "".join(
            f'<li class="subscription">{html.escape(_plan_of(s))}: '
            f"{html.escape(str(s['status']))}</li>" for s in subs) or "<li>none</li>"
        back = html.escape(str(session.get("return_url") or ""))
        return _html("Billing portal", (
            f"<p>Customer {html.escape(str(session['customer']))}</p>"
            f"<h2>Subscriptions</h2><ul>{rows}</ul>"
            f'<p><a href="{back}" id="return">Return to the service</a></p>'))

    return show


def _plan_of(subscription: dict[str, Any]) -> str:
    price = subscription["items"]["data"][0]["price"]
    return str(price.get("lookup_key") or price["id"])


def invoice_of(fake: FakeStripe, customer_id: str, sub_id: str, amount_minor: int,
               currency: str) -> dict[str, Any]:
    """A paid invoice for a subscription's first period (Stripe's example object)."""
    from tests.fakes.stripe_server import fixture

    now = int(time.time())
    invoice = fixture("invoice")
    invoice.update(id=fake._new_id("in"), customer=customer_id, subscription=sub_id,
                   status="paid", amount_due=amount_minor, amount_paid=amount_minor,
                   amount_remaining=0, currency=currency, created=now, period_start=now,
                   period_end=now, billing_reason="subscription_create", livemode=False)
    return invoice
