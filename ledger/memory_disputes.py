"""Dispute submissions held in this process only: the fake for unit tests
(the stores of record, SQLite and Spanner, keep them in a table)."""

from __future__ import annotations

import dataclasses
import threading

from ledger._locks import locked
from ledger.errors import NotFound
from ledger.model import DisputeSubmission


class MemoryDisputes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dispute: dict[str, DisputeSubmission] = {}

    def dispute_submission(self, dispute_id: str) -> DisputeSubmission | None:
        with locked(self._lock, "memory disputes"):
            return self._by_dispute.get(dispute_id)

    def record_dispute_file(self, submission: DisputeSubmission) -> DisputeSubmission:
        submission.check_new()
        with locked(self._lock, "memory disputes"):
            return self._by_dispute.setdefault(submission.dispute_id, submission)

    def mark_dispute_submitted(
        self, dispute_id: str, submitted_at: str, dispute_status: str
    ) -> DisputeSubmission:
        with locked(self._lock, "memory disputes"):
            stored = self._by_dispute.get(dispute_id)
            if stored is None:
                raise NotFound(f"dispute {dispute_id} has no recorded evidence file")
            if not stored.is_submitted:
                stored = dataclasses.replace(
                    stored, submitted_at=submitted_at, dispute_status=dispute_status
                )
                self._by_dispute[dispute_id] = stored
            return stored
