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
    "RECEIPT_FIELDS",
    "receipt_from_row",
    "receipt_from_text_fields",
    "receipt_row",
    "receipt_text_fields",
]

# Column order of the Spanner Receipts table and of rows read from it.
# (The receipt log's `log_index` is not in the Google Cloud copies yet.)
RECEIPT_FIELDS: Final[tuple[str, ...]] = tuple(
    f.name for f in fields(StoredReceipt) if f.name != "log_index"
)
INT_FIELDS: Final = frozenset({"seq", "amount_minor", "balance_after_minor"})
_TEXT_FIELDS: Final = tuple(n for n in RECEIPT_FIELDS if n != "receipt_json")


def receipt_row(receipt: StoredReceipt) -> tuple[Any, ...]:
    return tuple(getattr(receipt, name) for name in RECEIPT_FIELDS)


def receipt_from_row(row: Sequence[Any]) -> StoredReceipt:
    """From values in RECEIPT_FIELDS order (Spanner rows, Firestore documents)."""
    check_invariant(len(row) == len(RECEIPT_FIELDS), "receipt row has the wrong width")
    values: dict[str, Any] = {}
    for name, value in zip(RECEIPT_FIELDS, row, strict=True):
        if name in INT_FIELDS:
            check_invariant(
                isinstance(value, int) and not isinstance(value, bool),
                f"receipt field {name} is not an integer",
            )
        elif name == "receipt_json":
            check_invariant(isinstance(value, bytes), "receipt_json is not bytes")
        else:
            check_invariant(isinstance(value, str), f"receipt field {name} is not a string")
        values[name] = value
    return StoredReceipt(**values)


def receipt_text_fields(receipt: StoredReceipt) -> dict[str, str]:
    """Every index field as a string (object metadata, message attributes);
    the receipt JSON itself travels as the object or message body."""
    return {name: str(getattr(receipt, name)) for name in _TEXT_FIELDS}


def receipt_from_text_fields(fields_: Mapping[str, str], receipt_json: bytes) -> StoredReceipt:
    missing = [name for name in _TEXT_FIELDS if name not in fields_]
    check_invariant(not missing, f"stored receipt lacks fields {missing}")
    row: list[Any] = []
    for name in RECEIPT_FIELDS:
        if name == "receipt_json":
            row.append(receipt_json)
        elif name in INT_FIELDS:
            text = fields_[name]
            check_invariant(text.lstrip("-").isdigit(), f"receipt field {name} is not an integer")
            row.append(int(text))
        else:
            row.append(fields_[name])
    return receipt_from_row(row)
