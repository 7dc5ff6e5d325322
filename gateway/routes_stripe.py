"""Stripe routes: the webhook receiver and the web app's billing routes.

`POST /v1/stripe/webhook` verifies the signature on the raw body, records the
event durably (deduplicated by id), answers 200 and rings StripeSync; the
processing happens later, off the request. The web-app routes (service token)
start trials, open the billing portal or checkout, and report stats.

Blocking calls (store, Stripe) run on a small bounded executor, never on the
event loop; when it is saturated the route answers 503 with Retry-After.

Trials: one per email. A second request for an email we already know (or
whose Stripe customer already has a subscription we did not start) answers
409 `trial_already_used` and issues no key: the key was shown once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Final, TypeVar, cast

import orjson
import stripe
import structlog
from aiohttp import web

from actors._stripe_metrics import StripeMetrics
from actors._stripe_plans import field_of, monthly_amount, subscription_price
from actors._stripe_reconcile import (
    Reconciler,
    SkipEvent,
    list_subscriptions,
    normalize_email,
)
from actors.stripe_sync import is_handled_event
from gateway.errors import ApiError, json_response
from gateway.stripe_settings import StripeSettings
from ledger import LedgerStore, StoreUnavailable, WebhookEvent
from ledger.api_keys import issue_api_key
from ledger.clock import format_rfc3339, utc_now_rfc3339
from ledger.limits import customer_id_chars_max, email_chars_max

__all__ = [
    "StripeDeps",
    "StripeMetrics",
    "WebhookSignatureError",
    "add_stripe_routes",
    "verify_stripe_signature",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Stripe events can be larger than our API's 64 KiB bodies (expanded objects).
webhook_body_bytes_max: Final = 512 * 1024
json_body_bytes_max: Final = 16 * 1024
blocking_workers_max: Final = 4
# Requests waiting for (or running on) the executor; beyond this: 503.
blocking_inflight_max: Final = 64
stats_subscriptions_max: Final = 10_000
_EMAIL_RE: Final = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
_EMAIL_LOCKS: Final = 64
_RETRY_AFTER_S: Final = 5
_TRIAL_METADATA_KEY: Final = "vexa_trial"
CHARGEABLE: Final = frozenset({"active", "trialing"})


@dataclass(frozen=True)
class StripeDeps:
    """What the Stripe routes need; built by the composition root.

    `stripe` is None when Stripe is not configured (routes answer 503).
    `reconciler` should be the one StripeSync uses (shared per-customer
    locks); one is built from `on_entitlement_changed` when omitted.
    """

    settings: StripeSettings
    store: LedgerStore
    stripe: stripe.StripeClient | None
    wake_sync: Callable[[], None]
    metrics: StripeMetrics
    reconciler: Reconciler | None = None
    on_entitlement_changed: Callable[[str], None] = field(default=lambda _customer_id: None)
    clock: Callable[[], str] = utc_now_rfc3339


class _RouteError(ApiError):
    """An ApiError whose Stripe `type` is chosen here (ApiError maps 409 to
    idempotency_error, which a trial conflict is not)."""

    def __init__(self, status: int, code: str, message: str, *, type_: str,
                 param: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(status, code, message, param=param, retry_after_s=retry_after_s)
        self._type = type_

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["type"] = self._type
        return body


def _not_configured(what: str) -> ApiError:
    return ApiError(503, "stripe_not_configured", f"{what} is not configured on this server")


def _stripe_failure(error: stripe.StripeError) -> ApiError:
    """Map a Stripe failure to our answer without echoing Stripe's text."""
    if isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)):
        return ApiError(503, "stripe_unavailable", "Stripe could not be reached; retry later",
                        retry_after_s=_RETRY_AFTER_S)
    return ApiError(502, "stripe_error", "Stripe refused the request; see the server logs")


# -- webhook signature -----------------------------------------------------------


class WebhookSignatureError(Exception):
    pass


def _header_timestamp(header: str) -> int:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise WebhookSignatureError("Stripe-Signature has no valid timestamp")


