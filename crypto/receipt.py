"""The receipt core: its fields and the genesis link of every chain."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final

from crypto._canonical import canonical_core_json
from crypto._errors import CanonicalizationError, ReceiptFieldError

# previous_receipt_hash of a customer's first receipt.
GENESIS_HASH: Final = "sha256:" + "0" * 64

# The signed, hashed part of a receipt, in documentation order (JCS sorts keys,
# so this order is for people, not for the bytes).
RECEIPT_CORE_FIELDS: Final = (
    "receipt_id",
    "customer_id",
    "seq",
    "idempotency_key",
    "entitlement_id",
    "amount_minor",
    "currency",
    "usage_description",
    "event_timestamp",
    "recorded_at",
    "balance_after_minor",
    "quota_remaining_minor",
    "previous_receipt_hash",
)

_INT_FIELDS: Final = frozenset({"seq", "amount_minor", "balance_after_minor"})
_NULLABLE_INT_FIELDS: Final = frozenset({"quota_remaining_minor"})
_TIMESTAMP_FIELDS: Final = frozenset({"event_timestamp", "recorded_at"})
_HASH_FIELDS: Final = frozenset({"previous_receipt_hash"})

# RFC 8785 numbers are IEEE doubles: integers must have an exact double.
json_integer_abs_max: Final = 2**53 - 1

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_HASH = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)


def receipt_core(receipt: Mapping[str, object]) -> dict[str, object]:
    """Exactly the core fields of `receipt` (extra fields ignored); KeyError if one is missing."""
    return {name: receipt[name] for name in RECEIPT_CORE_FIELDS}


def check_core(core: Mapping[str, object]) -> None:
    """Raise unless every core field has its type and format (see DESIGN.md "Receipts")."""
    for name in RECEIPT_CORE_FIELDS:
        value = core[name]
        if name in _INT_FIELDS or (name in _NULLABLE_INT_FIELDS and value is not None):
            if type(value) is not int:
                raise ReceiptFieldError(f"{name} must be an integer, got {type(value).__name__}")
            if not -json_integer_abs_max <= value <= json_integer_abs_max:
                raise CanonicalizationError(f"{name} = {value} is not below 2**53 in magnitude")
        elif name not in _NULLABLE_INT_FIELDS:
            if type(value) is not str:
                raise ReceiptFieldError(f"{name} must be a string, got {type(value).__name__}")
            if name in _TIMESTAMP_FIELDS and _RFC3339.fullmatch(value) is None:
                raise ReceiptFieldError(f"{name} must be an RFC 3339 timestamp, got {value!r}")
            if name in _HASH_FIELDS and _HASH.fullmatch(value) is None:
                raise ReceiptFieldError(f"{name} must be 'sha256:' + 64 hex digits")
            if name == "currency" and _CURRENCY.fullmatch(value) is None:
                raise ReceiptFieldError(f"currency must be an ISO 4217 code, got {value!r}")


def core_bytes(receipt: Mapping[str, object]) -> bytes:
    """JCS of the core fields of `receipt`, after checking them."""
    core = receipt_core(receipt)
    check_core(core)
    return canonical_core_json(core)  # type: ignore[arg-type]  # shape checked just above


def hash_of_core_bytes(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def receipt_hash(core: Mapping[str, object]) -> str:
    """ "sha256:" + hex(SHA-256(JCS(core))) over exactly RECEIPT_CORE_FIELDS."""
    return hash_of_core_bytes(core_bytes(core))


def is_receipt_hash(value: object) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None
