"""How receipts and charge outcomes look on the wire."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from actors import charges
from actors.charges import ChargeOutcome
from crypto import LogProof
from gateway.errors import ApiError, json_response
from ledger import StoredReceipt
from ledger.money import format_amount

# The original API answered "processed"; "committed" (what this service said
# before) stays as the boolean field `committed` for clients that read it.
RECEIPT_STATUS = "processed"

# Domain refusal code -> HTTP status.
_STATUS_BY_CODE = {
    charges.QUOTA_EXCEEDED: 402,
    charges.ENTITLEMENT_INACTIVE: 402,
    charges.PAYMENT_REQUIRED: 402,
    charges.BALANCE_LIMIT: 402,
    charges.IDEMPOTENCY_KEY_REUSE: 409,
    charges.ENTITLEMENT_NOT_FOUND: 400,
    charges.CURRENCY_MISMATCH: 400,
    charges.CUSTOMER_NOT_FOUND: 404,
    charges.RECEIPT_NOT_FOUND: 404,
    charges.REVERSAL_EXCEEDS_RECEIPT: 400,
    charges.REVERSAL_NOT_ALLOWED: 400,
    charges.ACCOUNT_UNAVAILABLE: 503,
    charges.STORE_UNAVAILABLE: 503,
    charges.OVERLOADED: 503,
    charges.INTERNAL: 500,
}


def receipt_document(receipt: StoredReceipt, log: LogProof | None = None) -> dict[str, Any]:
    """The full receipt: every core field, receipt_hash, its proof (`log`:
    leaf index, inclusion path and signed checkpoint; and in receipt mode its
    own `signature`), plus the convenience fields `id`, `object`, `amount`,
    `timestamp`, `status` and `committed` (not signed: verifiers read only the
    core fields and the proof)."""
    document: dict[str, Any] = {"id": receipt.receipt_id, "object": "receipt"}
    document.update(orjson.loads(receipt.receipt_json))
    if log is not None:
        document["log"] = log.to_json()
    document["amount"] = format_amount(receipt.amount_minor, receipt.currency)
    document["timestamp"] = document.get("event_timestamp")
    document["status"] = RECEIPT_STATUS
    document["committed"] = True
    return document


def charge_summary(
    receipt: StoredReceipt, origin: str, log: LogProof | None = None
) -> dict[str, Any]:
    """The 202 body of POST /v1/events: with the receipt's log proof when it
    was just committed (a replay gets it from the receipt's URL)."""
    core: dict[str, Any] = orjson.loads(receipt.receipt_json)
    quota_remaining = core.get("quota_remaining_minor")
    summary = {
        "id": receipt.receipt_id,
        "object": "receipt",
        "receipt_id": receipt.receipt_id,
        "status": RECEIPT_STATUS,
        "committed": True,
        "seq": receipt.seq,
        "amount": format_amount(receipt.amount_minor, receipt.currency),
        "currency": receipt.currency,
        "balance_after": format_amount(receipt.balance_after_minor, receipt.currency),
        "quota_remaining": (
            None if quota_remaining is None else format_amount(quota_remaining, receipt.currency)
        ),
        "receipt_hash": receipt.receipt_hash,
        "receipt_url": f"{origin}/v1/receipts/{receipt.receipt_id}",
    }
    if log is not None:
        summary["log"] = log.to_json()
    return summary


# Stripe's header on an answer given before under the same idempotency key.
_REPLAYED_HEADERS = {"Idempotent-Replayed": "true"}


def outcome_error(outcome: ChargeOutcome) -> ApiError:
    """A refusal; a kept one sent again under its key carries the replay header."""
    code = outcome.code or charges.INTERNAL
    status = _STATUS_BY_CODE.get(code, 500)
    retry_after = 1 if status == 503 else None
    headers = _REPLAYED_HEADERS if outcome.kind == "replayed" else None
    return ApiError(status, code, outcome.message, param=outcome.param,
                    retry_after_s=retry_after, headers=headers)


def refusal_result(outcome: ChargeOutcome) -> dict[str, Any]:
    """A refused event in a batch's answer; `replayed` when it is a kept
    refusal sent again under its key (as a charged event's `replayed`)."""
    error = outcome_error(outcome)
    result: dict[str, Any] = {"status": error.status, **error.body()}
    if outcome.kind == "replayed":
        result["replayed"] = True
    return result


def outcome_response(outcome: ChargeOutcome, origin: str) -> web.Response:
    if outcome.receipt is None or outcome.kind == "refused":
        raise outcome_error(outcome)
    headers = _REPLAYED_HEADERS if outcome.kind == "replayed" else None
    return json_response(
        charge_summary(outcome.receipt, origin, outcome.log), status=202, headers=headers
    )