def verify_stripe_signature(
    payload: bytes, header: str | None, secrets: Sequence[str], tolerance_s: int,
    now_s: float | None = None,
) -> None:
    """Raise WebhookSignatureError unless some `v1` signature of `header`
    matches `payload` under some secret (rotation) within the tolerance.

    stripe's verifier refuses old timestamps only; a timestamp further in the
    future than the tolerance is refused here (a captured future-dated
    delivery must not stay replayable).
    """
    if not header:
        raise WebhookSignatureError("missing Stripe-Signature header")
    if not secrets:
        raise WebhookSignatureError("no webhook secret configured")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WebhookSignatureError("body is not UTF-8") from error
    now = time.time() if now_s is None else now_s
    timestamp = _header_timestamp(header)
    if timestamp > now + tolerance_s:
        raise WebhookSignatureError("timestamp too far in the future")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance_s)
            return
        except stripe.SignatureVerificationError:
            continue
    raise WebhookSignatureError("no valid signature for this body")


# -- plumbing ------------------------------------------------------------------------


class _Blocking:
    """Bounded executor for blocking calls; refuses (503) rather than queue unboundedly."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(blocking_workers_max, thread_name_prefix="stripe-io")
        self._slots = asyncio.Semaphore(blocking_inflight_max)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._slots.locked():
            raise ApiError(503, "overloaded", "too many billing requests in flight",
                           retry_after_s=_RETRY_AFTER_S)
        async with self._slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


_BLOCKING_KEY: Final = web.AppKey("stripe_blocking", _Blocking)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(handler: Handler) -> Handler:
    """Stripe-shaped errors for every outcome, even without the app's error middleware."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except stripe.StripeError as error:
            log.warning("stripe_routes.stripe_error", path=request.path,
                        error=type(error).__name__, request_id=error.request_id)
            return _stripe_failure(error).response()
        except StoreUnavailable:
            return ApiError(503, "store_unavailable", "the ledger is unavailable",
                            retry_after_s=_RETRY_AFTER_S).response()
        except web.HTTPException:
            raise
        except Exception:
            log.exception("stripe_routes.failed", path=request.path)
            return ApiError(500, "internal_error", "internal error").response()

    return wrapper


def _require_service(request: web.Request, settings: StripeSettings) -> None:
    if not settings.service_token:
        raise ApiError(503, "service_token_not_configured", "the service token is not configured")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = settings.service_token.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise ApiError(401, "invalid_service_token", "a valid service token is required")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > json_body_bytes_max:
        raise ApiError(413, "body_too_large", "request body is too large")
    raw = await request.content.read(json_body_bytes_max + 1)
    if len(raw) > json_body_bytes_max:
        raise ApiError(413, "body_too_large", "request body is too large")
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return body


def _email_param(body: Mapping[str, Any], *, required: bool) -> str | None:
    raw = body.get("email")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if required:
            raise ApiError(400, "parameter_missing", "email is required", param="email")
        return None
    if not isinstance(raw, str) or len(raw) > email_chars_max or not _EMAIL_RE.match(raw.strip()):
        raise ApiError(400, "email_invalid", "email is not a valid address", param="email")
    return normalize_email(raw)


def _customer_id_param(body: Mapping[str, Any]) -> str | None:
    raw = body.get("customer_id")
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw or len(raw) > customer_id_chars_max:
        raise ApiError(400, "customer_id_invalid", "customer_id is not valid",
                       param="customer_id")
    return raw


def _epoch_rfc3339(epoch_s: Any) -> str | None:
    if epoch_s is None:
        return None
    return format_rfc3339(datetime.fromtimestamp(int(epoch_s), UTC))


# -- Stripe lookups (blocking; run on the executor) -----------------------------


def _find_stripe_customer(client: stripe.StripeClient, email: str) -> Any | None:
    """List by exact email (strongly consistent, unlike search); oldest wins."""
    found = client.v1.customers.list(params={"email": email, "limit": 100})
    customers = sorted(found.data, key=lambda c: int(field_of(c, "created", 0)))
    return customers[0] if customers else None


@dataclass(frozen=True, slots=True)
class _Who:
    customer_id: str | None
    stripe_customer_id: str | None
    email: str | None


