"""Rows <-> model records for the SQLite adapter.

Column lists are in dataclass field order so a row unpacks straight into its
record (`StoredReceipt(*row)`), which matters on the read path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from ledger.errors import check_invariant
from ledger.model import (
    ApiKey,
    Customer,
    Entitlement,
    OutboxMessage,
    SigningKeyRecord,
    StoredReceipt,
    WebhookEvent,
)

Row = tuple[Any, ...]

CUSTOMER_COLUMNS: Final = "customer_id, email, currency, created_at, stripe_customer_id"
API_KEY_COLUMNS: Final = "key_id, key_hash, customer_id, created_at, revoked_at"
ENTITLEMENT_COLUMNS: Final = (
    "customer_id, entitlement_id, quota_minor, policy, status, updated_at, plan, max_bots, "
    "period_start, period_end, trial_end, cancel_at_period_end, used_minor"
)
RECEIPT_COLUMNS: Final = (
    "customer_id, seq, receipt_id, idempotency_key, request_fingerprint, entitlement_id, "
    "amount_minor, currency, receipt_hash, previous_receipt_hash, balance_after_minor, "
    "recorded_at, receipt_json, log_index"
)
SIGNING_KEY_COLUMNS: Final = "kid, alg, public_jwk_json, created_at"
WEBHOOK_COLUMNS: Final = (
    "event_id, event_type, payload, received_at, processed_at, attempts, next_attempt_at, "
    "last_error"
)
OUTBOX_COLUMNS: Final = (
    "message_id, topic, ordering_key, payload, created_at, attempts, next_attempt_at, last_error"
)


def placeholders(columns: str, extra: int = 0) -> str:
    return ", ".join("?" * (columns.count(",") + 1 + extra))


def _int(value: object, what: str) -> int:
    # bool is an int subclass; a float would be a money bug. Refuse both.
    check_invariant(type(value) is int, f"{what} must be an int, got {type(value).__name__}")
    return value  # type: ignore[return-value]


def receipt_params(receipt: StoredReceipt) -> Row:
    return (
        receipt.customer_id,
        _int(receipt.seq, "seq"),
        receipt.receipt_id,
        receipt.idempotency_key,
        receipt.request_fingerprint,
        receipt.entitlement_id,
        _int(receipt.amount_minor, "amount_minor"),
        receipt.currency,
        receipt.receipt_hash,
        receipt.previous_receipt_hash,
        _int(receipt.balance_after_minor, "balance_after_minor"),
        receipt.recorded_at,
        bytes(receipt.receipt_json),
        receipt.log_index,
    )


def receipt_from_row(row: Row) -> StoredReceipt:
    return StoredReceipt(*row)


def customer_from_row(row: Row) -> Customer:
    return Customer(*row)


def api_key_from_row(row: Row) -> ApiKey:
    return ApiKey(*row)


def entitlement_params(entitlement: Entitlement, used_minor: int) -> Row:
    quota = entitlement.quota_minor
    return (
        entitlement.customer_id,
        entitlement.entitlement_id,
        None if quota is None else _int(quota, "quota_minor"),
        entitlement.policy,
        entitlement.status,
        entitlement.updated_at,
        entitlement.plan,
        entitlement.max_bots,
        entitlement.period_start,
        entitlement.period_end,
        entitlement.trial_end,
        1 if entitlement.cancel_at_period_end else 0,
        _int(used_minor, "used_minor"),
    )


def entitlement_from_row(row: Row) -> Entitlement:
    values = list(row)
    values[11] = bool(values[11])  # cancel_at_period_end
    return Entitlement(*values)


def signing_key_from_row(row: Row) -> SigningKeyRecord:
    return SigningKeyRecord(*row)


def record_params(record: object) -> Row:
    """A record's fields in declaration order: the column order of its table."""
    return tuple(getattr(record, name) for name in record.__slots__)  # type: ignore[attr-defined]


def webhook_params(event: WebhookEvent) -> Row:
    """Columns plus `due_at`: when the event may be (re)tried."""
    _int(event.attempts, "attempts")
    return (*record_params(event), event.next_attempt_at or event.received_at)


def webhook_from_row(row: Row) -> WebhookEvent:
    return WebhookEvent(*row)


def outbox_params(message: OutboxMessage) -> Row:
    """Columns plus `due_at`: when the message may be (re)delivered."""
    _int(message.attempts, "attempts")
    return (*record_params(message), message.next_attempt_at or message.created_at)


def outbox_from_row(row: Row) -> OutboxMessage:
    return OutboxMessage(*row)


def execute_values(
    conn: sqlite3.Connection, head: str, rows: Sequence[Row], tail: str = ""
) -> int:
    """Run `head VALUES (?, ..), (?, ..) tail` over `rows` in as few statements
    as SQLite's variable limit allows; returns the number of rows changed.

    Why not `executemany`: it steps once per row, and each step gives up the
    GIL and takes it back. Under load every take-back can wait a whole switch
    interval behind the other threads, which made a 13-receipt commit take
    ~20 ms instead of ~5 ms. One statement per chunk is one wait per chunk.
    """
    if not rows:
        return 0
    width = len(rows[0])
    row_marks = "(" + ", ".join("?" * width) + ")"
    per_statement = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    changed = 0
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = f"{head} VALUES {', '.join([row_marks] * len(chunk))} {tail}"
        changed += conn.execute(sql, [value for row in chunk for value in row]).rowcount
    return changed
