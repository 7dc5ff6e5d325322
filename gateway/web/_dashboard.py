"""The dashboard: subscription and entitlements, balance, usage per day,
the latest receipts with paging, export of the whole chain, API keys and
share links, "Manage billing". Everything is read for the signed-in
customer only: no id from the browser is trusted without that check."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.routes_log import documents_with_proofs
from gateway.stripe.context import STRIPE
from gateway.web._chart import since_day, usage_chart
from gateway.web._http import (
    WEB,
    PageError,
    adopt_session,
    page,
    redirect,
    render,
    secure_headers,
    services_of,
)
from gateway.web._receipts import web_store
from gateway.web._session import Session
from ledger import NotFound, StoredReceipt
from ledger.api_keys import issue_api_key
from ledger.clock import utc_now_rfc3339
from ledger.limits import receipts_page_max, usage_days_max, web_receipts_page_max
from ledger.money import format_amount

routes = web.RouteTableDef()

CHART_DAYS = 14
_CSV_COLUMNS = ("seq", "receipt_id", "recorded_at", "event_timestamp", "entitlement_id",
                "amount", "currency", "balance_after", "usage_description", "idempotency_key",
                "receipt_hash", "previous_receipt_hash")


def _customer(session: Session) -> str:
    if session.customer_id is None:
        raise PageError(403, "Your sign-in has no billing account yet: subscribe or start a "
                        "trial on the pricing page.")
    return session.customer_id


def _before(request: web.Request, head_seq: int) -> int:
    raw = request.query.get("before", "")
    if not raw:
        return head_seq + 1
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16:
        raise PageError(400, "before must be a receipt number.")
    return min(int(raw), head_seq + 1)


async def _receipts_page(request: web.Request, customer_id: str, head_seq: int) -> dict[str, Any]:
    """Newest first, `web_receipts_page_max` a page, before seq `before`."""
    services = services_of(request)
    before = _before(request, head_seq)
    after = max(0, before - 1 - web_receipts_page_max)
    page_rows = await services.blocking(
        services.store.list_receipts, customer_id, after, before - 1 - after
    ) if before > 1 else []
    rows = [_row(r) for r in reversed(page_rows)]
    return {"rows": rows, "older": after if after > 0 else None,
            "newer": before + web_receipts_page_max if before <= head_seq else None}


def _row(receipt: StoredReceipt) -> dict[str, Any]:
    core = orjson.loads(receipt.receipt_json)
    return {"receipt_id": receipt.receipt_id, "seq": receipt.seq,
            "recorded_at": receipt.recorded_at, "entitlement_id": receipt.entitlement_id,
            "amount": format_amount(receipt.amount_minor, receipt.currency),
            "currency": receipt.currency, "usage_description": core.get("usage_description")}


@routes.get("/dashboard")
@page
async def dashboard(request: web.Request, session: Session) -> web.StreamResponse:
    if not session.signed_in:
        return redirect("/signin?next=/dashboard")
    session = await _with_account(request, session)
    # Back from Checkout: the subscription arrives by webhook, maybe a moment later.
    checkout = "checkout" in request.query
    if session.customer_id is None:
        return render(request, "dashboard.html", account=None, activating=checkout)
    return await _render_dashboard(request, session.customer_id, activating=checkout)


async def _with_account(request: web.Request, session: Session) -> Session:
    """An email that had no account at sign-in may have one now (after
    Checkout): look again, and keep the answer in the session."""
    if session.customer_id is not None or session.email is None:
        return session
    services = services_of(request)
    customer = await services.blocking(services.store.find_customer_by_email, session.email)
    if customer is None:
        return session
    found = dataclasses.replace(session, customer_id=customer.customer_id)
    adopt_session(request, found)
    return found


async def _render_dashboard(
    request: web.Request, customer_id: str, **extra: Any
) -> web.Response:
    services, store = services_of(request), web_store(request)
    account = await services.blocking(services.store.load_account, customer_id)
    if account is None:
        raise PageError(404, "Your billing account was not found.")
    currency = account.customer.currency
    today = datetime.now(UTC).date()
    days = min(CHART_DAYS, usage_days_max)
    usage = await services.blocking(store.usage_by_day, customer_id, since_day(today, days))
    entitlements = [
        {"id": e.entitlement_id, "status": e.status, "plan": e.plan, "policy": e.policy,
         "quota": None if e.quota_minor is None else format_amount(e.quota_minor, currency),
         "used": format_amount(e.used_minor, currency),
         "remaining": None if e.quota_minor is None
         else format_amount(e.quota_minor - e.used_minor, currency),
         "trial_end": e.trial_end, "period_end": e.period_end}
        for e in sorted(account.entitlements.values(), key=lambda e: e.entitlement_id)
    ]
    return render(
        request, "dashboard.html",
        account=account, currency=currency,
        balance=format_amount(account.balance_minor, currency),
        entitlements=entitlements,
        chart=usage_chart(usage, today, days, currency),
        receipts=await _receipts_page(request, customer_id, account.seq),
        keys=await services.blocking(store.list_api_keys, customer_id),
        shares=await services.blocking(store.list_share_links, customer_id),
        billing=STRIPE in request.app and request.app[STRIPE].settings.enabled,
        new_key=extra.get("new_key"),
        activating=bool(extra.get("activating"))
        and not any(e.chargeable for e in account.entitlements.values()),
    )


@routes.post("/dashboard/api-keys")
@page
async def create_key(request: web.Request, session: Session) -> web.StreamResponse:
    customer_id = _customer(session)
    services = services_of(request)
    record, secret = await services.blocking(
        lambda: issue_api_key(services.store, customer_id, utc_now_rfc3339(),
                              live=not services.settings.dev)
    )
    # Rendered, not redirected: the secret must not travel in a URL.
    return await _render_dashboard(request, customer_id,
                                   new_key={"id": record.key_id, "secret": secret})


@routes.post("/dashboard/api-keys/{key_id}/revoke")
@page
async def revoke_key(request: web.Request, session: Session) -> web.StreamResponse:
    customer_id = _customer(session)
    services = services_of(request)
    key_id = request.match_info["key_id"]
    try:
        await services.blocking(
            services.store.revoke_api_key, customer_id, key_id, utc_now_rfc3339()
        )
    except NotFound:
        raise PageError(404, "You have no such API key.") from None
    services.api_keys.forget_key_id(key_id)
    return redirect("/dashboard#keys")


async def _whole_chain(request: web.Request, customer_id: str) -> AsyncIterator[list[Any]]:
    """Receipt documents with their proofs, a page at a time, in chain order."""
    services = services_of(request)
    after = 0
    while True:
        page_rows = await services.blocking(
            services.store.list_receipts, customer_id, after, receipts_page_max
        )
        if not page_rows:
            return
        yield await documents_with_proofs(services, page_rows)
        after = page_rows[-1].seq


async def _export(request: web.Request, session: Session, kind: str) -> web.StreamResponse:
    customer_id = _customer(session)
    content_type = "application/x-ndjson" if kind == "jsonl" else "text/csv"
    response = web.StreamResponse(headers={
        "Content-Type": f"{content_type}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="receipts-{customer_id}.{kind}"',
    })
    secure_headers(response, request.app[WEB])
    await response.prepare(request)
    if kind == "csv":
        await response.write((",".join(_CSV_COLUMNS) + "\r\n").encode())
    async for documents in _whole_chain(request, customer_id):
        if kind == "jsonl":
            chunk = b"".join(orjson.dumps(d) + b"\n" for d in documents)
        else:
            chunk = _csv_rows(documents).encode()
        await response.write(chunk)
    await response.write_eof()
    return response


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet runs a cell that starts with = + - @ as a formula.
    risky = text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text)
    return "'" + text if risky else text


def _number(text: str) -> bool:
    return text.lstrip("-").replace(".", "", 1).isdigit()


def _csv_rows(documents: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for d in documents:
        d = {**d, "balance_after": format_amount(d["balance_after_minor"], d["currency"])}
        writer.writerow([_csv_cell(d.get(c)) for c in _CSV_COLUMNS])
    return out.getvalue()


@routes.get("/dashboard/export.jsonl")
@page
async def export_jsonl(request: web.Request, session: Session) -> web.StreamResponse:
    return await _export(request, session, "jsonl")


@routes.get("/dashboard/export.csv")
@page
async def export_csv(request: web.Request, session: Session) -> web.StreamResponse:
    return await _export(request, session, "csv")
