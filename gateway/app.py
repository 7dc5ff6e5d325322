"""The aiohttp application: one middleware for request ids, the error model
and request metrics; routes from the routes_* modules."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web

from actors.ids import IdMinter
from gateway import (
    openapi,
    routes_admin,
    routes_events,
    routes_evidence,
    routes_halt,
    routes_log,
    routes_public,
    routes_reversals,
    routes_webhooks,
)
from gateway.errors import ApiError, bad_request
from gateway.http_metrics import HttpMetrics
from gateway.logs import AccessLogSampler, log_access, trace_context
from gateway.services import REQUEST_ID, SERVICES, Services
from ledger import StoreUnavailable, limits

log = structlog.get_logger(__name__)

_request_ids = IdMinter("req_")

# The request counters the middleware feeds; set by api_app.
HTTP_METRICS: Final = web.AppKey("http_metrics", HttpMetrics)
ACCESS_LOG: Final = web.AppKey("access_log", AccessLogSampler)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    404: ("resource_missing", "no such route"),
    405: ("method_not_allowed", "this method is not allowed on this route"),
    413: ("body_too_large", f"the body exceeds {limits.body_bytes_max} bytes"),
}


CLIENT_CLOSED_REQUEST = 499


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _reject_unknown_query(request: web.Request) -> None:
    """A query parameter the operation does not list in the OpenAPI document
    is a 400, as Stripe answers; routes outside the document are let be."""
    resource = request.match_info.route.resource
    if resource is None:
        return
    known = openapi.query_parameters().get((request.method, resource.canonical))
    if known is None:
        return
    for name in request.query:
        if name not in known:
            raise bad_request(
                "parameter_unknown", f"received unknown parameter: {name}", name
            )


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-Id") or _request_ids()
    structlog.contextvars.bind_contextvars(request_id=request_id, **trace_context(request.headers))
    request[REQUEST_ID] = request_id
    try:
        if request.query_string:
            _reject_unknown_query(request)
        response = await handler(request)
    except ApiError as error:
        if error.status >= 500:  # our failure, not the client's: say so in the log
            log.warning(
                "http.error",
                status=error.status,
                code=error.code,
                message=error.message,
                path=request.path,
                method=request.method,
            )
        response = error.response()
    except StoreUnavailable as error:
        # The store (not the request) failed: retry-safe, never a 500.
        log.warning("http.store_unavailable", path=request.path, reason=str(error))
        response = ApiError(
            503, "store_unavailable", "the ledger is unavailable; retry", retry_after_s=1
        ).response()
    except web.HTTPException as error:
        code, message = _HTTP_CODES.get(error.status, ("http_error", error.reason))
        response = ApiError(error.status, code, message).response()
    except Exception as error:
        if isinstance(error, ConnectionResetError) and _client_gone(request):
            # The client hung up mid-request: nobody to answer, not our fault.
            # Counted apart (499, as proxies do) so 5xx stays a server signal.
            log.info("http.client_disconnected", path=request.path, method=request.method)
            response = web.Response(status=CLIENT_CLOSED_REQUEST)
        else:
            log.exception("http.unhandled_error", path=request.path, method=request.method)
            response = ApiError(500, "internal_error", "an internal error occurred").response()
    response.headers["X-Request-Id"] = request_id
    _observe(request, response.status, time.perf_counter() - started)
    return response


def _observe(request: web.Request, status: int, elapsed_s: float) -> None:
    """The request's metrics and its access log line (route templates, not
    paths: one series per route however many ids)."""
    metrics = request.app[HTTP_METRICS]
    route = _route_name(request)
    metrics.requests.labels(route, str(status)).inc()
    metrics.request_duration_s.labels(route, request.method, str(status)).observe(elapsed_s)
    log_access(request, route, status, elapsed_s * 1000.0, request.app[ACCESS_LOG])


def api_app(
    metrics: HttpMetrics, access_log_per_s_max: int = limits.access_log_lines_per_s_max
) -> web.Application:
    """An app with the gateway's conventions (error middleware, body bound,
    request metrics, access log) and no routes yet."""
    app = web.Application(middlewares=[api_middleware], client_max_size=limits.body_bytes_max)
    app[HTTP_METRICS] = metrics
    app[ACCESS_LOG] = AccessLogSampler(access_log_per_s_max, metrics.access_log_dropped.inc)
    return app


def build_app(services: Services, *extra_routes: web.RouteTableDef) -> web.Application:
    app = api_app(services.metrics, services.settings.access_log_per_s_max)
    app[SERVICES] = services
    app.add_routes(routes_public.routes)
    app.add_routes(routes_events.routes)
    app.add_routes(routes_admin.routes)
    app.add_routes(routes_halt.routes)
    app.add_routes(routes_evidence.routes)
    app.add_routes(routes_log.routes)
    app.add_routes(routes_reversals.routes)
    app.add_routes(routes_webhooks.routes)
    for table in extra_routes:
        app.add_routes(table)
    return app
