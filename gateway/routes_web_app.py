"""The web app's billing routes (service token): start trials, open the
billing portal or checkout, report stats.

Trials: one per email. A second request for an email we already know (or
whose Stripe customer already has a subscription we did not start) answers
409 `trial_already_used` and issues no key: the key was shown once.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Final, cast

import stripe
import structlog
from aiohttp import web

from actors.stripe._plans import field_of, monthly_amount, subscription_price
from actors.stripe._reconcile import SkipEvent, list_subscriptions, normalize_email
from gateway.auth import require_service_token
from gateway.errors import ApiError, json_response
from gateway.stripe.context import STRIPE, RouteError, StripeContext, not_configured
from gateway.validation import read_json_body, require_object
from ledger.api_keys import issue_api_key
from ledger.clock import format_rfc3339
from ledger.limits import customer_id_chars_max, email_chars_max, stats_subscriptions_max

__all__ = ["routes"]

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

_EMAIL_RE: Final = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
_TRIAL_METADATA_KEY: Final = "vexa_trial"
CHARGEABLE: Final = frozenset({"active", "trialing"})


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


async def _service_body(request: web.Request) -> tuple[StripeContext, dict[str, Any]]:
    """Service auth, then the JSON object body."""
    ctx = request.app[STRIPE]
    require_service_token(request, ctx.settings.service_token)
    return ctx, require_object(await read_json_body(request))


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


def _resolve_customer(ctx: StripeContext, customer_id: str | None, email: str | None) -> _Who:
    store, client = ctx.deps.store, ctx.client()
    local = None
    if customer_id is not None:
        local = store.get_customer(customer_id)
        if local is None:
            raise ApiError(404, "customer_not_found", "no such customer", param="customer_id")
    elif email is not None:
        local = store.find_customer_by_email(email)
    stripe_id = local.stripe_customer_id if local else None
    if stripe_id is None and email is not None:
        remote = _find_stripe_customer(client, email)
        stripe_id = str(field_of(remote, "id")) if remote is not None else None
    return _Who(local.customer_id if local else None, stripe_id,
                email or (local.email if local else None))


# -- POST /v1/trials/api-key -----------------------------------------------------


@routes.post("/v1/trials/api-key")
async def trial(request: web.Request) -> web.StreamResponse:
    ctx, body = await _service_body(request)
    email = _email_param(body, required=True)
    assert email is not None
    ctx.client()
    if not ctx.settings.trial_price_id:
        raise not_configured("the trial price (STRIPE_TRIAL_PRICE_ID)")
    async with ctx.email_lock(email):
        result = await ctx.run(_start_trial, ctx, email)
    return json_response(result, status=201)


def _trial_used(message: str) -> RouteError:
    return RouteError(409, "trial_already_used", message, type_="invalid_request_error",
                      param="email")


def _trial_subscription(ctx: StripeContext, email: str) -> tuple[str, Any]:
    """The Stripe customer and our trial subscription for `email`, made if
    missing (idempotently: an interrupted signup resumes)."""
    client, price_id = ctx.client(), ctx.settings.trial_price_id
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
        raise _trial_used("this email already had a subscription")
    # Resume an interrupted signup (subscription made, key never issued).
    subscription = ours[0] if ours else client.v1.subscriptions.create(
        params={
            "customer": stripe_id,
            "items": [{"price": price_id or ""}],
            "trial_end": int(time.time()) + ctx.settings.trial_period_s,
            "trial_settings": {"end_behavior": {"missing_payment_method": "cancel"}},
            "metadata": {_TRIAL_METADATA_KEY: "1"},
        },
        options={"idempotency_key": "vexa-trial-subscription-" + digest},
    )
    return stripe_id, subscription


def _start_trial(ctx: StripeContext, email: str) -> dict[str, Any]:
    store, reconciler = ctx.deps.store, ctx.reconciler
    assert reconciler is not None
    if store.find_customer_by_email(email) is not None:
        raise _trial_used("this email already has an account")
    stripe_id, subscription = _trial_subscription(ctx, email)
    try:
        result = reconciler.reconcile(stripe_id)
    except SkipEvent as skip:
        raise _trial_used(str(skip)) from None
    key, secret = issue_api_key(store, result.customer.customer_id, ctx.deps.clock())
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


# -- POST /v1/portal/session and POST /v1/stripe/resolve-url ---------------------


async def _customer_request(
    request: web.Request,
) -> tuple[StripeContext, str | None, str | None]:
    """Service auth, then `customer_id` or `email` (one is required), then Stripe."""
    ctx, body = await _service_body(request)
    customer_id = _customer_id_param(body)
    email = _email_param(body, required=customer_id is None)
    ctx.client()
    return ctx, customer_id, email


@routes.post("/v1/portal/session")
async def portal(request: web.Request) -> web.StreamResponse:
    ctx, customer_id, email = await _customer_request(request)
    if not ctx.settings.portal_return_url:
        raise not_configured("the portal return URL")
    return json_response(await ctx.run(_portal, ctx, customer_id, email))


@dataclass(frozen=True, slots=True)
class ReturnUrls:
    """Where Stripe sends the browser back to: the configured URLs (an
    external web app), or the built-in web app's own pages."""

    success_url: str
    cancel_url: str
    portal_return_url: str


