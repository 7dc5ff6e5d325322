"""Operators reverse a receipt: a new receipt in the customer's chain with a
negative amount, naming the original (see actors.charges.REVERSAL_KEY_PREFIX).
History is never edited; the balance and quota come back by the reversal's
own amount, and the total reversed never exceeds the original."""

from __future__ import annotations

import orjson
from aiohttp import web

from actors.charges import reversal_key
from gateway.errors import ApiError, bad_request
from gateway.logs import audit
from gateway.rendering import outcome_response
from gateway.routes_admin import admin_services
from gateway.routes_events import ensure_ready, origin_of
from gateway.validation import (
    IDEMPOTENCY_HEADER,
    EventRequest,
    parse_money,
    read_json_body,
    reject_unknown,
    require_object,
    require_str,
)
from ledger import StoredReceipt, limits

routes = web.RouteTableDef()

REVERSAL_FIELDS = frozenset({"amount", "reason"})


def _reversal(body: dict[str, object], original: StoredReceipt, operator_key: str
              ) -> EventRequest:
    reason = require_str(body, "reason", max_chars=limits.reversal_reason_chars_max)
    amount_minor = 0  # all that is left: the account actor knows how much
    if body.get("amount") is not None:
        amount_minor = parse_money(body["amount"], original.currency, "amount")
        if amount_minor <= 0:
            raise bad_request("invalid_amount", "amount must be greater than zero", "amount")
    return EventRequest(
        idempotency_key=reversal_key(original.receipt_id, operator_key),
        customer_id=original.customer_id,
        entitlement_id=original.entitlement_id,
        amount_minor=-amount_minor,
        currency=original.currency,
        usage_description=reason,
        # The original's: a retry must be the same request (see the fingerprint).
        event_timestamp=_event_timestamp(original),
        reverses=original.receipt_id,
    )


def _event_timestamp(original: StoredReceipt) -> str:
    document = orjson.loads(original.receipt_json)
    return str(document["event_timestamp"])


@routes.post("/v1/receipts/{receipt_id}/reversals")
async def post_reversal(request: web.Request) -> web.Response:
    services = admin_services(request)
    ensure_ready(services)
    operator_key = request.headers.get(IDEMPOTENCY_HEADER)
    if not operator_key:
        raise bad_request("parameter_missing", f"the {IDEMPOTENCY_HEADER} header is required",
                          IDEMPOTENCY_HEADER)
    key_max = limits.idempotency_key_chars_max - limits.reversal_key_overhead_chars_max
    if len(operator_key) > key_max:
        raise bad_request("too_long", f"{IDEMPOTENCY_HEADER} is longer than {key_max} characters",
                          IDEMPOTENCY_HEADER)
    body = require_object(await read_json_body(request))
    reject_unknown(body, REVERSAL_FIELDS)
    receipt_id = request.match_info["receipt_id"]
    original = await services.blocking(services.store.get_receipt, receipt_id)
    if original is None:
        raise ApiError(404, "receipt_not_found", "no such receipt", param="receipt_id")
    outcome = await services.charge(_reversal(body, original, operator_key))
    reversal = outcome.receipt
    audit(request, "receipt.reverse", receipt_id=receipt_id, customer_id=original.customer_id,
          outcome=outcome.kind, reversal_id=None if reversal is None else reversal.receipt_id,
          amount_minor=None if reversal is None else reversal.amount_minor,
          reason=body.get("reason"))
    return outcome_response(outcome, origin_of(request))
