"""The plumbing every Spanner store module shares: one operation = one call
through `_call` (transport failures become StoreUnavailable, the emulator's
disguised aborts run again), read-write work through `_transact`, reads
through a single-use snapshot in `_query`.

The ledger, its integrity halts, dispute submissions and the web app's
tables are separate modules (`ledger.spanner`, `_spanner_halts`,
`_spanner_disputes`, `_spanner_web`) on this base,
as the SQLite adapter is split on `_sqlite_base`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from google.api_core import exceptions as gexc
from google.cloud.spanner_v1 import param_types

from ledger import limits
from ledger._gcp_client import TRANSIENT_ERRORS, Lifecycle
from ledger._spanner_codec import request_timeout_s
from ledger.errors import StoreUnavailable, check_invariant
from ledger.limits import receipts_page_max
from ledger.model import ApiKey

__all__ = [
    "API_KEY_COLS",
    "INT",
    "STR",
    "SpannerBase",
    "api_key_from_row",
    "one",
    "page_limit",
    "transaction_timeout_s",
]

T = TypeVar("T")

# Total time a transaction may spend retrying ABORTED before giving up.
transaction_timeout_s: Final = 60.0
_DISGUISED_ABORTS: Final = (
    "Transaction not found",
    "Invalid transaction ID",
    "after it has been committed or rolledback",
)
STR: Final = param_types.STRING
INT: Final = param_types.INT64
API_KEY_COLS: Final = ("key_id", "key_hash", "customer_id", "created_at", "revoked_at")


def _is_disguised_abort(error: Exception) -> bool:
    return any(text in str(error) for text in _DISGUISED_ABORTS)


def api_key_from_row(row: Sequence[Any]) -> ApiKey:
    return ApiKey(*row)


def one(rows: list[T]) -> T | None:
    check_invariant(len(rows) <= 1, "a unique lookup returned several rows")
    return rows[0] if rows else None


def page_limit(limit: int) -> int:
    return max(0, min(int(limit), receipts_page_max))


class SpannerBase:
    """A `google.cloud.spanner_v1.Database` and the way every operation on it
    is run. Thread-safe: the client's Database pools sessions across threads."""

    def __init__(self, database: Any, *, client: Any | None = None) -> None:
        self._database = database
        self._client = client
        self._life = Lifecycle("Spanner ledger")

    def _call(self, action: Callable[[], T]) -> T:
        """Run one store operation, mapping transport failures to StoreUnavailable.

        The emulator aborts a transaction that overlaps another one (another
        process's, or a snapshot's) but reports it as NOT_FOUND "Transaction
        not found" or FAILED_PRECONDITION "Invalid transaction ID" instead of
        ABORTED, which the client would retry: those run the whole operation
        again (a transaction re-reads under its locks, so it is safe), boundedly.
        """
        self._life.check_open()
        for attempt in range(1, limits.spanner_disguised_abort_retries_max + 1):
            try:
                return self._call_once(action)
            except (gexc.NotFound, gexc.FailedPrecondition) as error:
                if not _is_disguised_abort(error):
                    raise
                if attempt == limits.spanner_disguised_abort_retries_max:
                    raise StoreUnavailable(f"spanner: {error}") from error
                # Full jitter: overlapping writers must stop colliding.
                time.sleep(random.uniform(0.0, min(0.25, 0.005 * 2**attempt)))
        raise AssertionError("unreachable")

    def _call_once(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except TRANSIENT_ERRORS as error:
            raise StoreUnavailable(f"spanner: {error}") from error

    def _transact(self, work: Callable[[Any], T]) -> T:
        def run() -> T:
            result: T = self._database.run_in_transaction(work, timeout_secs=transaction_timeout_s)
            return result

        return self._call(run)

    def _query(
        self, sql: str, params: dict[str, Any] | None = None, types: dict[str, Any] | None = None
    ) -> list[list[Any]]:
        def run() -> list[list[Any]]:
            with self._database.snapshot() as snapshot:
                return [
                    list(row)
                    for row in snapshot.execute_sql(
                        sql, params=params, param_types=types, timeout=request_timeout_s
                    )
                ]

        return self._call(run)

    def _update_count(self, sql: str, params: dict[str, Any], types: dict[str, Any]) -> int:
        def work(txn: Any) -> int:
            count: int = txn.execute_update(
                sql, params=params, param_types=types, timeout=request_timeout_s
            )
            return count

        return self._transact(work)

    def _revoke_once(
        self, table: str, id_column: str, row_id: str, customer_id: str, revoked_at: str
    ) -> int:
        """Revoke a customer's row (an API key, a share link): the first
        revocation is the one that counts. The rows matched: 0 when the id is
        not the customer's."""
        return self._update_count(
            f"UPDATE {table} SET revoked_at = COALESCE(revoked_at, @t) "
            f"WHERE {id_column} = @i AND customer_id = @c",
            {"t": revoked_at, "i": row_id, "c": customer_id},
            {"t": STR, "i": STR, "c": STR},
        )
