"""An in-memory stand-in for `billing serve`'s HTTP API, for testing the load kit.

It speaks just enough of the API (admin, events, batch, receipts, balance,
webhook) for the scenarios and the check, and can be told to misbehave
(`--bug double_charge` ignores idempotency, `--bug lose` acknowledges without
storing) so the tests can show the check catches what it claims to catch.
It is no model of the real service: no signatures, no persistence.

`python -m tests.loadtest.fake_billing --port P [--admission-max N] [--bug ...]`
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

_GENESIS = "sha256:" + "0" * 64


@dataclass
class Account:
    customer_id: str
    currency: str
    receipts: list[dict[str, Any]] = field(default_factory=list)
    by_key: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    quota_minor: int | None = None
    policy: str = "soft"
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class State:
    admin_token: str
    bug: str
    admission_max: int
    webhook_secret: str
    accounts: dict[str, Account] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    inflight: int = 0


STATE = web.AppKey("state", State)
SEEN_EVENTS = web.AppKey("seen_events", set)


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def _bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()


async def _admin_only(request: web.Request) -> web.Response | None:
    if _bearer(request) != request.app[STATE].admin_token:
        return _error(401, "unauthorized", "bad admin token")
    return None


async def create_customer(request: web.Request) -> web.Response:
    if (denied := await _admin_only(request)) is not None:
        return denied
    body = await request.json()
    cid = body.get("customer_id") or "cus_" + secrets.token_hex(6)
    request.app[STATE].accounts[cid] = Account(cid, body.get("currency", "USD"))
    return web.json_response({"customer_id": cid, "email": body.get("email")}, status=201)


async def create_key(request: web.Request) -> web.Response:
    if (denied := await _admin_only(request)) is not None:
        return denied
    cid = request.match_info["customer_id"]
    if cid not in request.app[STATE].accounts:
        return _error(404, "not_found", "no such customer")
    secret = "sk_test_" + secrets.token_urlsafe(16)
    request.app[STATE].keys[secret] = cid
    return web.json_response({"api_key": secret}, status=201)


async def put_entitlement(request: web.Request) -> web.Response:
    if (denied := await _admin_only(request)) is not None:
        return denied
    account = request.app[STATE].accounts[request.match_info["customer_id"]]
    body = await request.json()
    quota = body.get("quota")
    account.quota_minor = None if quota is None else int(Decimal(quota) * 100)
    account.policy = body.get("policy", "soft")
    return web.json_response({"entitlement_id": request.match_info["entitlement_id"], **body})


def _account(request: web.Request) -> Account | None:
    cid = request.app[STATE].keys.get(_bearer(request))
    return None if cid is None else request.app[STATE].accounts[cid]


async def _charge(state: State, account: Account, event: dict[str, Any]) -> tuple[int, Any, bool]:
    """(status, body, replayed) for one event."""
    key = str(event["idempotent_key"])
    fingerprint = hashlib.sha256(
        orjson.dumps(
            {k: v for k, v in event.items() if k != "timestamp"}, option=orjson.OPT_SORT_KEYS
        )
    ).digest()
    async with account.lock:
        if key in account.by_key and state.bug != "double_charge":
            stored, reply = account.by_key[key]
            if stored != fingerprint:
                return 409, {"error": {"code": "idempotency_key_reuse"}}, False
            return 202, reply, True
        amount_minor = int(Decimal(event["amount"]) * 100)
        used = sum(r["amount_minor"] for r in account.receipts)
        hard = account.policy == "hard" and account.quota_minor is not None
        if hard and used + amount_minor > (account.quota_minor or 0):
            return 402, {"error": {"code": "quota_exceeded"}}, False
        await asyncio.sleep(0)  # let concurrent duplicates interleave, as a real service would
        previous = account.receipts[-1]["receipt_hash"] if account.receipts else _GENESIS
        receipt = {
            "receipt_id": "rcpt_" + secrets.token_hex(8),
            "customer_id": account.customer_id,
            "seq": len(account.receipts) + 1,
            "idempotency_key": key,
            "entitlement_id": event["entitlement_id"],
            "amount_minor": amount_minor,
            "currency": account.currency,
            "balance_after_minor": used + amount_minor,
            "previous_receipt_hash": previous,
        }
        receipt["receipt_hash"] = "sha256:" + hashlib.sha256(orjson.dumps(receipt)).hexdigest()
        if state.bug != "lose":
            account.receipts.append(receipt)
        reply = {
            "receipt_id": receipt["receipt_id"],
            "status": "accepted",
            "balance_after": str(Decimal(used + amount_minor) / 100),
            "quota_remaining": None,
            "receipt_url": f"/v1/receipts/{receipt['receipt_id']}",
        }
        account.by_key[key] = (fingerprint, reply)
        return 202, reply, False


async def post_event(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account = _account(request)
    if account is None:
        return _error(401, "unauthorized", "bad api key")
    if state.inflight >= state.admission_max:
        return _error(429, "overloaded", "try again", **{"Retry-After": "1"})
    state.inflight += 1
    try:
        status, body, replayed = await _charge(state, account, await request.json())
    finally:
        state.inflight -= 1
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return web.json_response(body, status=status, headers=headers)


async def post_batch(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account = _account(request)
    if account is None:
        return _error(401, "unauthorized", "bad api key")
    results = []
    for event in (await request.json())["events"]:
        status, body, replayed = await _charge(state, account, event)
        if status == 202:
            results.append({"status": 200 if replayed else 202, "receipt": body})
        else:
            results.append({"status": status, "error": body.get("error")})
    return web.json_response({"results": results})


async def list_receipts(request: web.Request) -> web.Response:
    account = _account(request)
    if account is None:
        return _error(401, "unauthorized", "bad api key")
    after = int(request.query.get("after_seq", "0"))
    limit = int(request.query.get("limit", "100"))
    chain = [r for r in account.receipts if r["seq"] > after]
    return web.json_response({"data": chain[:limit], "has_more": len(chain) > limit})


async def balance(request: web.Request) -> web.Response:
    account = _account(request)
    if account is None:
        return _error(401, "unauthorized", "bad api key")
    total = sum(r["amount_minor"] for r in account.receipts)
    return web.json_response({"balance_minor": total, "currency": account.currency})


async def webhook(request: web.Request) -> web.Response:
    if not request.app[STATE].webhook_secret:
        return _error(503, "stripe_not_configured", "the Stripe webhook secret is not configured")
    if "v1=" not in request.headers.get("Stripe-Signature", ""):
        return _error(400, "bad_signature", "bad signature")
    event_id = (await request.json())["id"]
    seen = request.app[SEEN_EVENTS]
    duplicate = event_id in seen
    seen.add(event_id)
    return web.json_response({"received": True, "duplicate": duplicate})


async def readyz(_request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


def build_app(
    admin_token: str, bug: str = "", admission_max: int = 1000, webhook_secret: str = ""
) -> web.Application:
    app = web.Application()
    app[STATE] = State(admin_token, bug, admission_max, webhook_secret)
    app[SEEN_EVENTS] = set()
    app.router.add_post("/v1/customers", create_customer)
    app.router.add_post("/v1/customers/{customer_id}/api-keys", create_key)
    app.router.add_put("/v1/customers/{customer_id}/entitlements/{entitlement_id}", put_entitlement)
    app.router.add_post("/v1/events", post_event)
    app.router.add_post("/v1/events/batch", post_batch)
    app.router.add_get("/v1/receipts", list_receipts)
    app.router.add_get("/v1/balance", balance)
    app.router.add_post("/v1/stripe/webhook", webhook)
    app.router.add_get("/readyz", readyz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bug", default="", choices=["", "double_charge", "lose"])
    parser.add_argument("--admission-max", type=int, default=1000)
    args = parser.parse_args()
    app = build_app(
        os.environ["BILLING_ADMIN_TOKEN"],
        args.bug,
        args.admission_max,
        os.environ.get("STRIPE_WEBHOOK_SECRET", ""),
    )
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
