"""Operator routes (admin token): customers, API keys, entitlements, and the
fault-injection hook used by chaos tests when it is enabled."""

from __future__ import annotations

import bisect
import dataclasses
import re
import secrets
from typing import Any

import pykka
from aiohttp import web

from actors.integrity.reconciler import FullPass
from gateway.auth import require_token
from gateway.errors import ApiError, bad_request, json_response
from gateway.logs import audit
from gateway.services import SERVICES, Services
from gateway.validation import (
    optional_str,
    parse_money,
    query_int,
    read_json_body,
    reject_unknown,
    require_currency,
    require_object,
    require_str,
)
from ledger import AlreadyExists, ApiKey, Customer, Entitlement, NotFound, limits
from ledger.api_keys import issue_api_key
from ledger.clock import utc_now_rfc3339
from ledger.money import format_amount
from ledger.web_store import WebAppStore

routes = web.RouteTableDef()

# Used with fullmatch: `$` would also accept a final "\n" ("cus_a\n").
_ID_RE = re.compile(r"[A-Za-z0-9_\-.:]+", re.ASCII)
_EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")
ENTITLEMENT_STATUSES = ("active", "trialing", "past_due", "canceled", "unpaid", "inactive")


def admin_services(request: web.Request) -> Services:
    """The services, once the request carries the admin token (401 otherwise)."""
    services = request.app[SERVICES]
    require_token(request, services.settings.admin_token or "", "admin")
    return services


