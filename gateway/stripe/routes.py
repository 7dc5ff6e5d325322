"""Stripe routes, registered on the app by the Stripe wiring: the webhook
receiver (routes_stripe_webhook) and the web app's billing routes
(routes_web_app). Both follow the gateway's convention: route tables, the
app's error middleware, validation's body readers, auth's token helpers and
the shared executor."""

from __future__ import annotations

from aiohttp import web

from actors.stripe._metrics import StripeMetrics
from gateway import routes_web_app
from gateway.services import SERVICES
from gateway.stripe import webhook_routes as routes_stripe_webhook
from gateway.stripe.context import STRIPE, Blocking, StripeContext, StripeDeps
from gateway.stripe.webhook_routes import WebhookSignatureError, verify_stripe_signature

__all__ = [
    "StripeDeps",
    "StripeMetrics",
    "WebhookSignatureError",
    "add_stripe_routes",
    "verify_stripe_signature",
]


def add_stripe_routes(app: web.Application, deps: StripeDeps,
                      blocking: Blocking | None = None) -> None:
    """Register the Stripe routes on `app` (before startup). Blocking calls
    run on `blocking`, by default the app's `Services.blocking`."""
    app[STRIPE] = StripeContext.build(deps, blocking or app[SERVICES].blocking)
    app.add_routes(routes_stripe_webhook.routes)
    app.add_routes(routes_web_app.routes)
