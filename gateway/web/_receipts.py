"""Receipt pages: a receipt shown to its owner (signed in) or to anyone
holding a share link, and verified in the browser (static/verify.js) from
the document the page fetches and the public JWKS. Share links are
unguessable (256 random bits), stored as their SHA-256 only, and revocable.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import json_response
from gateway.routes_log import documents_with_proofs
from gateway.web._http import PageError, origin, page, redirect, render, services_of
from gateway.web._session import Session
from ledger import AlreadyExists, NotFound, StoredReceipt
from ledger.clock import utc_now_rfc3339
from ledger.money import format_amount
from ledger.web_store import ShareLink, WebAppStore

routes = web.RouteTableDef()

SHARE_PREFIX = "shr_"
_NOT_FOUND = "No such receipt, or it is not yours."


def web_store(request: web.Request) -> WebAppStore:
    store = services_of(request).store
    if not isinstance(store, WebAppStore):
        raise PageError(501, "This ledger store does not keep share links or key lists yet.")
    return store


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def owned_receipt(request: web.Request, session: Session, receipt_id: str) -> StoredReceipt:
    """The signed-in customer's receipt; another's is as missing as a missing one."""
    services = services_of(request)
    receipt = await services.blocking(services.store.get_receipt, receipt_id)
    if receipt is None or session.customer_id is None or receipt.customer_id != session.customer_id:
        raise PageError(404, _NOT_FOUND)
    return receipt


async def _previous(request: web.Request, receipt: StoredReceipt) -> StoredReceipt | None:
    if receipt.seq <= 1:
        return None
    services = services_of(request)
    found = await services.blocking(
        services.store.list_receipts, receipt.customer_id, receipt.seq - 2, 1
    )
    return found[0] if found else None


def _fields(receipt: StoredReceipt) -> dict[str, Any]:
    core: dict[str, Any] = orjson.loads(receipt.receipt_json)
    core["amount"] = format_amount(receipt.amount_minor, receipt.currency)
    core["balance_after"] = format_amount(receipt.balance_after_minor, receipt.currency)
    return core


async def _receipt_view(
    request: web.Request, receipt: StoredReceipt, document_url: str, *,
    shared_token: str | None = None,
) -> web.Response:
    """The owner's page links to the previous receipt; a shared page checks
    the link through the share token (the previous hash, not its contents)."""
    previous = None if shared_token is not None else await _previous(request, receipt)
    if receipt.seq <= 1:
        previous_url = None
    elif shared_token is not None:
        previous_url = f"/share/{shared_token}/previous"
    else:
        previous_url = (None if previous is None
                        else f"/dashboard/receipts/{previous.receipt_id}/document")
    return render(
        request,
        "receipt.html",
        receipt=_fields(receipt),
        receipt_id=receipt.receipt_id,
        document_url=document_url,
        previous=previous,
        previous_url=previous_url,
        shared=shared_token is not None,
    )


@page
async def receipt_page(request: web.Request, session: Session) -> web.StreamResponse:
    """`GET /v1/receipts/{id}` asked for by a browser (see routes_events)."""
    receipt_id = request.match_info["receipt_id"]
    if not session.signed_in:
        return redirect(f"/signin?next=/v1/receipts/{receipt_id}")
    receipt = await owned_receipt(request, session, receipt_id)
    return await _receipt_view(request, receipt, f"/dashboard/receipts/{receipt_id}/document")


async def _document(request: web.Request, receipt: StoredReceipt) -> web.Response:
    (document,) = await documents_with_proofs(services_of(request), [receipt])
    return json_response(document)


@routes.get("/dashboard/receipts/{receipt_id}/document")
@page
async def receipt_document(request: web.Request, session: Session) -> web.StreamResponse:
    receipt = await owned_receipt(request, session, request.match_info["receipt_id"])
    return await _document(request, receipt)


@routes.post("/dashboard/receipts/{receipt_id}/share")
@page
async def share_receipt(request: web.Request, session: Session) -> web.StreamResponse:
    receipt = await owned_receipt(request, session, request.match_info["receipt_id"])
    store, services = web_store(request), services_of(request)
    token = SHARE_PREFIX + secrets.token_urlsafe(32)
    link = ShareLink(
        link_id="shl_" + secrets.token_hex(8),
        token_hash=token_hash(token),
        customer_id=receipt.customer_id,
        receipt_id=receipt.receipt_id,
        created_at=utc_now_rfc3339(),
    )
    try:
        await services.blocking(store.create_share_link, link)
    except AlreadyExists:  # 2**-128 odds: ask again
        raise PageError(409, "Please try again.") from None
    return render(request, "shared.html", url=f"{origin(request)}/share/{token}", link=link)


@routes.post("/dashboard/shares/{link_id}/revoke")
@page
async def revoke_share(request: web.Request, session: Session) -> web.StreamResponse:
    if session.customer_id is None:
        return redirect("/signin")
    store, services = web_store(request), services_of(request)
    try:
        await services.blocking(
            store.revoke_share_link, session.customer_id, request.match_info["link_id"],
            utc_now_rfc3339(),
        )
    except NotFound:
        raise PageError(404, "No such share link.") from None
    return redirect("/dashboard#shares")


async def _shared_receipt(request: web.Request) -> tuple[str, StoredReceipt]:
    token = request.match_info["token"]
    store, services = web_store(request), services_of(request)
    link = None
    if token.startswith(SHARE_PREFIX) and len(token) < 100:
        link = await services.blocking(store.resolve_share_link, token_hash(token))
    if link is None or link.revoked_at is not None:
        raise PageError(404, "This share link does not exist or was revoked.")
    receipt = await services.blocking(services.store.get_receipt, link.receipt_id)
    if receipt is None or receipt.customer_id != link.customer_id:
        raise PageError(404, "This share link does not exist or was revoked.")
    return token, receipt


@routes.get("/share/{token}")
@page
async def shared_page(request: web.Request, session: Session) -> web.StreamResponse:
    token, receipt = await _shared_receipt(request)
    return await _receipt_view(request, receipt, f"/share/{token}/document", shared_token=token)


@routes.get("/share/{token}/document")
@page
async def shared_document(request: web.Request, session: Session) -> web.StreamResponse:
    _, receipt = await _shared_receipt(request)
    return await _document(request, receipt)


@routes.get("/share/{token}/previous")
@page
async def shared_previous(request: web.Request, session: Session) -> web.StreamResponse:
    """What a share link allows of the receipt before the shared one: its seq,
    hash and inclusion proof, enough to check the chain link against the
    signed log, and none of its fields (amount, usage, times)."""
    _, receipt = await _shared_receipt(request)
    previous = await _previous(request, receipt)
    if previous is None:
        raise PageError(404, "The shared receipt is the first of its chain.")
    (document,) = await documents_with_proofs(services_of(request), [previous])
    linked = {"object": "receipt_link", "seq": document["seq"],
              "receipt_hash": document["receipt_hash"]}
    if "log" in document:
        linked["log"] = document["log"]
    return json_response(linked)
