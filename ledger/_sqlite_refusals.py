"""Refused charges kept under their idempotency keys, on SQLite (see
ledger.model.StoredRefusal). A customer's key names a receipt or a refusal,
never both: refusals are checked against receipts here, and receipts
against refusals by `refused_keys` in the receipts' commit."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Final

from ledger._refusal_rules import refusal_key_conflicts
from ledger._sqlite_base import SqliteBase, transaction
from ledger._sqlite_rows import Row, execute_values, record_params
from ledger.errors import ChainConflict
from ledger.limits import sqlite_refusal_pairs_per_query_max
from ledger.model import StoredRefusal

_COLUMNS: Final = (
    "customer_id, idempotency_key, request_fingerprint, code, message, param, recorded_at"
)
_T_COLUMNS: Final = ", ".join(f"t.{name.strip()}" for name in _COLUMNS.split(","))

Pair = tuple[str, str]


def _select_pairs(
    conn: sqlite3.Connection, columns: str, table: str, pairs: Sequence[Pair]
) -> list[Row]:
    rows: list[Row] = []
    for start in range(0, len(pairs), sqlite_refusal_pairs_per_query_max):
        chunk = pairs[start : start + sqlite_refusal_pairs_per_query_max]
        marks = ", ".join(["(?, ?)"] * len(chunk))
        # A join from the pairs, so each is one lookup in the (customer,
        # key) index; `IN (VALUES ...)` on a row value scanned the table.
        rows.extend(conn.execute(
            f"SELECT {columns} FROM (VALUES {marks}) AS v CROSS JOIN {table} AS t "
            "ON t.customer_id = v.column1 AND t.idempotency_key = v.column2",
            [value for pair in chunk for value in pair],
        ).fetchall())
    return rows


def _taken(conn: sqlite3.Connection, table: str, pairs: Sequence[Pair]) -> set[Pair]:
    rows = _select_pairs(conn, "t.customer_id, t.idempotency_key", table, pairs)
    return {(str(cid), str(key)) for cid, key in rows}


def refused_keys(conn: sqlite3.Connection, pairs: Sequence[Pair]) -> set[Pair]:
    """Which (customer, key) pairs a stored refusal holds: the receipts'
    commit refuses those keys as it refuses a receipt's key used twice."""
    return _taken(conn, "idempotency_refusals", pairs)


def _conflicts(conn: sqlite3.Connection, refusals: Sequence[StoredRefusal]) -> dict[str, str]:
    pairs = [(r.customer_id, r.idempotency_key) for r in refusals]
    used = _taken(conn, "receipts", pairs) | refused_keys(conn, pairs)
    return refusal_key_conflicts(refusals, used)


class SqliteRefusals(SqliteBase):
    def commit_refusals(self, refusals: Sequence[StoredRefusal]) -> None:
        if not refusals:
            return
        with self._writing() as conn, transaction(conn):
            reasons = _conflicts(conn, refusals)
            if reasons:  # raised inside: the transaction rolls back
                raise ChainConflict(reasons, reasons)
            execute_values(
                conn, f"INSERT INTO idempotency_refusals ({_COLUMNS})",
                [record_params(refusal) for refusal in refusals],
            )

    def refusals_by_keys(self, customer_id: str, keys: Iterable[str]) -> list[StoredRefusal]:
        pairs = [(customer_id, key) for key in keys]
        if not pairs:
            return []
        with self._reading() as conn:
            rows = _select_pairs(conn, _T_COLUMNS, "idempotency_refusals", pairs)
        return [StoredRefusal(*row) for row in rows]
