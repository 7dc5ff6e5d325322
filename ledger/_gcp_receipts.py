"""StoredReceipt <-> rows, documents, object metadata and message attributes.

One codec for every Google Cloud adapter, so a field added to StoredReceipt
is mapped in one place. Values read back are checked, not trusted: a wrong
type from a store is an InvariantViolation, never a silently wrong receipt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, Final

from ledger.errors import check_invariant
from ledger.model import StoredReceipt

__all__ = [
    "INT_FIELDS",
    "OPTIONAL_INT_FIELDS",
    "RECEIPT_FIELDS",
    "receipt_from_fields",
    "receipt_from_row",
    "receipt_from_text_fields",
    "receipt_row",
    "receipt_text_fields",
]

# Column order of the Spanner Receipts table and of rows read from it.
RECEIPT_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(StoredReceipt))
INT_FIELDS: Final = frozenset({"seq", "amount_minor", "balance_after_minor"})
# Nullable integers, absent from copies written before the field existed
# (a receipt committed before the receipt log has no leaf index).
OPTIONAL_INT_FIELDS: Final = frozenset({"log_index"})
_TEXT_FIELDS: Final = tuple(n for n in RECEIPT_FIELDS if n != "receipt_json")


def receipt_row(receipt: StoredReceipt) -> tuple[Any, ...]:
    return tuple(getattr(receipt, name) for name in RECEIPT_FIELDS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_field(name: str, value: Any) -> None:
    if name in INT_FIELDS:
        check_invariant(_is_int(value), f"receipt field {name} is not an integer")
    elif name in OPTIONAL_INT_FIELDS:
        check_invariant(
            value is None or (_is_int(value) and value >= 0),
            f"receipt field {name} is neither empty nor a non-negative integer",
        )
    elif name == "receipt_json":
        check_invariant(isinstance(value, bytes), "receipt_json is not bytes")
    else:
        check_invariant(isinstance(value, str), f"receipt field {name} is not a string")


def _check_present(names: Sequence[str], fields_: Mapping[str, Any]) -> None:
    missing = [name for name in names if name not in fields_ and name not in OPTIONAL_INT_FIELDS]
    check_invariant(not missing, f"stored receipt lacks fields {missing}")


def receipt_from_row(row: Sequence[Any]) -> StoredReceipt:
    """From values in RECEIPT_FIELDS order (Spanner rows)."""
    check_invariant(len(row) == len(RECEIPT_FIELDS), "receipt row has the wrong width")
    values: dict[str, Any] = {}
    for name, value in zip(RECEIPT_FIELDS, row, strict=True):
        _check_field(name, value)
        values[name] = value
    return StoredReceipt(**values)


def receipt_from_fields(fields_: Mapping[str, Any]) -> StoredReceipt:
    """From native values by name (Firestore documents, outbox payloads); an
    optional field that is absent was written before it existed: None."""
    _check_present(RECEIPT_FIELDS, fields_)
    return receipt_from_row([fields_.get(name) for name in RECEIPT_FIELDS])


def receipt_text_fields(receipt: StoredReceipt) -> dict[str, str]:
    """Every index field as a string (object metadata, message attributes);
    the receipt JSON itself travels as the object or message body. An empty
    optional field is left out (absent reads back as None)."""
    return {
        name: str(value) for name in _TEXT_FIELDS if (value := getattr(receipt, name)) is not None
    }


def _int_text(name: str, text: str) -> int:
    check_invariant(text.lstrip("-").isdigit(), f"receipt field {name} is not an integer")
    return int(text)


def receipt_from_text_fields(fields_: Mapping[str, str], receipt_json: bytes) -> StoredReceipt:
    _check_present(_TEXT_FIELDS, fields_)
    row: list[Any] = []
    for name in RECEIPT_FIELDS:
        if name == "receipt_json":
            row.append(receipt_json)
        elif name in INT_FIELDS:
            row.append(_int_text(name, fields_[name]))
        elif name in OPTIONAL_INT_FIELDS:
            text = fields_.get(name, "")
            row.append(_int_text(name, text) if text else None)
        else:
            row.append(fields_[name])
    return receipt_from_row(row)
