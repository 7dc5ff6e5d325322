"""Customer webhooks, managed with the customer's own API key: endpoints
(`/v1/webhook_endpoints`, the secret shown once, rotation with an overlap),
the alert thresholds of each entitlement, and the events sent
(`GET /v1/events/outbound`, each with its delivery status).

On a store without the tables (see ledger.webhook_store) every route
answers 404 `not_found`: switched off on this server."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from gateway.errors import ApiError, bad_request, json_response
from gateway.services import SERVICES, Services
from gateway.settings import is_loopback, threshold_problem
from gateway.validation import (
    query_int,
    read_json_body,
    reject_unknown,
    require_object,
    require_str,
)
from ledger import NotFound, limits
from ledger.clock import format_rfc3339, parse_rfc3339, utc_now_rfc3339
from ledger.webhook_store import OutboundEvent, TooManyEndpoints, WebhookEndpoint, WebhookStore

routes = web.RouteTableDef()

ENDPOINT_FIELDS = frozenset({"url"})
ROTATE_FIELDS = frozenset({"previous_secret_expires_in_s"})
THRESHOLD_FIELDS = frozenset({"thresholds_pct"})
# As Stripe: a rotated-out secret keeps signing for a day unless told otherwise.
_DEFAULT_OVERLAP_S = 86_400


async def _customer(request: web.Request) -> tuple[Services, WebhookStore, str]:
    services = request.app[SERVICES]
    customer_id = await services.api_keys.customer_for(request)
    store = services.store
    if not isinstance(store, WebhookStore):
        raise ApiError(404, "not_found", "webhooks are not available on this store")
    return services, store, customer_id


def _unix(rfc3339: str) -> int:
    return int(parse_rfc3339(rfc3339).timestamp())


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def endpoint_body(endpoint: WebhookEndpoint, *, with_secret: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": endpoint.endpoint_id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "status": "enabled",
        "created": _unix(endpoint.created_at),
        "previous_secret_expires_at": endpoint.previous_secret_expires_at,
    }
    if with_secret:
        body["secret"] = endpoint.secret
    return body


def _endpoint_url(body: dict[str, Any], dev: bool) -> str:
    url = require_str(body, "url", max_chars=limits.webhook_url_chars_max)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad_request("invalid_url", "url is not a URL", "url") from None
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and dev and is_loopback(host):
        return url
    raise bad_request(
        "invalid_url",
        "url must be https:// (http:// only to a loopback host in development)",
        "url",
    )


@routes.post("/v1/webhook_endpoints")
async def create_endpoint(request: web.Request) -> web.Response:
    services, store, customer_id = await _customer(request)
    body = require_object(await read_json_body(request))
    reject_unknown(body, ENDPOINT_FIELDS)
    endpoint = WebhookEndpoint(
        endpoint_id="we_" + secrets.token_hex(12),
        customer_id=customer_id,
        url=_endpoint_url(body, services.settings.dev),
        secret=_new_secret(),
        created_at=utc_now_rfc3339(),
    )
    try:
        await services.blocking(store.create_webhook_endpoint, endpoint,
                                limits.webhook_endpoints_per_customer_max)
    except TooManyEndpoints as error:
        raise bad_request("webhook_endpoint_limit", str(error), "url") from None
    return json_response(endpoint_body(endpoint, with_secret=True), status=201)


@routes.get("/v1/webhook_endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    services, store, customer_id = await _customer(request)
    endpoints = await services.blocking(store.list_webhook_endpoints, customer_id)
    return json_response({
        "object": "list",
        "data": [endpoint_body(e, with_secret=False) for e in endpoints],
        "has_more": False,  # at most webhook_endpoints_per_customer_max
        "url": request.path,
    })


@routes.delete("/v1/webhook_endpoints/{endpoint_id}")
async def delete_endpoint(request: web.Request) -> web.Response:
    services, store, customer_id = await _customer(request)
    endpoint_id = request.match_info["endpoint_id"]
    try:
        await services.blocking(store.delete_webhook_endpoint, customer_id, endpoint_id)
    except NotFound:
        raise _no_endpoint() from None
    return json_response({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})


def _no_endpoint() -> ApiError:
    return ApiError(404, "webhook_endpoint_not_found", "no such webhook endpoint",
                    param="endpoint_id")


@routes.post("/v1/webhook_endpoints/{endpoint_id}/rotate_secret")
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret, shown once; the old one still signs (a second `v1=`)
    for `previous_secret_expires_in_s` (default a day; 0: stops at once)."""
    services, store, customer_id = await _customer(request)
    body: dict[str, Any] = {}
    if request.can_read_body:
        body = require_object(await read_json_body(request))
    reject_unknown(body, ROTATE_FIELDS)
    overlap_s = body.get("previous_secret_expires_in_s", _DEFAULT_OVERLAP_S)
    if type(overlap_s) is not int:
        raise bad_request("invalid_type", "previous_secret_expires_in_s must be an integer",
                          "previous_secret_expires_in_s")
    if not 0 <= overlap_s <= limits.webhook_secret_overlap_s_max:
        raise bad_request("out_of_range", "previous_secret_expires_in_s must be between 0 and "
                          f"{limits.webhook_secret_overlap_s_max}", "previous_secret_expires_in_s")
    expires_at = format_rfc3339(datetime.now(UTC) + timedelta(seconds=overlap_s))
    try:
        endpoint = await services.blocking(store.rotate_webhook_secret, customer_id,
                                           request.match_info["endpoint_id"], _new_secret(),
                                           expires_at)
    except NotFound:
        raise _no_endpoint() from None
    return json_response(endpoint_body(endpoint, with_secret=True))


