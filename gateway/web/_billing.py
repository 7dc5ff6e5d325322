"""Pricing, Subscribe, "Try it for an hour" and "Manage billing": the web
app's face of the Stripe routes (routes_web_app), called in process with the
same functions, locks and bounds rather than over HTTP with the service token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from actors.stripe._plans import field_of
from gateway import routes_web_app
from gateway.errors import ApiError
from gateway.stripe.context import STRIPE, StripeContext
from gateway.stripe.settings import StripeSettings
from gateway.web._http import PageError, adopt_session, origin, page, redirect, render
from gateway.web._session import Session, new_session
from ledger.money import format_amount

routes = web.RouteTableDef()

# Stripe puts the Checkout Session's id in the success URL in place of this.
CHECKOUT_SESSION_ID = "{CHECKOUT_SESSION_ID}"


def _stripe(request: web.Request) -> StripeContext:
    if STRIPE not in request.app or not request.app[STRIPE].settings.enabled:
        raise PageError(503, "Billing is not configured on this server.")
    return request.app[STRIPE]


def _offering(
    request: web.Request, price_id: Callable[[StripeSettings], str | None], name: str
) -> StripeContext:
    """Stripe, with the price an offering (subscriptions, trials) sells."""
    ctx = _stripe(request)
    if not price_id(ctx.settings):
        raise PageError(503, f"{name} are not configured on this server.")
    return ctx


def _prices(ctx: StripeContext) -> dict[str, Any]:
    """lookup_key -> Stripe price, for the configured plans (blocking)."""
    keys = list(ctx.settings.plans)
    if not keys:
        return {}
    found = ctx.client().v1.prices.list(params={"lookup_keys": keys, "limit": 100})
    return {str(field_of(p, "lookup_key")): p for p in found.data}


def _plan_rows(ctx: StripeContext | None, prices: dict[str, Any]) -> list[dict[str, Any]]:
    if ctx is None:
        return []
    rows = []
    for lookup_key, spec in ctx.settings.plans.items():
        price = prices.get(lookup_key)
        amount = field_of(price, "unit_amount") if price is not None else None
        currency = str(field_of(price, "currency") or "").upper() if price is not None else ""
        recurring = field_of(price, "recurring") if price is not None else None
        rows.append({
            "key": lookup_key, "quota": spec.quota, "policy": spec.policy,
            "max_bots": spec.max_bots,
            "price": None if amount is None
            else f"{format_amount(int(amount), currency)} {currency}",
            "interval": field_of(recurring, "interval") if recurring is not None else None,
            # Which card carries Subscribe and which the trial (their price ids).
            "checkout": price is not None
            and field_of(price, "id") == ctx.settings.checkout_price_id,
            "trial": price is not None and field_of(price, "id") == ctx.settings.trial_price_id,
        })
    return rows


@routes.get("/pricing")
@page
async def pricing(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app.get(STRIPE)
    enabled = ctx is not None and ctx.settings.enabled
    prices: dict[str, Any] = {}
    note = None
    if enabled and ctx is not None:
        try:
            prices = await ctx.run(_prices, ctx)
        except ApiError:
            note = "Prices could not be loaded from Stripe just now."
    return render(request, "pricing.html", plans=_plan_rows(ctx, prices), enabled=enabled,
                  trial=enabled and ctx is not None and bool(ctx.settings.trial_price_id),
                  note=note)


def _signed_in_email(session: Session) -> str | None:
    return session.email if session.signed_in else None


def _back_here(request: web.Request) -> routes_web_app.ReturnUrls:
    """Stripe's pages send the browser back to this web app: the dashboard
    after Checkout (which waits there for the webhooks), pricing on cancel."""
    here = origin(request)
    return routes_web_app.ReturnUrls(
        success_url=f"{here}/dashboard?checkout={CHECKOUT_SESSION_ID}",
        cancel_url=f"{here}/pricing", portal_return_url=f"{here}/dashboard")


@routes.post("/pricing/subscribe")
@page
async def subscribe(request: web.Request, session: Session) -> web.StreamResponse:
    """Checkout, or the portal for a customer who is already subscribed."""
    email = _signed_in_email(session)
    if email is None:
        return redirect("/signin?next=/pricing")
    ctx = _offering(request, lambda s: s.checkout_price_id, "Subscriptions")
    result = await ctx.run(routes_web_app.resolve_billing_url, ctx, session.customer_id,
                           None if session.customer_id else email, _back_here(request))
    return redirect(str(result["url"]))


@routes.post("/dashboard/billing")
@page
async def manage_billing(request: web.Request, session: Session) -> web.StreamResponse:
    if session.customer_id is None:
        return redirect("/signin?next=/dashboard")
    ctx = _stripe(request)
    result = await ctx.run(routes_web_app.portal_url_for, ctx, session.customer_id, None,
                           _back_here(request))
    return redirect(str(result["url"]))


@routes.post("/pricing/trial")
@page
async def trial(request: web.Request, session: Session) -> web.StreamResponse:
    """A trial for the signed-in email: the API key is shown once, here."""
    email = _signed_in_email(session)
    if email is None:
        return redirect("/signin?next=/pricing")
    ctx = _offering(request, lambda s: s.trial_price_id, "Trials")
    async with ctx.email_lock(email):
        result = await ctx.run(routes_web_app.start_trial, ctx, email)
    adopt_session(request, new_session(str(result["customer_id"]), email))
    return render(request, "trial.html", trial=result)
