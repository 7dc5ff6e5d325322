"""A receipt on its way from an account actor through signing to the store.

It is created by the actor (chain position decided), signed by the signer
pool, committed by the ledger writer, and settled exactly once: its ticket
and those of the concurrent duplicates of its idempotency key, which wait on
the same `PendingReceipt`, get the answer (see actors.tickets).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.charges import ChargeOutcome
from actors.tickets import Ticket
from crypto import sealed_document
from ledger import RequestRecord, StoredReceipt
from ledger.webhook_store import OutboundEvent


@dataclass(slots=True)
class PendingReceipt:
    customer_id: str
    seq: int
    idempotency_key: str
    fingerprint: str
    entitlement_id: str
    amount_minor: int
    currency: str
    balance_after_minor: int
    recorded_at: str
    receipt_id: str
    receipt_hash: str
    previous_receipt_hash: str
    core: dict[str, Any]
    canonical_core: bytes
    ticket: Ticket  # the charge that made this receipt
    receipt: StoredReceipt | None = None
    outcome: ChargeOutcome | None = None
    request: RequestRecord | None = None  # committed with the receipt
    events: tuple[OutboundEvent, ...] = ()  # threshold alerts, committed with it too
    _waiters: list[Ticket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Called once, after the first settle (the pipeline's count of what is
    # still on its way per customer; see Pipeline.barrier).
    on_settled: Callable[[PendingReceipt], None] | None = None

    def seal(self, signature: str | None) -> None:
        """The stored receipt: the core, its hash, and (receipt mode) its own
        detached JWS; without one it is proved by its commit's checkpoint."""
        self.receipt = StoredReceipt(
            customer_id=self.customer_id,
            seq=self.seq,
            receipt_id=self.receipt_id,
            idempotency_key=self.idempotency_key,
            request_fingerprint=self.fingerprint,
            entitlement_id=self.entitlement_id,
            amount_minor=self.amount_minor,
            currency=self.currency,
            receipt_hash=self.receipt_hash,
            previous_receipt_hash=self.previous_receipt_hash,
            balance_after_minor=self.balance_after_minor,
            recorded_at=self.recorded_at,
            receipt_json=sealed_document(self.core, self.receipt_hash, signature),
        )

    def add_waiter(self, ticket: Ticket) -> None:
        """A concurrent duplicate: answered with a replay of the same outcome."""
        with self._lock:
            if self.outcome is None:
                self._waiters.append(ticket)
                return
            outcome = self.outcome
        ticket.settle(_as_replay(outcome))

    def settle(self, outcome: ChargeOutcome) -> bool:
        """Decide the receipt's fate once (committed, replayed from the store,
        or refused) and answer its charge and every duplicate waiting on it."""
        with self._lock:
            if self.outcome is not None:
                return False
            self.outcome = outcome
            waiters, self._waiters = self._waiters, []
        self.ticket.settle(outcome)
        replay = _as_replay(outcome)
        for ticket in waiters:
            ticket.settle(replay)
        if self.on_settled is not None:
            self.on_settled(self)
        return True

    @property
    def failed(self) -> bool:
        outcome = self.outcome
        return outcome is not None and outcome.kind == "refused"


def _as_replay(outcome: ChargeOutcome) -> ChargeOutcome:
    if outcome.kind != "committed":
        return outcome
    return ChargeOutcome(kind="replayed", receipt=outcome.receipt)


@dataclass(slots=True)
class Barrier:
    """Travels the same path as a customer's receipts; set once every receipt
    queued before it has been committed or failed."""

    customer_id: str
    done: threading.Event = field(default_factory=threading.Event)

    def settle(self, outcome: ChargeOutcome | None = None) -> bool:
        """Release it: committed or failed, what came before it is settled."""
        first = not self.done.is_set()
        self.done.set()
        return first
