"""Dispute submissions held in this process only: for a store whose adapter
has no dispute table yet (Spanner, for now), and the fake for unit tests.

Not durable: after a restart a replayed `charge.dispute.created` is looked up
at Stripe again, where the dispute's own state (already submitted, under
review) and the submission's idempotency key still stop a second answer; the
composition root says so loudly at start-up."""

from __future__ import annotations

import dataclasses
import threading

from ledger._locks import locked
from ledger.errors import NotFound, check_invariant
from ledger.model import DisputeSubmission


class MemoryDisputes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dispute: dict[str, DisputeSubmission] = {}

    def dispute_submission(self, dispute_id: str) -> DisputeSubmission | None:
        with locked(self._lock, "memory disputes"):
            return self._by_dispute.get(dispute_id)

    def record_dispute_file(self, submission: DisputeSubmission) -> DisputeSubmission:
        check_invariant(not submission.is_submitted, "a new dispute record is not submitted yet")
        check_invariant(submission.receipt_count >= 0, "receipt_count must not be negative")
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
