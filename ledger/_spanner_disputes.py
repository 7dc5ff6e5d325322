"""Dispute submissions on Cloud Spanner (the DisputeSubmissions port): one
row per Stripe dispute in `DisputeSubmissions`, as the SQLite table.

Each call is one read-write transaction that reads the dispute's row before
writing it: two gateways answering the same dispute at once conflict on that
read, Spanner aborts one, and its retry finds the other's row (the first
evidence file, or the submission) and goes on with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from ledger._spanner_base import SpannerBase, one
from ledger._spanner_codec import KeySet, request_timeout_s
from ledger.errors import NotFound
from ledger.model import DisputeSubmission

__all__ = ["SpannerDisputes"]

_TABLE: Final = "DisputeSubmissions"
_COLS: Final = tuple(field.name for field in dataclasses.fields(DisputeSubmission))


def _submission(row: Sequence[Any]) -> DisputeSubmission:
    return DisputeSubmission(*row)


def _row(submission: DisputeSubmission) -> tuple[Any, ...]:
    return tuple(getattr(submission, name) for name in _COLS)


def _read(reader: Any, dispute_id: str) -> DisputeSubmission | None:
    rows = reader.read(_TABLE, _COLS, KeySet(keys=[[dispute_id]]), timeout=request_timeout_s)
    found = one(list(rows))
    return None if found is None else _submission(found)


class SpannerDisputes(SpannerBase):
    def dispute_submission(self, dispute_id: str) -> DisputeSubmission | None:
        def run() -> DisputeSubmission | None:
            with self._database.snapshot() as snapshot:
                return _read(snapshot, dispute_id)

        return self._call(run)

    def record_dispute_file(self, submission: DisputeSubmission) -> DisputeSubmission:
        submission.check_new()

        def work(txn: Any) -> DisputeSubmission:
            stored = _read(txn, submission.dispute_id)
            if stored is not None:  # the first uploaded file is the one kept
                return stored
            txn.insert(_TABLE, _COLS, [_row(submission)])
            return submission

        return self._transact(work)

    def mark_dispute_submitted(
        self, dispute_id: str, submitted_at: str, dispute_status: str
    ) -> DisputeSubmission:
        def work(txn: Any) -> DisputeSubmission | None:
            stored = _read(txn, dispute_id)
            if stored is None or stored.is_submitted:  # the first submission counts
                return stored
            done = dataclasses.replace(
                stored, submitted_at=submitted_at, dispute_status=dispute_status
            )
            txn.update(_TABLE, _COLS, [_row(done)])
            return done

        result = self._transact(work)
        if result is None:
            raise NotFound(f"dispute {dispute_id} has no recorded evidence file")
        return result
