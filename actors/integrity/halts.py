"""Integrity halts: a failure found by an audit becomes an incident recorded
in the ledger of record, which every gateway on the store reads (readiness,
every second) and which only an operator clears.

The record carries where the damage is (customer, receipt, detail) for
operators; the public answer is the incident id alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import NamedTuple

import structlog

from ledger import HaltIncident, IntegrityHalts

__all__ = ["HaltRecorder", "IntegrityFailure", "public_halt_reason"]

log = structlog.get_logger(__name__)


class IntegrityFailure(NamedTuple):
    """What an audit found broken.

    Fields:
        reason: a stable code (chain_broken, head_hash_mismatch, log_damaged...).
        detail: in words, what is wrong and where (operators only).
        customer_id: the customer whose ledger is broken, if one is.
        receipt_id: the receipt at fault, if one is named.
    """

    reason: str
    detail: str
    customer_id: str | None = None
    receipt_id: str | None = None


def public_halt_reason(incident: HaltIncident) -> str:
    """What anyone may read: that charges are halted, and the incident id to
    quote to support. Never the customer or receipt (another customer's)."""
    return f"integrity halt: incident {incident.incident_id}"


class HaltRecorder:
    """Turns failures into recorded incidents (one open incident per distinct
    failure: an audit repeating itself does not open new ones)."""

    def __init__(
        self,
        halts: IntegrityHalts,
        now_rfc3339: Callable[[], str],
        on_recorded: Callable[[HaltIncident], None] = lambda incident: None,
    ) -> None:
        self._halts = halts
        self._now = now_rfc3339
        self._on_recorded = on_recorded

    def record(self, failure: IntegrityFailure, source: str) -> HaltIncident:
        """Record the failure durably (LedgerError if the store refuses), then
        tell this process at once instead of at its next readiness refresh."""
        incident = self._halts.record_halt(
            HaltIncident(
                incident_id="inc_" + secrets.token_hex(8),
                opened_at=self._now(),
                reason=failure.reason,
                detail=failure.detail,
                source=source,
                customer_id=failure.customer_id,
                receipt_id=failure.receipt_id,
            )
        )
        log.critical(
            "billing.integrity_halt",
            incident_id=incident.incident_id,
            reason=failure.reason,
            source=source,
            customer_id=failure.customer_id,
            receipt_id=failure.receipt_id,
            detail=failure.detail,
        )
        self._on_recorded(incident)
        return incident
