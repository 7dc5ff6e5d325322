"""Unauthenticated routes: JWKS, health, readiness, the API contract (OpenAPI
document and its docs page); and Prometheus metrics, behind the scraper's
token outside development."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import docs_page, openapi
from gateway.auth import require_token
from gateway.errors import DOCS_PATH, ApiError, json_response
from gateway.services import SERVICES
from gateway.settings import Settings, is_loopback

routes = web.RouteTableDef()


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return web.Response(
        body=services.jwks_body,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[SERVICES].readiness
    if readiness.ready():
        return json_response({"status": "ready"})
    body: dict[str, str] = {"status": "unavailable", "reason": readiness.public_reason()}
    if readiness.halt is not None:
        body["incident_id"] = readiness.halt.incident_id
    return json_response(body, status=503)


def require_metrics_access(request: web.Request, settings: Settings) -> None:
    """With BILLING_METRICS_TOKEN, only its holder (the Prometheus scraper)
    reads the metrics; without one they are open only in development or on
    a loopback listener, never on a public one (Cloud Run's URL)."""
    if settings.metrics_token:
        require_token(request, settings.metrics_token, "metrics")
    elif not (settings.dev or is_loopback(settings.host)):
        raise ApiError(
            401, "metrics_token_not_configured",
            "metrics are not public: the scraper needs BILLING_METRICS_TOKEN set on the server",
        )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    require_metrics_access(request, services.settings)
    services.metrics.ready.set(1 if services.readiness.ready() else 0)
    services.metrics.integrity_halted.set(0 if services.readiness.halt is None else 1)
    body = generate_latest(services.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    return json_response(openapi.document(), headers={"Cache-Control": "public, max-age=300"})


@routes.get(DOCS_PATH)
async def docs(request: web.Request) -> web.Response:
    return web.Response(
        text=docs_page.render(),
        content_type="text/html",
        headers={
            "Content-Security-Policy": docs_page.content_security_policy(),
            "Cache-Control": "public, max-age=300",
        },
    )