def event_body(event: OutboundEvent) -> dict[str, Any]:
    """The event as sent, plus how its delivery went."""
    body: dict[str, Any] = orjson.loads(event.body)
    body["delivery"] = {
        "status": event.status,
        "attempts": event.attempts,
        "last_attempt_at": event.last_attempt_at,
        "last_error": event.last_error,
        "delivered_at": event.delivered_at,
    }
    return body


@routes.get("/v1/events/outbound")
async def list_outbound_events(request: web.Request) -> web.Response:
    """Newest first, as Stripe lists events; `starting_after` pages to older
    ones, `ending_before` to newer ones."""
    services, store, customer_id = await _customer(request)
    after = request.query.get("starting_after") or None
    before = request.query.get("ending_before") or None
    if after and before:
        raise bad_request("parameter_conflict", "send only one of starting_after, ending_before",
                          "ending_before")
    limit = query_int(request, "limit", 10, 1, limits.outbound_events_page_max)
    try:
        page = await services.blocking(
            lambda: store.list_outbound_events(customer_id, starting_after=after,
                                               ending_before=before, limit=limit))
    except NotFound:
        param = "starting_after" if after else "ending_before"
        raise bad_request("resource_missing", f"no such event: {after or before!r}",
                          param) from None
    return json_response({
        "object": "list",
        "data": [event_body(event) for event in page.events],
        "has_more": page.has_more,
        "url": request.path,
    })


async def _entitlement_thresholds(
    services: Services, store: WebhookStore, customer_id: str, entitlement_id: str
) -> dict[str, Any]:
    entitlements = await services.blocking(services.store.get_entitlements, customer_id)
    if entitlement_id not in entitlements:
        raise ApiError(404, "entitlement_not_found", "no such entitlement",
                       param="entitlement_id")
    own = (await services.blocking(store.alert_thresholds, customer_id)).get(entitlement_id)
    return {
        "object": "alert_thresholds",
        "entitlement_id": entitlement_id,
        "thresholds_pct": list(services.settings.alert_thresholds_pct if own is None else own),
        "default": own is None,
    }


@routes.get("/v1/entitlements/{entitlement_id}/alert_thresholds")
async def get_thresholds(request: web.Request) -> web.Response:
    services, store, customer_id = await _customer(request)
    return json_response(await _entitlement_thresholds(
        services, store, customer_id, request.match_info["entitlement_id"]))


@routes.post("/v1/entitlements/{entitlement_id}/alert_thresholds")
async def set_thresholds(request: web.Request) -> web.Response:
    """Replace the entitlement's thresholds (an empty list: no alerts). Ones
    that already fired this period do not fire again."""
    services, store, customer_id = await _customer(request)
    entitlement_id = request.match_info["entitlement_id"]
    body = require_object(await read_json_body(request))
    reject_unknown(body, THRESHOLD_FIELDS)
    given = body.get("thresholds_pct")
    if given is None:
        raise bad_request("parameter_missing", "thresholds_pct is required", "thresholds_pct")
    if not isinstance(given, list) or any(type(p) is not int for p in given):
        raise bad_request("invalid_type", "thresholds_pct must be a list of whole percents",
                          "thresholds_pct")
    problem = threshold_problem(tuple(given))
    if problem is not None:
        raise bad_request("invalid_value", problem, "thresholds_pct")
    await _entitlement_thresholds(services, store, customer_id, entitlement_id)  # 404 first
    await services.blocking(store.set_alert_thresholds, customer_id, entitlement_id,
                            tuple(sorted(given)), utc_now_rfc3339())
    services.directory.reload(customer_id)  # the account actor decides crossings
    return json_response(await _entitlement_thresholds(services, store, customer_id,
                                                       entitlement_id))