def _resolve_customer(deps: StripeDeps, customer_id: str | None, email: str | None) -> _Who:
    assert deps.stripe is not None
    local = None
    if customer_id is not None:
        local = deps.store.get_customer(customer_id)
        if local is None:
            raise ApiError(404, "customer_not_found", "no such customer", param="customer_id")
    elif email is not None:
        local = deps.store.find_customer_by_email(email)
    stripe_id = local.stripe_customer_id if local else None
    if stripe_id is None and email is not None:
        remote = _find_stripe_customer(deps.stripe, email)
        stripe_id = str(field_of(remote, "id")) if remote is not None else None
    return _Who(local.customer_id if local else None, stripe_id,
                email or (local.email if local else None))


# -- handlers --------------------------------------------------------------------


class _Routes:
    def __init__(self, app: web.Application, deps: StripeDeps) -> None:
        self._app = app
        self._deps = deps
        self._settings = deps.settings
        self._email_locks = tuple(asyncio.Lock() for _ in range(_EMAIL_LOCKS))
        self._reconciler = deps.reconciler
        if self._reconciler is None and deps.stripe is not None:
            self._reconciler = Reconciler(
                store=deps.store, stripe_client=deps.stripe, plans=deps.settings.plans,
                entitlement_id=deps.settings.entitlement_id,
                on_entitlement_changed=deps.on_entitlement_changed, metrics=deps.metrics,
                clock=deps.clock,
            )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._app[_BLOCKING_KEY].run(fn, *args)

    def _client(self) -> stripe.StripeClient:
        if self._deps.stripe is None or not self._settings.enabled:
            raise _not_configured("Stripe")
        return self._deps.stripe

    # POST /v1/stripe/webhook
    async def webhook(self, request: web.Request) -> web.StreamResponse:
        metrics = self._deps.metrics
        if not self._settings.webhook_secrets:
            raise _not_configured("the Stripe webhook secret")
        if request.content_length is not None and request.content_length > webhook_body_bytes_max:
            raise ApiError(413, "body_too_large", "webhook body is too large")
        body = await request.content.read(webhook_body_bytes_max + 1)
        if len(body) > webhook_body_bytes_max:
            raise ApiError(413, "body_too_large", "webhook body is too large")
        try:
            verify_stripe_signature(body, request.headers.get("Stripe-Signature"),
                                    self._settings.webhook_secrets,
                                    self._settings.webhook_tolerance_s)
        except WebhookSignatureError as error:
            metrics.webhook_events.labels("unknown", "invalid_signature").inc()
            log.warning("stripe_webhook.rejected", reason=str(error))
            raise ApiError(400, "invalid_signature", "webhook signature verification failed",
                           param="Stripe-Signature") from None
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            event = None
        event_id = event.get("id") if isinstance(event, dict) else None
        event_type = event.get("type") if isinstance(event, dict) else None
        if not isinstance(event_id, str) or not isinstance(event_type, str) or not event_id:
            metrics.webhook_events.labels("unknown", "invalid_payload").inc()
            raise ApiError(400, "invalid_payload", "webhook body is not a Stripe event")
        if not is_handled_event(event_type):
            metrics.webhook_events.labels(event_type, "ignored").inc()
            return json_response({"received": True, "ignored": True})
        record = WebhookEvent(event_id=event_id, event_type=event_type, payload=body,
                              received_at=self._deps.clock())
        new = await self._run(self._deps.store.record_webhook_event, record)
        metrics.webhook_events.labels(event_type, "recorded" if new else "duplicate").inc()
        if new:
            self._deps.wake_sync()
        log.info("stripe_webhook.received", event_id=event_id, type=event_type, new=new)
        return json_response({"received": True, "duplicate": not new})

    # POST /v1/trials/api-key
    async def trial(self, request: web.Request) -> web.StreamResponse:
        _require_service(request, self._settings)
        body = await _json_body(request)
        email = _email_param(body, required=True)
        assert email is not None
        self._client()
        if not self._settings.trial_price_id:
            raise _not_configured("the trial price (STRIPE_TRIAL_PRICE_ID)")
        lock = self._email_locks[hashlib.sha256(email.encode()).digest()[0] % _EMAIL_LOCKS]
        async with lock:  # one signup per email at a time in this process
            result = await self._run(self._start_trial, email)
        return json_response(result, status=201)

    def _start_trial(self, email: str) -> dict[str, Any]:
        client = self._client()
        store = self._deps.store
        assert self._reconciler is not None and self._settings.trial_price_id
        if store.find_customer_by_email(email) is not None:
            raise _RouteError(409, "trial_already_used", "this email already has an account",
                              type_="invalid_request_error", param="email")
        digest = hashlib.sha256(email.encode()).hexdigest()[:40]
        remote = _find_stripe_customer(client, email)
        if remote is None:
            remote = client.v1.customers.create(
                params={"email": email, "metadata": {_TRIAL_METADATA_KEY: "1"}},
                options={"idempotency_key": "vexa-trial-customer-" + digest},
            )
        stripe_id = str(field_of(remote, "id"))
        subscriptions = list_subscriptions(client, stripe_id)
        ours = [s for s in subscriptions
                if field_of(field_of(s, "metadata"), _TRIAL_METADATA_KEY) == "1"]
        if subscriptions and not ours:
            raise _RouteError(409, "trial_already_used", "this email already had a subscription",
                              type_="invalid_request_error", param="email")
        # Resume an interrupted signup (subscription made, key never issued).
        subscription = ours[0] if ours else client.v1.subscriptions.create(
            params={
                "customer": stripe_id,
                "items": [{"price": self._settings.trial_price_id}],
                "trial_end": int(time.time()) + self._settings.trial_period_s,
                "trial_settings": {"end_behavior": {"missing_payment_method": "cancel"}},
                "metadata": {_TRIAL_METADATA_KEY: "1"},
            },
            options={"idempotency_key": "vexa-trial-subscription-" + digest},
        )
        try:
            result = self._reconciler.reconcile(stripe_id)
        except SkipEvent as skip:
            raise _RouteError(409, "trial_already_used", str(skip), type_="invalid_request_error",
                              param="email") from None
        key, secret = issue_api_key(store, result.customer.customer_id, self._deps.clock())
        log.info("stripe_trial.started", customer_id=result.customer.customer_id,
                 key_id=key.key_id)
        return {
            "customer_id": result.customer.customer_id,
            "stripe_customer_id": stripe_id,
            "subscription_id": field_of(subscription, "id"),
            "status": result.entitlement.status,
            "trial_end": result.entitlement.trial_end
            or _epoch_rfc3339(field_of(subscription, "trial_end")),
            "api_key_id": key.key_id,
            "api_key": secret,  # shown once, never stored in the clear
        }

    async def _customer_request(self, request: web.Request) -> tuple[str | None, str | None]:
        """Service auth, then `customer_id` or `email` (one is required), then Stripe."""
        _require_service(request, self._settings)
        body = await _json_body(request)
        customer_id = _customer_id_param(body)
        email = _email_param(body, required=customer_id is None)
        self._client()
        return customer_id, email

    # POST /v1/portal/session
    async def portal(self, request: web.Request) -> web.StreamResponse:
        customer_id, email = await self._customer_request(request)
        if not self._settings.portal_return_url:
            raise _not_configured("the portal return URL")
        return json_response(await self._run(self._portal, customer_id, email))

    def _portal(self, customer_id: str | None, email: str | None) -> dict[str, Any]:
        who = _resolve_customer(self._deps, customer_id, email)
        if who.stripe_customer_id is None:
            raise ApiError(404, "customer_not_found", "no billing account for this customer",
                           param="email" if customer_id is None else "customer_id")
        return {"kind": "portal", "url": self._portal_url(who.stripe_customer_id),
                "stripe_customer_id": who.stripe_customer_id}

    def _portal_url(self, stripe_customer_id: str) -> str:
        session = self._client().v1.billing_portal.sessions.create(
            params={"customer": stripe_customer_id,
                    "return_url": self._settings.portal_return_url or ""})
        return str(field_of(session, "url"))

    # POST /v1/stripe/resolve-url
    async def resolve_url(self, request: web.Request) -> web.StreamResponse:
        customer_id, email = await self._customer_request(request)
        if not (self._settings.checkout_price_id and self._settings.checkout_success_url):
            raise _not_configured("Stripe Checkout (price and success URL)")
        return json_response(await self._run(self._resolve, customer_id, email))

    def _resolve(self, customer_id: str | None, email: str | None) -> dict[str, Any]:
        client = self._client()
        who = _resolve_customer(self._deps, customer_id, email)
        if who.stripe_customer_id is not None:
            subscriptions = list_subscriptions(client, who.stripe_customer_id)
            if any(field_of(s, "status") in CHARGEABLE for s in subscriptions):
                if not self._settings.portal_return_url:
                    raise _not_configured("the portal return URL")
                return {"kind": "portal", "url": self._portal_url(who.stripe_customer_id),
                        "stripe_customer_id": who.stripe_customer_id}
        params: dict[str, Any] = {
            "mode": "subscription",
            "line_items": [{"price": self._settings.checkout_price_id, "quantity": 1}],
            "success_url": self._settings.checkout_success_url,
            "cancel_url": self._settings.checkout_cancel_url
            or self._settings.checkout_success_url,
        }
        if who.stripe_customer_id is not None:
            params["customer"] = who.stripe_customer_id
        elif who.email is not None:
            params["customer_email"] = who.email
        if who.customer_id is not None:
            params["client_reference_id"] = who.customer_id
        session = client.v1.checkout.sessions.create(params=cast(Any, params))
        return {"kind": "checkout", "url": str(field_of(session, "url")),
                "stripe_customer_id": who.stripe_customer_id}

    # GET /v1/stats
    async def stats(self, request: web.Request) -> web.StreamResponse:
        _require_service(request, self._settings)
        return json_response(await self._run(self._stats))

    def _stats(self) -> dict[str, Any]:
        store = self._deps.store
        by_status: dict[str, int] = {}
        for customer_id in store.list_customer_ids():
            entitlement = store.get_entitlements(customer_id).get(self._settings.entitlement_id)
            status = entitlement.status if entitlement is not None else "none"
            by_status[status] = by_status.get(status, 0) + 1
        result: dict[str, Any] = {
            "customers_by_status": by_status,
            "active_trials": by_status.get("trialing", 0),
            "mrr_minor": None,
            "receipts_by_currency_day": None,
        }
        if self._deps.stripe is not None and self._settings.enabled:
            try:
                result["mrr_minor"] = self._mrr(self._deps.stripe)
            except stripe.StripeError as error:
                log.warning("stripe_stats.mrr_unavailable", error=type(error).__name__)
                result["mrr_error"] = "stripe_unavailable"
        daily = getattr(store, "stats_receipts_by_currency_day", None)
        if callable(daily):
            result["receipts_by_currency_day"] = [
                {"currency": c, "day": d, "receipts": n, "charged_minor": total}
                for c, d, n, total in daily()
            ]
        else:
            result["receipts_note"] = "this store does not report receipts per day"
        return result

    def _mrr(self, client: stripe.StripeClient) -> dict[str, dict[str, int]]:
        """plan -> currency -> monthly recurring revenue (minor units), from
        active subscriptions; yearly/weekly prices normalised exactly, rounded once."""
        page = client.v1.subscriptions.list(params={"status": "active", "limit": 100})
        totals: dict[tuple[str, str], Fraction] = {}
        for count, subscription in enumerate(page.auto_paging_iter()):
            if count >= stats_subscriptions_max:
                log.warning("stripe_stats.truncated", limit=stats_subscriptions_max)
                break
            monthly = monthly_amount(subscription)
            if monthly is None:
                continue
            price = subscription_price(subscription)
            plan = str(field_of(price, "lookup_key") or field_of(price, "id") or "unknown")
            key = (plan, monthly[0])
            totals[key] = totals.get(key, Fraction(0)) + monthly[1]
        out: dict[str, dict[str, int]] = {}
        for (plan, currency), amount in sorted(totals.items()):
            out.setdefault(plan, {})[currency] = round(amount)
        return out


def add_stripe_routes(app: web.Application, deps: StripeDeps) -> None:
    """Register the Stripe routes and their bounded executor on `app` (before startup)."""
    routes = _Routes(app, deps)

    async def blocking_ctx(app: web.Application) -> Any:
        app[_BLOCKING_KEY] = _Blocking()
        yield
        app[_BLOCKING_KEY].close()

    app.cleanup_ctx.append(blocking_ctx)
    app.router.add_post("/v1/stripe/webhook", _guarded(routes.webhook))
    app.router.add_post("/v1/trials/api-key", _guarded(routes.trial))
    app.router.add_post("/v1/portal/session", _guarded(routes.portal))
    app.router.add_post("/v1/stripe/resolve-url", _guarded(routes.resolve_url))
    app.router.add_get("/v1/stats", _guarded(routes.stats))
