"""A fake Stripe API on 127.0.0.1 that speaks Stripe's wire format.

Requests are form-encoded with Stripe's bracket notation (`items[0][price]`,
`expand[]`); answers are JSON objects copied from Stripe's own example
objects (`fixtures3.json`) with our fields set; errors are Stripe-shaped and
every answer carries a `Request-Id`. Helpers mutate state, build events and
sign them exactly as Stripe does (`t=...,v1=HMAC-SHA256(secret, "t.body")`).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes._threaded import ThreadedServer
from tests.fakes.stripe_pages import PAGES_PREFIX, WebhookTarget, add_page_routes, page_url

# Stripe's own example objects (a subset of fixtures3.json from stripe/openapi,
# unchanged, MIT licence in STRIPE_FIXTURES_LICENSE).
_FIXTURES = Path(__file__).with_name("stripe_fixtures.json")

_fixtures_cache: dict[str, Any] = {}
_PARAMS: web.RequestKey[dict[str, Any]] = web.RequestKey("stripe_params", dict)


def fixtures() -> dict[str, Any]:
    """Stripe's example object of every resource (`resources.<name>`)."""
    if not _fixtures_cache:
        _fixtures_cache.update(json.loads(_FIXTURES.read_text(encoding="utf-8"))["resources"])
    return _fixtures_cache


def fixture(name: str) -> dict[str, Any]:
    return copy.deepcopy(fixtures()[name])


def parse_bracket_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation -> nested dicts and lists.

    `items[0][price]=p` -> {"items": [{"price": "p"}]}; `expand[]=a` appends.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = [key.split("[", 1)[0], *re.findall(r"\[([^\]]*)\]", key)]
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return node