def _check_id(value: str, param: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise bad_request("invalid_value", f"{param} may hold only letters, digits and _-.:", param)
    return value


def customer_body(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.customer_id,
        "object": "customer",
        "customer_id": customer.customer_id,
        "email": customer.email,
        "currency": customer.currency,
        "created_at": customer.created_at,
        "stripe_customer_id": customer.stripe_customer_id,
    }


@routes.post("/v1/customers")
async def create_customer(request: web.Request) -> web.Response:
    services = admin_services(request)
    body = require_object(await read_json_body(request))
    reject_unknown(body, ("customer_id", "email", "currency"))
    customer_id = optional_str(body, "customer_id", max_chars=limits.customer_id_chars_max)
    if customer_id is not None:
        _check_id(customer_id, "customer_id")
    email = require_str(body, "email", max_chars=limits.email_chars_max)
    if not _EMAIL_RE.fullmatch(email):
        raise bad_request("invalid_email", "email is not an email address", "email")
    currency = require_currency(body)
    customer = Customer(
        customer_id=customer_id or "cus_" + secrets.token_hex(8),
        email=email,
        currency=currency,
        created_at=utc_now_rfc3339(),
    )
    try:
        await services.blocking(services.store.create_customer, customer)
    except AlreadyExists:
        raise ApiError(
            409, "customer_exists", f"customer {customer_id!r} already exists", param="customer_id"
        ) from None
    audit(request, "customer.create", customer_id=customer.customer_id,
          currency=customer.currency)
    return json_response(customer_body(customer), status=201)


@routes.get("/v1/customers")
async def list_customers(request: web.Request) -> web.Response:
    """Customers in id order, a page at a time (`starting_after` = the last id
    of the previous page). Reads every id once per page: an operator's tool,
    not a hot path."""
    services = admin_services(request)
    limit = query_int(request, "limit", 20, 1, limits.customers_page_max)
    after = request.query.get("starting_after", "")

    def page() -> tuple[list[Customer], bool]:
        ids = sorted(services.store.list_customer_ids())
        start = bisect.bisect_right(ids, after) if after else 0
        chosen = ids[start : start + limit]
        found = [services.store.get_customer(customer_id) for customer_id in chosen]
        return [c for c in found if c is not None], start + limit < len(ids)

    customers, has_more = await services.blocking(page)
    return json_response(
        {
            "object": "list",
            "data": [customer_body(c) for c in customers],
            "has_more": has_more,
            "url": request.path,
        }
    )


@routes.get("/v1/customers/{customer_id}")
async def get_customer(request: web.Request) -> web.Response:
    services = admin_services(request)
    customer = await _existing_customer(services, request.match_info["customer_id"])
    return json_response(customer_body(customer))


async def _existing_customer(services: Services, customer_id: str) -> Customer:
    customer = await services.blocking(services.store.get_customer, customer_id)
    if customer is None:
        raise ApiError(404, "customer_not_found", "no such customer", param="customer_id")
    return customer


@routes.post("/v1/customers/{customer_id}/api-keys")
async def create_api_key(request: web.Request) -> web.Response:
    services = admin_services(request)
    customer = await _existing_customer(services, request.match_info["customer_id"])
    record, secret = await services.blocking(
        lambda: issue_api_key(
            services.store,
            customer.customer_id,
            utc_now_rfc3339(),
            live=not services.settings.dev,  # sk_live_ unless in development
        )
    )
    audit(request, "api_key.create", customer_id=customer.customer_id, key_id=record.key_id)
    return json_response(
        {
            "id": record.key_id,
            "object": "api_key",
            "api_key": secret,
            "key_id": record.key_id,
            "customer_id": customer.customer_id,
        },
        status=201,
    )


def api_key_body(key: ApiKey) -> dict[str, Any]:
    """A key as listed: never its secret (shown once, not stored) nor its hash."""
    return {
        "id": key.key_id,
        "object": "api_key",
        "key_id": key.key_id,
        "customer_id": key.customer_id,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "status": "active" if key.revoked_at is None else "revoked",
    }


@routes.get("/v1/customers/{customer_id}/api-keys")
async def list_api_keys(request: web.Request) -> web.Response:
    """The customer's keys, newest first, revoked ones included."""
    services = admin_services(request)
    customer = await _existing_customer(services, request.match_info["customer_id"])
    store = services.store
    if not isinstance(store, WebAppStore):
        raise ApiError(501, "not_supported", "this ledger store cannot list API keys yet")
    keys = await services.blocking(store.list_api_keys, customer.customer_id)
    return json_response(
        {
            "object": "list",
            "data": [api_key_body(key) for key in keys],
            "has_more": len(keys) >= limits.api_keys_listed_max,
            "url": request.path,
        }
    )


@routes.delete("/v1/customers/{customer_id}/api-keys/{key_id}")
async def revoke_api_key(request: web.Request) -> web.Response:
    services = admin_services(request)
    customer = await _existing_customer(services, request.match_info["customer_id"])
    key_id = request.match_info["key_id"]
    try:
        await services.blocking(
            services.store.revoke_api_key, customer.customer_id, key_id, utc_now_rfc3339()
        )
    except NotFound:
        raise ApiError(
            404, "api_key_not_found", "this customer has no such API key", param="key_id"
        ) from None
    services.api_keys.forget_key_id(key_id)
    audit(request, "api_key.revoke", customer_id=customer.customer_id, key_id=key_id)
    return json_response(
        {"id": key_id, "object": "api_key", "key_id": key_id, "revoked": True, "deleted": True}
    )


def parse_entitlement(body: dict[str, Any], customer: Customer, entitlement_id: str) -> Entitlement:
    reject_unknown(body, ("quota", "policy", "status", "plan"))
    if "quota" not in body:
        raise bad_request("parameter_missing", "quota is required (null for unlimited)", "quota")
    quota = body["quota"]
    quota_minor = None if quota is None else parse_money(quota, customer.currency, "quota")
    if quota_minor is not None and quota_minor > limits.quota_minor_max:
        raise bad_request("out_of_range", "quota is too large", "quota")
    policy = body.get("policy", "hard")
    if policy not in ("hard", "soft"):
        raise bad_request("invalid_value", 'policy must be "hard" or "soft"', "policy")
    status = body.get("status", "active")
    if status not in ENTITLEMENT_STATUSES:
        raise bad_request(
            "invalid_value", f"status must be one of {', '.join(ENTITLEMENT_STATUSES)}", "status"
        )
    return Entitlement(
        customer_id=customer.customer_id,
        entitlement_id=entitlement_id,
        quota_minor=quota_minor,
        policy=policy,
        status=status,
        updated_at=utc_now_rfc3339(),
        plan=optional_str(body, "plan", max_chars=64),
    )


def entitlement_body(entitlement: Entitlement, currency: str) -> dict[str, Any]:
    quota = entitlement.quota_minor
    return {
        "id": entitlement.entitlement_id,
        "object": "entitlement",
        "customer_id": entitlement.customer_id,
        "entitlement_id": entitlement.entitlement_id,
        "quota": None if quota is None else format_amount(quota, currency),
        "policy": entitlement.policy,
        "status": entitlement.status,
        "plan": entitlement.plan,
        "used": format_amount(entitlement.used_minor, currency),
        "updated_at": entitlement.updated_at,
    }


@routes.put("/v1/customers/{customer_id}/entitlements/{entitlement_id}")
async def put_entitlement(request: web.Request) -> web.Response:
    services = admin_services(request)
    customer = await _existing_customer(services, request.match_info["customer_id"])
    entitlement_id = _check_id(request.match_info["entitlement_id"], "entitlement_id")
    if len(entitlement_id) > limits.entitlement_id_chars_max:
        raise bad_request("too_long", "entitlement_id is too long", "entitlement_id")
    body = require_object(await read_json_body(request))
    entitlement = parse_entitlement(body, customer, entitlement_id)
    await services.blocking(services.store.put_entitlement, entitlement)
    # The live actor must see the new quota/status before its next charge.
    services.directory.reload(customer.customer_id)
    audit(request, "entitlement.put", customer_id=customer.customer_id,
          entitlement_id=entitlement_id, quota_minor=entitlement.quota_minor,
          policy=entitlement.policy, status=entitlement.status)
    stored = await services.blocking(services.store.get_entitlements, customer.customer_id)
    return json_response(entitlement_body(stored[entitlement_id], customer.currency))


@routes.post("/v1/admin/faults/{customer_id}")
async def inject_fault(request: web.Request) -> web.Response:
    """Crash a customer's account actor (chaos tests); off unless enabled."""
    services = admin_services(request)
    if not services.settings.fault_injection:
        raise ApiError(404, "not_found", "fault injection is disabled")
    customer_id = request.match_info["customer_id"]
    crashed = services.directory.inject_fault(customer_id, "requested by operator")
    audit(request, "fault.inject", customer_id=customer_id, crashed=crashed)
    return json_response({"customer_id": customer_id, "crashed": crashed})


@routes.get("/v1/admin/tree")
async def supervision_tree(request: web.Request) -> web.Response:
    services = admin_services(request)
    return json_response(services.tree.tree())


@routes.post("/v1/admin/reconcile")
async def reconcile_now(request: web.Request) -> web.Response:
    """Audit every chain now and repair copies that only lag (an operator's
    check after an incident); answers with what was found."""
    services = admin_services(request)
    child = services.tree.child("reconciler")
    if not isinstance(child, pykka.ActorRef):
        raise ApiError(
            503, "reconciler_unavailable", "the reconciler is restarting", retry_after_s=5
        )
    summary: Any = await services.blocking(
        lambda: child.ask(FullPass(repair=True), timeout=600.0)
    )
    audit(request, "reconcile.run", repair=True)
    return json_response(dataclasses.asdict(summary))
