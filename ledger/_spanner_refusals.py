"""Refused charges kept under their idempotency keys, on Cloud Spanner (see
ledger.model.StoredRefusal): the `IdempotencyRefusals` table, keyed by
(customer, key). A customer's key names a receipt or a refusal, never both:
each side's transaction reads the other's keys under its locks, so two
writers of the same key conflict and Spanner aborts one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Final

from ledger._refusal_rules import refusal_key_conflicts
from ledger._spanner_base import SpannerBase
from ledger._spanner_codec import KeySet, request_timeout_s
from ledger.errors import ChainConflict, check_invariant
from ledger.limits import commit_batch_receipts_max
from ledger.model import StoredRefusal

__all__ = ["SpannerRefusals", "refused_keys"]

_TABLE: Final = "IdempotencyRefusals"
_COLS: Final = tuple(field.name for field in dataclasses.fields(StoredRefusal))

Pair = tuple[str, str]


def _read_pairs(reader: Any, table: str, columns: Sequence[str], pairs: Sequence[Pair],
                index: str = "") -> list[list[Any]]:
    if not pairs:
        return []
    return [
        list(row)
        for row in reader.read(
            table, columns, KeySet(keys=[list(pair) for pair in pairs]),
            index=index, timeout=request_timeout_s,
        )
    ]


def refused_keys(txn: Any, pairs: Sequence[Pair]) -> set[Pair]:
    """Which (customer, key) pairs a stored refusal holds, read in `txn`."""
    rows = _read_pairs(txn, _TABLE, ("customer_id", "idempotency_key"), pairs)
    return {(str(cid), str(key)) for cid, key in rows}


def _conflicts(txn: Any, refusals: Sequence[StoredRefusal]) -> dict[str, str]:
    pairs = [(r.customer_id, r.idempotency_key) for r in refusals]
    receipt_rows = _read_pairs(
        txn, "Receipts", ("customer_id", "idempotency_key"), pairs, index="ReceiptsByKey"
    )
    used = refused_keys(txn, pairs) | {(str(cid), str(key)) for cid, key in receipt_rows}
    return refusal_key_conflicts(refusals, used)


class SpannerRefusals(SpannerBase):
    def commit_refusals(self, refusals: Sequence[StoredRefusal]) -> None:
        if not refusals:
            return
        check_invariant(
            len(refusals) <= commit_batch_receipts_max,
            f"{len(refusals)} refusals exceed a commit's {commit_batch_receipts_max}",
        )

        def work(txn: Any) -> None:
            reasons = _conflicts(txn, refusals)
            if reasons:  # raised inside: the transaction rolls back
                raise ChainConflict(reasons, reasons)
            txn.insert(_TABLE, _COLS, [dataclasses.astuple(r) for r in refusals])

        self._transact(work)

    def refusals_by_keys(self, customer_id: str, keys: Iterable[str]) -> list[StoredRefusal]:
        pairs = [(customer_id, key) for key in keys]
        if not pairs:
            return []

        def run() -> list[list[Any]]:
            with self._database.snapshot() as snapshot:
                return _read_pairs(snapshot, _TABLE, _COLS, pairs)

        return [StoredRefusal(*row) for row in self._call(run)]
