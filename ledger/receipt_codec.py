"""A StoredReceipt as bytes for the outbox: every index field plus the signed
receipt JSON, so a relay can rebuild the record without reading the ledger."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from ledger.errors import LedgerError
from ledger.model import StoredReceipt


def encode_stored_receipt(receipt: StoredReceipt) -> bytes:
    fields: dict[str, Any] = asdict(receipt)
    fields["receipt_json"] = receipt.receipt_json.decode("utf-8")
    return orjson.dumps(fields)


def decode_stored_receipt(payload: bytes) -> StoredReceipt:
    try:
        fields: dict[str, Any] = orjson.loads(payload)
        fields["receipt_json"] = str(fields["receipt_json"]).encode("utf-8")
        return StoredReceipt(**fields)
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise LedgerError(f"outbox payload is not a stored receipt: {error}") from error
