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

# RFC 8785 numbers are IEEE doubles: integers must have an exact double.
json_integer_abs_max: Final = 2**53 - 1

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_HASH = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)

# The string fields with a format: the pattern, and what a value that misses it is told.
_PATTERNS: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "event_timestamp": (_RFC3339, "must be an RFC 3339 timestamp, got {!r}"),
    "recorded_at": (_RFC3339, "must be an RFC 3339 timestamp, got {!r}"),
    "previous_receipt_hash": (_HASH, "must be 'sha256:' + 64 hex digits"),
    "currency": (_CURRENCY, "must be an ISO 4217 code, got {!r}"),
}
# (name, integer, may be null, pattern, told), in documentation order: one
# pass, where four set lookups per field cost ~1 of ~2 us per receipt verified.
_CORE_FORMS: Final = tuple(
    (
        name,
        name in _INT_FIELDS or name in _NULLABLE_INT_FIELDS,
        name in _NULLABLE_INT_FIELDS,
        *_PATTERNS.get(name, (None, "")),
    )
    for name in RECEIPT_CORE_FIELDS
)


def receipt_core(receipt: Mapping[str, object]) -> dict[str, object]:
    """Exactly the core fields of `receipt` (extra fields ignored); KeyError if one is missing."""
    return {name: receipt[name] for name in RECEIPT_CORE_FIELDS}


def check_core(core: Mapping[str, object]) -> None:
    """Raise unless every core field has its type and format (see DESIGN.md "Receipts")."""
    for name, integer, nullable, pattern, told in _CORE_FORMS:
        value = core[name]
        if integer:
            if value is None and nullable:
                continue
            if type(value) is not int:
                raise ReceiptFieldError(f"{name} must be an integer, got {type(value).__name__}")
            if not -json_integer_abs_max <= value <= json_integer_abs_max:
                raise CanonicalizationError(f"{name} = {value} is not below 2**53 in magnitude")
        elif type(value) is not str:
            raise ReceiptFieldError(f"{name} must be a string, got {type(value).__name__}")
        elif pattern is not None and pattern.fullmatch(value) is None:
            raise ReceiptFieldError(f"{name} {told.format(value)}")


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
