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

from actors.charges import ChargeOutcome, as_replay
from actors.tickets import Ticket
from crypto import sealed_document
from ledger import RequestRecord, StoredReceipt, StoredRefusal
from ledger.webhook_store import OutboundEvent


class _AnsweredOnce:
    """Settled exactly once; concurrent duplicates of the key wait on it and
    get the same answer as a replay (see actors.tickets)."""

    __slots__ = ()  # the subclasses' dataclass slots hold these fields
    ticket: Ticket
    outcome: ChargeOutcome | None
    _waiters: list[Ticket]
    _lock: threading.Lock

    def add_waiter(self, ticket: Ticket) -> None:
        """A concurrent duplicate: answered with a replay of the same outcome."""
        with self._lock:
            if self.outcome is None:
                self._waiters.append(ticket)
                return
            outcome = self.outcome
        ticket.settle(as_replay(outcome))

    def settle(self, outcome: ChargeOutcome) -> bool:
        """Decide the fate once (committed or kept, replayed from the store,
        or refused) and answer its charge and every duplicate waiting on it."""
        with self._lock:
            if self.outcome is not None:
                return False
            self.outcome = outcome  # type: ignore[misc]  # a subclass slot
            waiters, self._waiters = self._waiters, []  # type: ignore[misc]
        self.ticket.settle(outcome)
        replay = as_replay(outcome)
        for ticket in waiters:
            ticket.settle(replay)
        self._settled(outcome)
        return True

    def _settled(self, outcome: ChargeOutcome) -> None:
        """After every answer is out: let go of what only the stages needed."""


@dataclass(slots=True)
class PendingReceipt(_AnsweredOnce):
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

    def _settled(self, outcome: ChargeOutcome) -> None:
        if self.on_settled is not None:
            self.on_settled(self)
        if outcome.kind != "refused":
            self._drop_what_was_for_the_store()

    def _drop_what_was_for_the_store(self) -> None:
        """Past the signer and the writer (a refusal may come while a stage
        still holds it), the core, its canonical bytes and the sealed copy
        are needed no more; the account actor keeps its last receipt in
        `_recent` until the next charge, and with 10,000 live customers
        these were ~25 MiB (issue 20). The outcome keeps what a replay needs."""
        self.core = {}
        self.canonical_core = b""
        self.receipt = None
        self.request = None

    @property
    def failed(self) -> bool:
        outcome = self.outcome
        return outcome is not None and outcome.kind == "refused"


@dataclass(slots=True)
class PendingRefusal(_AnsweredOnce):
    """A final refusal on its way to be kept under its idempotency key
    (ledger.model.StoredRefusal): the ledger writer commits it with the
    receipts' group commit, and only then is the charge answered, so a
    retry after the answer always finds it. Concurrent duplicates of the
    key wait on it as on a PendingReceipt and get the refusal replayed."""

    refusal: StoredRefusal
    answer: ChargeOutcome  # the refusal, as the charge gets it once kept
    ticket: Ticket
    outcome: ChargeOutcome | None = None
    _waiters: list[Ticket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def customer_id(self) -> str:
        return self.refusal.customer_id

    @property
    def idempotency_key(self) -> str:
        return self.refusal.idempotency_key

    @property
    def fingerprint(self) -> str:
        return self.refusal.request_fingerprint

    @property
    def failed(self) -> bool:
        """Not kept (retry-safe: nothing is bound to the key); a kept
        refusal, or the answer found under the key instead, is no failure."""
        outcome = self.outcome
        return outcome is not None and outcome.retry_safe


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
