"""Registers the web app on the gateway's app (before startup)."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from gateway.web import _billing, _dashboard, _receipts, _signin
from gateway.web._http import WEB, WebContext, page, redirect, static_file
from gateway.web._session import Session
from gateway.web._settings import WebSettings

_STRIPE_API = "api.stripe.com"


@page
async def home(request: web.Request, session: Session) -> web.StreamResponse:
    return redirect("/dashboard" if session.signed_in else "/pricing")


def add_web_routes(app: web.Application, settings: WebSettings, stripe_api_base: str) -> None:
    """`stripe_api_base`: a Stripe stand-in's own Checkout pages (tests, a
    local mock) are allowed as form targets like Stripe's."""
    parts = urlsplit(stripe_api_base)
    extra = () if parts.hostname == _STRIPE_API else (f"{parts.scheme}://{parts.netloc}",)
    app[WEB] = WebContext.build(settings, extra)
    app.router.add_get("/", home)
    app.router.add_get("/static/{name}", static_file)
    for module in (_signin, _receipts, _dashboard, _billing):
        app.add_routes(module.routes)
