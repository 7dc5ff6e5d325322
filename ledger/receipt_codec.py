"""A StoredReceipt as bytes for the outbox: every index field plus the signed
receipt JSON, so a relay can rebuild the record without reading the ledger.
Field mapping and type checks are the shared ones of `_gcp_receipts`."""

from __future__ import annotations

from typing import Any

import orjson

from ledger._gcp_receipts import RECEIPT_FIELDS, receipt_from_fields, receipt_row
from ledger.errors import InvariantViolation, LedgerError
from ledger.model import StoredReceipt


def encode_stored_receipt(receipt: StoredReceipt) -> bytes:
    fields: dict[str, Any] = dict(zip(RECEIPT_FIELDS, receipt_row(receipt), strict=True))
    fields["receipt_json"] = receipt.receipt_json.decode("utf-8")
    return orjson.dumps(fields)


def decode_stored_receipt(payload: bytes) -> StoredReceipt:
    try:
        fields: dict[str, Any] = orjson.loads(payload)
        fields["receipt_json"] = str(fields["receipt_json"]).encode("utf-8")
        return receipt_from_fields(fields)
    except (orjson.JSONDecodeError, KeyError, TypeError, InvariantViolation) as error:
        raise LedgerError(f"outbox payload is not a stored receipt: {error}") from error