def _configured_urls(ctx: StripeContext) -> ReturnUrls:
    settings = ctx.settings
    success = settings.checkout_success_url or ""
    return ReturnUrls(success, settings.checkout_cancel_url or success,
                      settings.portal_return_url or "")


def _portal(ctx: StripeContext, customer_id: str | None, email: str | None,
            back: ReturnUrls | None = None) -> dict[str, Any]:
    who = _resolve_customer(ctx, customer_id, email)
    if who.stripe_customer_id is None:
        raise ApiError(404, "customer_not_found", "no billing account for this customer",
                       param="email" if customer_id is None else "customer_id")
    urls = back or _configured_urls(ctx)
    return {"kind": "portal", "url": _portal_url(ctx, who.stripe_customer_id, urls),
            "stripe_customer_id": who.stripe_customer_id}


def _portal_url(ctx: StripeContext, stripe_customer_id: str, urls: ReturnUrls) -> str:
    session = ctx.client().v1.billing_portal.sessions.create(
        params={"customer": stripe_customer_id, "return_url": urls.portal_return_url})
    return str(field_of(session, "url"))


@routes.post("/v1/stripe/resolve-url")
async def resolve_url(request: web.Request) -> web.StreamResponse:
    ctx, customer_id, email = await _customer_request(request)
    if not (ctx.settings.checkout_price_id and ctx.settings.checkout_success_url):
        raise not_configured("Stripe Checkout (price and success URL)")
    return json_response(await ctx.run(_resolve, ctx, customer_id, email))


def _resolve(ctx: StripeContext, customer_id: str | None, email: str | None,
             back: ReturnUrls | None = None) -> dict[str, Any]:
    """Checkout for a customer without a chargeable subscription; the portal
    for one who has one (subscribing twice would bill twice)."""
    client, settings = ctx.client(), ctx.settings
    urls = back or _configured_urls(ctx)
    who = _resolve_customer(ctx, customer_id, email)
    if who.stripe_customer_id is not None:
        subscriptions = list_subscriptions(client, who.stripe_customer_id)
        if any(field_of(s, "status") in CHARGEABLE for s in subscriptions):
            if not urls.portal_return_url:
                raise not_configured("the portal return URL")
            return {"kind": "portal", "url": _portal_url(ctx, who.stripe_customer_id, urls),
                    "stripe_customer_id": who.stripe_customer_id}
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": settings.checkout_price_id, "quantity": 1}],
        "success_url": urls.success_url,
        "cancel_url": urls.cancel_url,
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


# What the web app's pages (gateway/web) call in process, with the same rules.
start_trial = _start_trial
portal_url_for = _portal
resolve_billing_url = _resolve


# -- GET /v1/stats ---------------------------------------------------------------


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.StreamResponse:
    ctx = request.app[STRIPE]
    require_service_token(request, ctx.settings.service_token)
    return json_response(await ctx.run(_stats, ctx))


def _stats(ctx: StripeContext) -> dict[str, Any]:
    store, settings = ctx.deps.store, ctx.settings
    by_status: dict[str, int] = {}
    for customer_id in store.list_customer_ids():
        entitlement = store.get_entitlements(customer_id).get(settings.entitlement_id)
        status = entitlement.status if entitlement is not None else "none"
        by_status[status] = by_status.get(status, 0) + 1
    result: dict[str, Any] = {
        "customers_by_status": by_status,
        "active_trials": by_status.get("trialing", 0),
        "mrr_minor": None,
        "receipts_by_currency_day": None,
    }
    if ctx.deps.stripe is not None and settings.enabled:
        try:
            result["mrr_minor"] = _mrr(ctx.deps.stripe)
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


def _mrr(client: stripe.StripeClient) -> dict[str, dict[str, int]]:
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
