"""`POST /v1/stripe/webhook`: verify Stripe's signature over the exact raw
body, record the event durably (deduplicated by id), answer 200 and ring
StripeSync; the processing happens later, off the request."""

from __future__ import annotations

import time
from collections.abc import Sequence

import orjson
import stripe
import structlog
from aiohttp import web

from actors.stripe.sync import is_handled_event
from gateway.errors import ApiError, json_response
from gateway.stripe.context import STRIPE, not_configured
from gateway.validation import read_raw_body
from ledger import WebhookEvent
from ledger.limits import webhook_body_bytes_max

__all__ = ["WebhookSignatureError", "routes", "verify_stripe_signature"]

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()



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


@routes.post("/v1/stripe/webhook")
async def webhook(request: web.Request) -> web.StreamResponse:
    ctx = request.app[STRIPE]
    settings, metrics = ctx.settings, ctx.deps.metrics
    if not settings.webhook_secrets:
        raise not_configured("the Stripe webhook secret")
    body = await read_raw_body(request, webhook_body_bytes_max)
    try:
        verify_stripe_signature(body, request.headers.get("Stripe-Signature"),
                                settings.webhook_secrets, settings.webhook_tolerance_s)
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
                          received_at=ctx.deps.clock())
    new = await ctx.run(ctx.deps.store.record_webhook_event, record)
    metrics.webhook_events.labels(event_type, "recorded" if new else "duplicate").inc()
    if new:
        ctx.deps.wake_sync()
    log.info("stripe_webhook.received", event_id=event_id, type=event_type, new=new)
    return json_response({"received": True, "duplicate": not new})