def sign_payload(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe would send for `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class StripeError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.code, self.param = (
            status, type_, message, code, param)


class FakeStripe:
    """State plus an aiohttp app. Thread-safe: tests mutate while the server serves."""

    def __init__(self, api_key: str | None = None, *, serve_pages: bool = False) -> None:
        """`serve_pages`: Checkout and portal session URLs point at this fake's
        own pages (stripe_pages.py) instead of Stripe's hosts."""
        self.api_key = api_key or "sk_test_" + secrets.token_hex(12)
        self.serve_pages = serve_pages
        self.webhook_target: WebhookTarget | None = None  # where the pages send events
        self.webhook_deliveries: list[tuple[str, int]] = []  # (event type, HTTP status)
        self.checkout_line_items: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.customers: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.checkout_sessions: list[dict[str, Any]] = []
        self.portal_sessions: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.meters: dict[str, dict[str, Any]] = {}
        # Accepted meter events by identifier (Stripe keeps one per identifier).
        self.meter_events: dict[str, dict[str, Any]] = {}
        self.invoice_items: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, tuple[int, bytes]] = {}
        self._fail_mode: str | None = None
        self._fail_remaining: int | None = None
        self._server = ThreadedServer(self._build_app())

    # -- lifecycle ----------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeStripe:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    # -- failure switch -----------------------------------------------------
    def fail(self, mode: str = "500", times: int | None = None) -> None:
        """Answer every request with a 500 (`"500"`), drop the connection
        (`"drop"`), or do the work and then answer 500 as if the reply were
        lost (`"lost_reply"`), `times` times or until `recover()`."""
        with self._lock:
            self._fail_mode, self._fail_remaining = mode, times

    def recover(self) -> None:
        with self._lock:
            self._fail_mode, self._fail_remaining = None, None

    def _take_failure(self) -> str | None:
        with self._lock:
            if self._fail_mode is None:
                return None
            mode = self._fail_mode
            if self._fail_remaining is not None:
                self._fail_remaining -= 1
                if self._fail_remaining <= 0:
                    self._fail_mode, self._fail_remaining = None, None
            return mode

    # -- state helpers --------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}{secrets.token_hex(3)}"

    def add_price(self, *, lookup_key: str | None, unit_amount: int, currency: str = "usd",
                  interval: str = "month", interval_count: int = 1,
                  metadata: dict[str, str] | None = None) -> dict[str, Any]:
        price = fixture("price")
        price.update(id=self._new_id("price"), lookup_key=lookup_key, unit_amount=unit_amount,
                     unit_amount_decimal=str(unit_amount), currency=currency,
                     metadata=dict(metadata or {}), created=int(time.time()))
        price["recurring"].update(interval=interval, interval_count=interval_count)
        with self._lock:
            self.prices[price["id"]] = price
        return copy.deepcopy(price)

    def add_customer(self, email: str | None) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._create_customer({"email": email}))

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = fixture("customer")
        customer.update(id=self._new_id("cus"), email=params.get("email"),
                        name=params.get("name"), metadata=dict(params.get("metadata") or {}),
                        created=int(time.time()), discount=None, currency=None)
        self.customers[customer["id"]] = customer
        return customer

    def add_subscription(self, customer_id: str, price_id: str, *, status: str = "active",
                         period_start: int | None = None, period_days: int = 30,
                         trial_end: int | None = None,
                         cancel_at_period_end: bool = False) -> dict[str, Any]:
        with self._lock:
            sub = self._create_subscription(customer_id, price_id, status=status,
                                            period_start=period_start, period_days=period_days,
                                            trial_end=trial_end)
            sub["cancel_at_period_end"] = cancel_at_period_end
            return copy.deepcopy(sub)

    def _create_subscription(self, customer_id: str, price_id: str, *, status: str,
                             period_start: int | None, period_days: int,
                             trial_end: int | None) -> dict[str, Any]:
        if customer_id not in self.customers:
            raise StripeError(400, "invalid_request_error", f"No such customer: '{customer_id}'",
                              "resource_missing", "customer")
        if price_id not in self.prices:
            raise StripeError(400, "invalid_request_error", f"No such price: '{price_id}'",
                              "resource_missing", "items[0][price]")
        now = int(time.time())
        start = now if period_start is None else period_start
        end = trial_end if trial_end is not None and status == "trialing" else (
            start + period_days * 86400)
        sub = fixture("subscription")
        sub_id = self._new_id("sub")
        item = sub["items"]["data"][0]
        item.update(id=self._new_id("si"), subscription=sub_id, quantity=1,
                    price=copy.deepcopy(self.prices[price_id]),
                    current_period_start=start, current_period_end=end, created=now)
        item.pop("plan", None)
        sub.update(id=sub_id, customer=customer_id, status=status, created=now,
                   start_date=start, billing_cycle_anchor=start,
                   currency=self.prices[price_id]["currency"],
                   trial_start=start if trial_end else None, trial_end=trial_end,
                   cancel_at=None, canceled_at=None, ended_at=None,
                   cancel_at_period_end=False, latest_invoice=None, metadata={},
                   next_pending_invoice_item_invoice=None)
        sub["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"
        self.subscriptions[sub_id] = sub
        return sub

    def update_subscription(self, sub_id: str, *, status: str | None = None,
                            period_start: int | None = None, period_end: int | None = None,
                            cancel_at_period_end: bool | None = None,
                            price_id: str | None = None) -> dict[str, Any]:
        """What happens in Stripe when a customer renews, upgrades or cancels."""
        with self._lock:
            sub = self.subscriptions[sub_id]
            item = sub["items"]["data"][0]
            if status is not None:
                sub["status"] = status
                if status == "canceled":
                    sub["canceled_at"] = sub["ended_at"] = int(time.time())
            if period_start is not None:
                item["current_period_start"] = period_start
            if period_end is not None:
                item["current_period_end"] = period_end
            if cancel_at_period_end is not None:
                sub["cancel_at_period_end"] = cancel_at_period_end
            if price_id is not None:
                item["price"] = copy.deepcopy(self.prices[price_id])
            return copy.deepcopy(sub)

    def add_meter(self, event_name: str) -> dict[str, Any]:
        """A sum meter reading `payload[value]`, customers by `payload[stripe_customer_id]`."""
        meter = fixture("billing.meter")
        meter.update(id=self._new_id("mtr"), event_name=event_name, display_name=event_name,
                     livemode=False, created=int(time.time()), updated=int(time.time()))
        meter["customer_mapping"]["event_payload_key"] = "stripe_customer_id"
        with self._lock:
            self.meters[meter["id"]] = meter
        return copy.deepcopy(meter)

    def metered_total(self, customer_id: str, event_name: str) -> int:
        """The sum of a customer's accepted meter events (what the invoice bills)."""
        with self._lock:
            return sum(int(e["payload"]["value"]) for e in self.meter_events.values()
                       if e["event_name"] == event_name
                       and e["payload"]["stripe_customer_id"] == customer_id)

    def invoice_items_of(self, customer_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(i) for i in self.invoice_items.values()
                    if i["customer"] == customer_id]

    def upcoming_invoice_minor(self, customer_id: str, event_name: str) -> int:
        """What the customer's next invoice bills for usage, at 1 minor unit per
        meter unit (the metered price the plans use), plus pending invoice items."""
        items = sum(i["amount"] for i in self.invoice_items_of(customer_id))
        return self.metered_total(customer_id, event_name) + items

    def subscriptions_of(self, customer_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(s) for s in self.subscriptions.values()
                    if s["customer"] == customer_id]

    def customers_by_email(self, email: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(c) for c in self.customers.values() if c["email"] == email]

    # -- events ---------------------------------------------------------------
    def event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A webhook event as Stripe sends it (snapshot of `obj`)."""
        event = fixture("event")
        event.update(id=self._new_id("evt"), type=event_type, created=int(time.time()),
                     data={"object": copy.deepcopy(obj)}, api_version="2025-03-31.basil")
        return event

    @staticmethod
    def delivery(event: dict[str, Any], secrets_: list[str] | str,
                 timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """(raw body, headers) of one delivery; several secrets => several v1."""
        body = json.dumps(event, indent=2).encode()
        keys = [secrets_] if isinstance(secrets_, str) else secrets_
        t = int(time.time()) if timestamp is None else timestamp
        parts = [sign_payload(body, key, t).split(",", 1)[1] for key in keys]
        return body, {"Stripe-Signature": ",".join([f"t={t}", *parts]),
                      "Content-Type": "application/json"}

    # -- HTTP -------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/v1/customers", self._json(self._list_customers))
        r.add_get("/v1/customers/search", self._json(self._search_customers))
        r.add_post("/v1/customers", self._json(self._post_customer))
        r.add_get("/v1/customers/{id}", self._json(self._get_customer))
        r.add_get("/v1/subscriptions", self._json(self._list_subscriptions))
        r.add_post("/v1/subscriptions", self._json(self._post_subscription))
        r.add_get("/v1/subscriptions/{id}", self._json(self._get_subscription))
        r.add_delete("/v1/subscriptions/{id}", self._json(self._cancel_subscription))
        r.add_get("/v1/prices", self._json(self._list_prices))
        r.add_get("/v1/prices/{id}", self._json(self._get_price))
        r.add_post("/v1/checkout/sessions", self._json(self._post_checkout))
        r.add_post("/v1/billing_portal/sessions", self._json(self._post_portal))
        r.add_post("/v1/billing/meter_events", self._json(self._post_meter_event))
        r.add_get("/v1/billing/meters/{id}/event_summaries", self._json(self._meter_summaries))
        r.add_post("/v1/invoiceitems", self._json(self._post_invoice_item))
        add_page_routes(app, self)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(PAGES_PREFIX):  # pages for a browser: no API key
            return await handler(request)
        request_id = "req_" + secrets.token_hex(7)
        headers = {"Request-Id": request_id}
        mode = self._take_failure()
        lost_reply = mode == "lost_reply"
        if lost_reply:
            mode = None
        if mode == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if mode is not None:
            return self._error(StripeError(500, "api_error", "An unknown error occurred"),
                               headers)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(StripeError(401, "invalid_request_error",
                                           "Invalid API Key provided"), headers)
        pairs = list(parse_qsl(request.query_string, keep_blank_values=True))
        if request.method == "POST":
            ctype = request.headers.get("Content-Type", "")
            if not ctype.startswith("application/x-www-form-urlencoded"):
                return self._error(StripeError(400, "invalid_request_error",
                                               "Expected form-encoded body"), headers)
            pairs += parse_qsl((await request.read()).decode(), keep_blank_values=True)
        params = parse_bracket_form(pairs)
        with self._lock:
            self.requests.append((request.method, request.path, params))
        idem = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        if idem:
            with self._lock:
                cached = self._idempotent.get(idem)
            if cached is not None:
                return web.Response(status=cached[0], body=cached[1],
                                    content_type="application/json",
                                    headers={**headers, "Idempotent-Replayed": "true"})
        request[_PARAMS] = params
        try:
            response = await handler(request)
        except StripeError as error:
            return self._error(error, headers)
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        if idem:
            with self._lock:
                self._idempotent[idem] = (response.status, response.body)
        if lost_reply:
            return self._error(StripeError(500, "api_error", "An unknown error occurred"),
                               headers)
        response.headers.update(headers)
        return response

    def _json(self, fn: Any) -> Any:
        """An async route handler around a state handler returning (status, json);
        the handlers never await, so holding the lock is safe on the fake's loop."""

        async def handle(request: web.Request) -> web.Response:
            with self._lock:
                status, payload = fn(request)
            return web.Response(status=status, body=json.dumps(payload).encode(),
                                content_type="application/json")

        return handle

    @staticmethod
    def _error(error: StripeError, headers: dict[str, str]) -> web.Response:
        body = {"error": {"type": error.type, "message": error.message, "code": error.code,
                          "param": error.param}}
        return web.Response(status=error.status, body=json.dumps(body).encode(),
                            content_type="application/json", headers=headers)

    @staticmethod
    def _list(data: list[dict[str, Any]], url: str, limit: Any = None) -> dict[str, Any]:
        count = int(limit) if limit else 10
        return {"object": "list", "data": [copy.deepcopy(d) for d in data[:count]],
                "has_more": len(data) > count, "url": url}

    # Handlers run under self._lock (taken by the middleware) and return (status, json).
    def _list_customers(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        found = [c for c in self.customers.values()
                 if "email" not in params or c["email"] == params["email"]]
        found.sort(key=lambda c: c["created"], reverse=True)
        return 200, self._list(found, "/v1/customers", params.get("limit"))

    def _search_customers(self, request: web.Request) -> tuple[int, Any]:
        query = request[_PARAMS].get("query", "")
        match = re.fullmatch(r"\s*email\s*:\s*['\"](.*)['\"]\s*", query)
        if match is None:
            raise StripeError(400, "invalid_request_error", "Unsupported search query",
                              "parameter_invalid", "query")
        found = [c for c in self.customers.values() if c["email"] == match.group(1)]
        return 200, {"object": "search_result", "data": copy.deepcopy(found), "has_more": False,
                     "next_page": None, "url": "/v1/customers/search"}

    def _post_customer(self, request: web.Request) -> tuple[int, Any]:
        return 200, copy.deepcopy(self._create_customer(request[_PARAMS]))

    def _get_customer(self, request: web.Request) -> tuple[int, Any]:
        customer = self.customers.get(request.match_info["id"])
        if customer is None:
            raise StripeError(404, "invalid_request_error",
                              f"No such customer: '{request.match_info['id']}'",
                              "resource_missing", "id")
        return 200, copy.deepcopy(customer)

    def _expand(self, sub: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        sub = copy.deepcopy(sub)
        if any(e.endswith("items.data.price.product") for e in expand):
            for item in sub["items"]["data"]:
                product = fixture("product")
                product["id"] = item["price"]["product"]
                item["price"]["product"] = product
        return sub

    def _list_subscriptions(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        status = params.get("status")
        expand = params.get("expand", [])
        found = []
        for sub in self.subscriptions.values():
            if "customer" in params and sub["customer"] != params["customer"]:
                continue
            if status is None and sub["status"] in ("canceled", "incomplete_expired"):
                continue
            if status not in (None, "all") and sub["status"] != status:
                continue
            found.append(self._expand(sub, expand))
        found.sort(key=lambda s: s["created"], reverse=True)
        return 200, self._list(found, "/v1/subscriptions", params.get("limit"))

    def _find_subscription(self, sub_id: str) -> dict[str, Any]:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise StripeError(404, "invalid_request_error", f"No such subscription: '{sub_id}'",
                              "resource_missing", "id")
        return sub

    def _get_subscription(self, request: web.Request) -> tuple[int, Any]:
        sub = self._find_subscription(request.match_info["id"])
        return 200, self._expand(sub, request[_PARAMS].get("expand", []))

    def _cancel_subscription(self, request: web.Request) -> tuple[int, Any]:
        sub = self._find_subscription(request.match_info["id"])
        sub.update(status="canceled", canceled_at=int(time.time()), ended_at=int(time.time()))
        return 200, copy.deepcopy(sub)

    def _post_subscription(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        items = params.get("items") or []
        if not items or "price" not in items[0]:
            raise StripeError(400, "invalid_request_error", "Missing required param: items.",
                              "parameter_missing", "items")
        trial_end = params.get("trial_end")
        trial = int(trial_end) if trial_end not in (None, "now") else None
        if trial is not None and trial <= int(time.time()):
            raise StripeError(400, "invalid_request_error", "trial_end must be in the future",
                              "parameter_invalid", "trial_end")
        sub = self._create_subscription(
            params.get("customer", ""), items[0]["price"],
            status="trialing" if trial else "active", period_start=None, period_days=30,
            trial_end=trial)
        sub["metadata"] = dict(params.get("metadata") or {})
        return 200, self._expand(sub, params.get("expand", []))

    def _list_prices(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        keys = params.get("lookup_keys")
        found = [p for p in self.prices.values() if keys is None or p["lookup_key"] in keys]
        return 200, self._list(found, "/v1/prices", params.get("limit"))

    def _get_price(self, request: web.Request) -> tuple[int, Any]:
        price = self.prices.get(request.match_info["id"])
        if price is None:
            raise StripeError(404, "invalid_request_error", "No such price",
                              "resource_missing", "id")
        return 200, copy.deepcopy(price)

    def _post_checkout(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        for name in ("success_url", "mode"):
            if name not in params:
                raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.",
                                  "parameter_missing", name)
        session = fixture("checkout.session")
        session_id = "cs_test_" + secrets.token_hex(16)
        session.update(id=session_id, mode=params["mode"], customer=params.get("customer"),
                       customer_email=params.get("customer_email"),
                       success_url=params["success_url"], cancel_url=params.get("cancel_url"),
                       url=page_url(self, "checkout", session_id),
                       payment_intent=None, status="open", created=int(time.time()))
        self.checkout_sessions.append(session)
        self.checkout_line_items[session_id] = list(params.get("line_items") or [])
        return 200, copy.deepcopy(session)

    def _post_portal(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        customer = params.get("customer")
        if customer not in self.customers:
            raise StripeError(400, "invalid_request_error", f"No such customer: '{customer}'",
                              "resource_missing", "customer")
        session = fixture("billing_portal.session")
        session_id = "bps_" + secrets.token_hex(12)
        session.update(id=session_id, customer=customer, return_url=params.get("return_url"),
                       url=page_url(self, "portal", session_id), flow=None,
                       created=int(time.time()), livemode=False)
        self.portal_sessions.append(session)
        return 200, copy.deepcopy(session)

    def _post_meter_event(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        payload = params.get("payload") or {}
        for name in ("event_name", "payload"):
            if not params.get(name):
                raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.",
                                  "parameter_missing", name)
        value = str(payload.get("value", ""))
        if not value.isdigit():
            # Stripe: the value must be a non-negative whole number.
            raise StripeError(400, "invalid_request_error",
                              "payload[value] must be a non-negative integer",
                              "parameter_invalid_integer", "payload[value]")
        customer = payload.get("stripe_customer_id")
        if customer not in self.customers:
            raise StripeError(400, "invalid_request_error", f"No such customer: '{customer}'",
                              "resource_missing", "payload[stripe_customer_id]")
        identifier = params.get("identifier") or secrets.token_hex(12)
        event = fixture("billing.meter_event")
        event.update(event_name=params["event_name"], identifier=identifier,
                     payload={"stripe_customer_id": customer, "value": value},
                     timestamp=int(params.get("timestamp") or time.time()),
                     created=int(time.time()), livemode=False)
        # A repeated identifier is accepted and counted once, as Stripe does.
        self.meter_events.setdefault(identifier, event)
        return 200, copy.deepcopy(event)

    def _meter_summaries(self, request: web.Request) -> tuple[int, Any]:
        meter = self.meters.get(request.match_info["id"])
        if meter is None:
            raise StripeError(404, "invalid_request_error", "No such billing meter",
                              "resource_missing", "id")
        params = request[_PARAMS]
        for name in ("customer", "start_time", "end_time"):
            if name not in params:
                raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.",
                                  "parameter_missing", name)
        start, end = int(params["start_time"]), int(params["end_time"])
        if start % 60 or end % 60:
            raise StripeError(400, "invalid_request_error",
                              "start_time and end_time must be aligned with minute boundaries",
                              "parameter_invalid_integer", "start_time")
        total = sum(int(e["payload"]["value"]) for e in self.meter_events.values()
                    if e["event_name"] == meter["event_name"]
                    and e["payload"]["stripe_customer_id"] == params["customer"]
                    and start <= e["timestamp"] < end)
        summary = fixture("billing.meter_event_summary")
        summary.update(id=self._new_id("mtrusg"), meter=meter["id"], aggregated_value=total,
                       start_time=start, end_time=end, livemode=False)
        return 200, self._list([summary], f"/v1/billing/meters/{meter['id']}/event_summaries")

    def _post_invoice_item(self, request: web.Request) -> tuple[int, Any]:
        params = request[_PARAMS]
        customer = params.get("customer")
        if customer not in self.customers:
            raise StripeError(400, "invalid_request_error", f"No such customer: '{customer}'",
                              "resource_missing", "customer")
        if not re.fullmatch(r"-?\d+", str(params.get("amount", ""))):
            raise StripeError(400, "invalid_request_error", "Missing required param: amount.",
                              "parameter_missing", "amount")
        item = fixture("invoiceitem")
        item.update(id=self._new_id("ii"), customer=customer, amount=int(params["amount"]),
                    currency=params.get("currency"), description=params.get("description"),
                    metadata=dict(params.get("metadata") or {}), invoice=None,
                    date=int(time.time()), livemode=False, net_amount=int(params["amount"]))
        self.invoice_items[item["id"]] = item
        return 200, copy.deepcopy(item)


def iter_deliveries(fake: FakeStripe, events: list[dict[str, Any]],
                    secret: str) -> Iterator[tuple[bytes, dict[str, str]]]:
    for event in events:
        yield fake.delivery(event, secret)
