"""Dispute evidence: one self-contained, sealed bundle per receipt, for the
receipt's customer (its API key) or an operator (the admin token); as JSON,
or as the HTML page a support agent sends."""

from __future__ import annotations

import hmac

from aiohttp import web

from actors.integrity.evidence import build_evidence
from gateway import evidence_html
from gateway.auth import bearer_token
from gateway.errors import ApiError
from gateway.services import SERVICES
from ledger import ChargeRequests
from ledger.clock import utc_now_rfc3339

routes = web.RouteTableDef()


async def _bundle(request: web.Request) -> tuple[str, bytes]:
    services = request.app[SERVICES]
    admin_token = services.settings.admin_token or ""
    token = bearer_token(request)
    is_admin = bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())
    customer_id = None if is_admin else await services.api_keys.customer_for(request)
    receipt_id = request.match_info["receipt_id"]
    receipt = await services.blocking(services.store.get_receipt, receipt_id)
    if receipt is None or (customer_id is not None and receipt.customer_id != customer_id):
        # The same answer for another customer's receipt: never confirm it exists.
        raise ApiError(404, "receipt_not_found", "no such receipt", param="receipt_id")
    store = services.store
    requests = store if isinstance(store, ChargeRequests) else None
    bundle = await services.blocking(
        build_evidence,
        store,
        services.log_proofs,
        requests,
        services.key_ring,
        receipt,
        utc_now_rfc3339,
    )
    return receipt_id, bundle


def _html(bundle: bytes) -> web.Response:
    return web.Response(
        text=evidence_html.render(bundle),
        content_type="text/html",
        headers={"Content-Security-Policy": evidence_html.CONTENT_SECURITY_POLICY},
    )


@routes.get("/v1/receipts/{receipt_id}/evidence")
async def get_evidence(request: web.Request) -> web.Response:
    receipt_id, bundle = await _bundle(request)
    accept = request.headers.get("Accept", "")
    if "text/html" in accept and "application/json" not in accept:
        return _html(bundle)
    return web.Response(
        body=bundle,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="evidence-{receipt_id}.json"'},
    )


@routes.get("/v1/receipts/{receipt_id}/evidence.html")
async def get_evidence_html(request: web.Request) -> web.Response:
    _, bundle = await _bundle(request)
    return _html(bundle)
