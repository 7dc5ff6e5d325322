"""Dispute submissions on SQLite (the DisputeSubmissions port): one row per
Stripe dispute, written when the evidence file is uploaded and updated in
place when Stripe takes the evidence."""

from __future__ import annotations

from typing import Final

from ledger._sqlite_base import SqliteBase, transaction
from ledger._sqlite_rows import Row, placeholders, record_params
from ledger.errors import NotFound
from ledger.model import DisputeSubmission

_COLUMNS: Final = (
    "dispute_id, invoice_id, customer_id, file_id, receipt_count, recorded_at, "
    "submitted_at, dispute_status"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM dispute_submissions WHERE dispute_id = ?"


def _submission(row: Row) -> DisputeSubmission:
    return DisputeSubmission(*row)


class SqliteDisputes(SqliteBase):
    def dispute_submission(self, dispute_id: str) -> DisputeSubmission | None:
        row = self._one(_SELECT, (dispute_id,))
        return None if row is None else _submission(row)

    def record_dispute_file(self, submission: DisputeSubmission) -> DisputeSubmission:
        submission.check_new()
        with self._writing() as conn, transaction(conn):
            conn.execute(
                f"INSERT INTO dispute_submissions ({_COLUMNS}) VALUES ({placeholders(_COLUMNS)}) "
                "ON CONFLICT (dispute_id) DO NOTHING",
                record_params(submission),  # the dataclass's fields are in column order
            )
            row = conn.execute(_SELECT, (submission.dispute_id,)).fetchone()
        return _submission(row)

    def mark_dispute_submitted(
        self, dispute_id: str, submitted_at: str, dispute_status: str
    ) -> DisputeSubmission:
        with self._writing() as conn, transaction(conn):
            conn.execute(
                "UPDATE dispute_submissions SET submitted_at = ?, dispute_status = ? "
                "WHERE dispute_id = ? AND submitted_at IS NULL",
                (submitted_at, dispute_status, dispute_id),
            )
            row = conn.execute(_SELECT, (dispute_id,)).fetchone()
        if row is None:
            raise NotFound(f"dispute {dispute_id} has no recorded evidence file")
        return _submission(row)
