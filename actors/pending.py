"""A receipt on its way from an account actor through signing to the store.

It is created by the actor (chain position decided), signed by the signer
pool, committed by the ledger writer, and completed exactly once. Concurrent
duplicates of the same idempotency key wait on the same `PendingReceipt`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from actors.charges import ChargeOutcome, Reply, refused
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
    first_reply: Reply
    receipt: StoredReceipt | None = None
    outcome: ChargeOutcome | None = None
    request: RequestRecord | None = None  # committed with the receipt
    events: tuple[OutboundEvent, ...] = ()  # threshold alerts, committed with it too
    _extra_replies: list[Reply] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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

    def add_waiter(self, reply: Reply) -> None:
        """A concurrent duplicate: answered with a replay of the same outcome."""
        with self._lock:
            if self.outcome is None:
                self._extra_replies.append(reply)
                return
            outcome = self.outcome
        reply(_as_replay(outcome))

    def complete(self, outcome: ChargeOutcome) -> None:
        with self._lock:
            if self.outcome is not None:
                return
            self.outcome = outcome
            extra, self._extra_replies = self._extra_replies, []
        self.first_reply(outcome)
        replay = _as_replay(outcome)
        for reply in extra:
            reply(replay)

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


def settle_failed(item: object, code: str, message: str) -> None:
    """Answer a pipeline item that will not commit: a receipt is refused, a
    barrier released (everything queued before it is settled too)."""
    if isinstance(item, PendingReceipt):
        item.complete(refused(code, message))
    elif isinstance(item, Barrier):
        item.done.set()


def settle_queue(q: queue.Queue[Any], code: str, message: str) -> None:
    """Settle whatever is left in a stopped stage's queue: never drop it."""
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return
        settle_failed(item, code, message)
