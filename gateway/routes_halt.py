"""Operator routes for integrity halts (admin token): what is halted and why,
in full, and the one way to lift a halt, which is itself recorded."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from gateway.errors import ApiError, json_response
from gateway.logs import audit
from gateway.routes_admin import admin_services
from gateway.validation import read_json_body, reject_unknown, require_object, require_str
from ledger import HaltIncident, NotFound, limits
from ledger.clock import utc_now_rfc3339

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)


def incident_body(incident: HaltIncident) -> dict[str, Any]:
    return {
        "id": incident.incident_id,
        "object": "integrity_incident",
        "incident_id": incident.incident_id,
        "status": "open" if incident.is_open else "cleared",
        "opened_at": incident.opened_at,
        "reason": incident.reason,
        "detail": incident.detail,
        "source": incident.source,
        "customer_id": incident.customer_id,
        "receipt_id": incident.receipt_id,
        "cleared_at": incident.cleared_at,
        "clear_reason": incident.clear_reason,
    }


@routes.get("/v1/admin/halt")
async def show_halt(request: web.Request) -> web.Response:
    services = admin_services(request)
    open_now = await services.blocking(services.halts.open_halts)
    recent = await services.blocking(services.halts.recent_halts, limits.halts_listed_max)
    return json_response(
        {
            "object": "integrity_halt",
            "halted": bool(open_now),
            "open": [incident_body(incident) for incident in open_now],
            "recent": [incident_body(incident) for incident in recent],
        }
    )


@routes.post("/v1/admin/halt/clear")
async def clear_halt(request: web.Request) -> web.Response:
    """Lift one incident. The operator says why; the reason and time stay in
    the ledger with the incident. Charges resume once no incident is open."""
    services = admin_services(request)
    body = require_object(await read_json_body(request))
    reject_unknown(body, ("incident_id", "reason"))
    incident_id = require_str(body, "incident_id", max_chars=64)
    reason = require_str(body, "reason", max_chars=limits.halt_clear_reason_chars_max)
    if not reason.strip():
        raise ApiError(400, "invalid_value", "say why the halt may be lifted", param="reason")
    try:
        incident = await services.blocking(
            services.halts.clear_halt, incident_id, reason, utc_now_rfc3339()
        )
    except NotFound:
        raise ApiError(
            404, "incident_not_found", "no integrity incident with this id", param="incident_id"
        ) from None
    log.warning(
        "billing.integrity_halt_cleared",
        incident_id=incident.incident_id,
        reason=incident.clear_reason,
        cleared_at=incident.cleared_at,
        incident_reason=incident.reason,
        customer_id=incident.customer_id,
    )
    audit(request, "halt.clear", incident_id=incident.incident_id, reason=incident.clear_reason)
    await services.blocking(services.readiness.refresh)  # this gateway at once
    return json_response(
        {**incident_body(incident), "halted": services.readiness.halt is not None}
    )
