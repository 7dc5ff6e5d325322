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
# Uploaded files of a multipart request: field name -> (filename, content).
_UPLOADS: web.RequestKey[dict[str, tuple[str, bytes]]] = web.RequestKey("stripe_uploads", dict)

# Stripe's file purposes for dispute evidence: PDF, JPEG or PNG, at most 5 MB.
DISPUTE_FILE_TYPES = {b"%PDF-": "pdf", b"\xff\xd8\xff": "jpg", b"\x89PNG\r\n\x1a\n": "png"}
DISPUTE_FILE_BYTES_MAX = 5 * 1024 * 1024
# Dispute evidence fields that take a file id; the others take text, 150,000
# characters at most over all of them.
EVIDENCE_FILE_FIELDS = frozenset({
    "cancellation_policy", "customer_communication", "customer_signature",
    "duplicate_charge_documentation", "receipt", "refund_policy", "service_documentation",
    "shipping_documentation", "uncategorized_file",
})
EVIDENCE_CHARS_MAX = 150_000


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
        self.invoices: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, str] = {}  # payment intent -> invoice
        self.charges: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        # Uploaded files: the file object, and its content under "_content".
        self.files: dict[str, dict[str, Any]] = {}
        # Idempotency key -> (fingerprint of the request, status, body).
        self._idempotent: dict[str, tuple[str, int, bytes]] = {}
        self._fail_mode: str | None = None
        self._fail_remaining: int | None = None
        self._fail_only: str | None = None
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
    def fail(self, mode: str = "500", times: int | None = None,
             only: str | None = None) -> None:
        """Answer every request with a 500 (`"500"`), drop the connection
        (`"drop"`), or do the work and then answer 500 as if the reply were
        lost (`"lost_reply"`), `times` times or until `recover()`; with
        `only`, just the requests whose "METHOD /path" starts with it."""
        with self._lock:
            self._fail_mode, self._fail_remaining, self._fail_only = mode, times, only

    def recover(self) -> None:
        with self._lock:
            self._fail_mode, self._fail_remaining, self._fail_only = None, None, None

    def _take_failure(self, request: web.Request) -> str | None:
        with self._lock:
            if self._fail_mode is None:
                return None
            if self._fail_only and not f"{request.method} {request.path}".startswith(
                    self._fail_only):
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

    # -- invoices, payments and disputes -----------------------------------------
    def add_paid_invoice(self, customer_id: str, *, period_start: int, period_end: int,
                         amount: int, currency: str = "usd") -> dict[str, Any]:
        """A finalized, paid subscription invoice: its payment intent, charge
        and invoice payment as Stripe links them (the charge names the
        payment intent; the invoice payment maps the payment intent to the
        invoice). Returns the invoice, with `_charge` and `_payment_intent`."""
        with self._lock:
            customer = self.customers[customer_id]
            invoice = fixture("invoice")
            invoice_id = self._new_id("in")
            invoice.update(id=invoice_id, customer=customer_id, status="paid",
                           customer_email=customer["email"], customer_name=customer["name"],
                           period_start=period_start, period_end=period_end, currency=currency,
                           amount_due=amount, amount_paid=amount, amount_remaining=0,
                           total=amount, subtotal=amount, number=f"VX-{next(self._ids):04d}",
                           billing_reason="subscription_cycle", livemode=False,
                           created=period_end, lines={"object": "list", "data": [],
                                                      "has_more": False,
                                                      "url": f"/v1/invoices/{invoice_id}/lines"})
            payment_intent = self._new_id("pi")
            charge = fixture("charge")
            charge.update(id=self._new_id("ch"), amount=amount, amount_captured=amount,
                          captured=True, currency=currency, customer=customer_id,
                          payment_intent=payment_intent, livemode=False, created=period_end)
            self.invoices[invoice_id] = invoice
            self.payment_intents[payment_intent] = invoice_id
            self.charges[charge["id"]] = charge
            return {**copy.deepcopy(invoice), "_charge": charge["id"],
                    "_payment_intent": payment_intent}

    def add_dispute(self, charge_id: str, *, with_payment_intent: bool = True,
                    status: str = "needs_response") -> dict[str, Any]:
        """A dispute of a charge, as `charge.dispute.created` carries it."""
        with self._lock:
            charge = self.charges[charge_id]
            dispute = fixture("dispute")
            dispute.update(id=self._new_id("dp"), charge=charge_id, amount=charge["amount"],
                           currency=charge["currency"], status=status, livemode=False,
                           payment_intent=charge["payment_intent"] if with_payment_intent
                           else None, created=int(time.time()), reason="fraudulent")
            dispute["evidence_details"]["due_by"] = int(time.time()) + 7 * 86_400
            self.disputes[dispute["id"]] = dispute
            return copy.deepcopy(dispute)

    def dispute(self, dispute_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.disputes[dispute_id])

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            content: bytes = self.files[file_id]["_content"]
            return content

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
        r.add_get("/v1/invoices/{id}", self._json(self._get_invoice))
        r.add_get("/v1/invoice_payments", self._json(self._list_invoice_payments))
        r.add_get("/v1/charges/{id}", self._json(self._get_charge))
        r.add_get("/v1/disputes/{id}", self._json(self._get_dispute))
        r.add_post("/v1/disputes/{id}", self._json(self._post_dispute))
        r.add_post("/v1/files", self._json(self._post_file))
        add_page_routes(app, self)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(PAGES_PREFIX):  # pages for a browser: no API key
            return await handler(request)
        request_id = "req_" + secrets.token_hex(7)
        headers = {"Request-Id": request_id}
        mode = self._take_failure(request)
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
        uploads: dict[str, tuple[str, bytes]] = {}
        if request.method == "POST":
            ctype = request.headers.get("Content-Type", "")
            if ctype.startswith("multipart/form-data") and request.path == "/v1/files":
                pairs += await self._read_multipart(request, uploads)
            elif ctype.startswith("application/x-www-form-urlencoded"):
                pairs += parse_qsl((await request.read()).decode(), keep_blank_values=True)
            else:
                return self._error(StripeError(400, "invalid_request_error",
                                               "Expected form-encoded body"), headers)
        params = parse_bracket_form(pairs)
        with self._lock:
            self.requests.append((request.method, request.path, params))
        idem = request.headers.get("Idempotency-Key") if request.method == "POST" else None
        fingerprint = _fingerprint(request.path, params, uploads)
        if idem:
            with self._lock:
                cached = self._idempotent.get(idem)
            if cached is not None and cached[0] != fingerprint:
                # Stripe: a key reused with other parameters is refused.
                return self._error(StripeError(
                    400, "idempotency_error", "Keys for idempotent requests can only be used "
                    "with the same parameters they were first used with."), headers)
            if cached is not None and lost_reply:  # replayed, and lost again
                return self._error(StripeError(500, "api_error", "An unknown error occurred"),
                                   headers)
            if cached is not None:
                return web.Response(status=cached[1], body=cached[2],
                                    content_type="application/json",
                                    headers={**headers, "Idempotent-Replayed": "true"})
        request[_PARAMS] = params
        request[_UPLOADS] = uploads
        try:
            response = await handler(request)
        except StripeError as error:
            return self._error(error, headers)
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        if idem:
            with self._lock:
                self._idempotent[idem] = (fingerprint, response.status, response.body)
        if lost_reply:
            return self._error(StripeError(500, "api_error", "An unknown error occurred"),
                               headers)
        response.headers.update(headers)
        return response

    @staticmethod
    async def _read_multipart(request: web.Request,
                              uploads: dict[str, tuple[str, bytes]]) -> list[tuple[str, str]]:
        """The text fields of a multipart body; its files go to `uploads`."""
        pairs: list[tuple[str, str]] = []
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, web.FileField):
                uploads[name] = (value.filename, value.file.read())
            else:
                pairs.append((name, str(value)))
        return pairs

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

    def _get_invoice(self, request: web.Request) -> tuple[int, Any]:
        invoice = self.invoices.get(request.match_info["id"])
        if invoice is None:
            raise StripeError(404, "invalid_request_error",
                              f"No such invoice: '{request.match_info['id']}'",
                              "resource_missing", "id")
        return 200, copy.deepcopy(invoice)

    def _list_invoice_payments(self, request: web.Request) -> tuple[int, Any]:
        """Filtered by `payment[type]=payment_intent` and `payment[payment_intent]`
        (or by `invoice`), as Stripe's list of invoice payments is."""
        params = request[_PARAMS]
        payment = params.get("payment") or {}
        if payment and payment.get("type") != "payment_intent":
            raise StripeError(400, "invalid_request_error", "Invalid payment[type]",
                              "parameter_invalid", "payment[type]")
        found = []
        for intent, invoice_id in self.payment_intents.items():
            if payment.get("payment_intent") not in (None, intent):
                continue
            if params.get("invoice") not in (None, invoice_id):
                continue
            invoice = self.invoices[invoice_id]
            row = fixture("invoice_payment")
            row.update(id=f"inpay_{intent}", invoice=invoice_id, livemode=False,
                       amount_paid=invoice["amount_paid"], amount_requested=invoice["amount_due"],
                       currency=invoice["currency"], status="paid", created=invoice["created"],
                       payment={"type": "payment_intent", "payment_intent": intent})
            found.append(row)
        return 200, self._list(found, "/v1/invoice_payments", params.get("limit"))

    def _get_charge(self, request: web.Request) -> tuple[int, Any]:
        charge = self.charges.get(request.match_info["id"])
        if charge is None:
            raise StripeError(404, "invalid_request_error", "No such charge",
                              "resource_missing", "id")
        return 200, copy.deepcopy(charge)

    def _find_dispute(self, dispute_id: str) -> dict[str, Any]:
        dispute = self.disputes.get(dispute_id)
        if dispute is None:
            raise StripeError(404, "invalid_request_error", f"No such dispute: '{dispute_id}'",
                              "resource_missing", "dispute")
        return dispute

    def _get_dispute(self, request: web.Request) -> tuple[int, Any]:
        return 200, copy.deepcopy(self._find_dispute(request.match_info["id"]))

    def _post_dispute(self, request: web.Request) -> tuple[int, Any]:
        """Stage or submit evidence, with Stripe's checks: only an open dispute,
        known field names, file fields naming dispute_evidence files, the
        text within 150,000 characters; `submit` defaults to true."""
        dispute = self._find_dispute(request.match_info["id"])
        params = request[_PARAMS]
        if dispute["evidence_details"]["submission_count"] or not dispute["status"].endswith(
                "needs_response"):
            raise StripeError(400, "invalid_request_error",
                              "This dispute is no longer accepting evidence")
        evidence = params.get("evidence") or {}
        for name, value in evidence.items():
            if name not in dispute["evidence"]:
                raise StripeError(400, "invalid_request_error",
                                  f"Received unknown parameter: evidence[{name}]",
                                  "parameter_unknown", f"evidence[{name}]")
            stored = self.files.get(value) if name in EVIDENCE_FILE_FIELDS else None
            if name in EVIDENCE_FILE_FIELDS and (
                    stored is None or stored["purpose"] != "dispute_evidence"):
                raise StripeError(400, "invalid_request_error", f"No such file upload: '{value}'",
                                  "resource_missing", f"evidence[{name}]")
        text = sum(len(v) for k, v in evidence.items() if k not in EVIDENCE_FILE_FIELDS)
        if text > EVIDENCE_CHARS_MAX:
            raise StripeError(400, "invalid_request_error",
                              "The evidence text exceeds 150000 characters", "parameter_invalid",
                              "evidence")
        dispute["evidence"].update(evidence)
        dispute["metadata"].update(params.get("metadata") or {})
        dispute["evidence_details"]["has_evidence"] = True
        if params.get("submit", "true") == "true":
            dispute["evidence_details"]["submission_count"] += 1
            dispute["status"] = dispute["status"].replace("needs_response", "under_review")
        return 200, copy.deepcopy(dispute)

    def _post_file(self, request: web.Request) -> tuple[int, Any]:
        params, uploads = request[_PARAMS], request[_UPLOADS]
        if "file" not in uploads:
            raise StripeError(400, "invalid_request_error", "Missing required param: file.",
                              "parameter_missing", "file")
        if params.get("purpose") != "dispute_evidence":
            raise StripeError(400, "invalid_request_error", "Invalid purpose",
                              "parameter_invalid", "purpose")
        filename, content = uploads["file"]
        kind = next((t for magic, t in DISPUTE_FILE_TYPES.items() if content.startswith(magic)),
                    None)
        if kind is None or len(content) > DISPUTE_FILE_BYTES_MAX:
            raise StripeError(400, "invalid_request_error",
                              "Files for dispute_evidence must be PDF, JPEG or PNG of at most 5 MB",
                              "parameter_invalid", "file")
        stored = fixture("file")
        file_id = self._new_id("file")
        stored.update(id=file_id, filename=filename, purpose="dispute_evidence", size=len(content),
                      type=kind, title=None, created=int(time.time()),
                      expires_at=int(time.time()) + 270 * 86_400,
                      url=f"/v1/files/{file_id}/contents",
                      links={"object": "list", "data": [], "has_more": False,
                             "url": f"/v1/file_links?file={file_id}"})
        self.files[file_id] = {**stored, "_content": content}
        return 200, copy.deepcopy(stored)


def _fingerprint(path: str, params: dict[str, Any],
                 uploads: dict[str, tuple[str, bytes]]) -> str:
    """What Stripe compares when an idempotency key comes again."""
    files = {name: hashlib.sha256(content).hexdigest() for name, (_, content) in uploads.items()}
    return hashlib.sha256(json.dumps([path, params, files], sort_keys=True).encode()).hexdigest()


def iter_deliveries(fake: FakeStripe, events: list[dict[str, Any]],
                    secret: str) -> Iterator[tuple[bytes, dict[str, str]]]:
    for event in events:
        yield fake.delivery(event, secret)
