"""Builders for valid receipt chains and records, shared by the contract suites.

Hashes here are plain SHA-256 of a few fields, not the real canonical form:
the store only links them, it never recomputes them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field

from crypto.receipt import GENESIS_HASH
from ledger.model import Customer, Entitlement, LogCheckpoint, OutboxMessage, StoredReceipt
from ledger.ports import ReceiptWrite

T0 = "2026-01-01T00:00:00.000000Z"
_ids = itertools.count(1)


def ts(second: int) -> str:
    """A timestamp `second` seconds after T0, in the fixed format."""
    minutes, seconds = divmod(second, 60)
    hours, minutes = divmod(minutes, 60)
    return f"2026-01-01T{hours:02d}:{minutes:02d}:{seconds:02d}.000000Z"


def customer(customer_id: str, **overrides: str) -> Customer:
    values = {"email": f"{customer_id}@example.com", "currency": "USD", "created_at": T0}
    values.update(overrides)
    return Customer(customer_id=customer_id, **values)  # type: ignore[arg-type]


def entitlement(
    customer_id: str, entitlement_id: str = "usage", **overrides: object
) -> Entitlement:
    values: dict[str, object] = {
        "quota_minor": 10_000,
        "policy": "hard",
        "status": "active",
        "updated_at": T0,
    }
    values.update(overrides)
    return Entitlement(customer_id=customer_id, entitlement_id=entitlement_id, **values)  # type: ignore[arg-type]


@dataclass
class Chain:
    """One customer's chain as the account actor would extend it."""

    customer_id: str
    entitlement_id: str = "usage"
    seq: int = 0
    last_hash: str = GENESIS_HASH
    balance_minor: int = 0
    made: list[StoredReceipt] = field(default_factory=list)

    def next(self, amount_minor: int = 100, key: str | None = None) -> ReceiptWrite:
        seq = self.seq + 1
        receipt_id = f"rcpt_{next(_ids):08d}"
        idempotency_key = key if key is not None else f"key-{self.customer_id}-{seq}"
        balance = self.balance_minor + amount_minor
        core = {
            "receipt_id": receipt_id,
            "customer_id": self.customer_id,
            "seq": seq,
            "amount_minor": amount_minor,
            "previous_receipt_hash": self.last_hash,
        }
        receipt_hash = "sha256:" + hashlib.sha256(json.dumps(core).encode()).hexdigest()
        receipt = StoredReceipt(
            customer_id=self.customer_id,
            seq=seq,
            receipt_id=receipt_id,
            idempotency_key=idempotency_key,
            request_fingerprint="fp-" + idempotency_key,
            entitlement_id=self.entitlement_id,
            amount_minor=amount_minor,
            currency="USD",
            receipt_hash=receipt_hash,
            previous_receipt_hash=self.last_hash,
            balance_after_minor=balance,
            recorded_at=ts(seq),
            receipt_json=json.dumps({**core, "receipt_hash": receipt_hash}).encode(),
        )
        self.seq, self.last_hash, self.balance_minor = seq, receipt_hash, balance
        self.made.append(receipt)
        return ReceiptWrite(receipt)

    def rewind(self, receipts: int) -> None:
        """Forget the last `receipts` receipts (they were never committed)."""
        del self.made[len(self.made) - receipts :]
        if self.made:
            last = self.made[-1]
            self.seq, self.last_hash = last.seq, last.receipt_hash
            self.balance_minor = last.balance_after_minor
        else:
            self.seq, self.last_hash, self.balance_minor = 0, GENESIS_HASH, 0


def outbox_message(
    message_id: str, ordering_key: str, topic: str = "receipts", created_at: str = T0
) -> OutboxMessage:
    return OutboxMessage(
        message_id=message_id,
        topic=topic,
        ordering_key=ordering_key,
        payload=message_id.encode(),
        created_at=created_at,
    )


def log_checkpoint(tree_size: int, fork: int = 0) -> LogCheckpoint:
    """A checkpoint as the archive and broadcast see one: they index the JWS,
    never verify it. `fork` > 0 gives another root for the same size."""
    root_hash = hashlib.sha256(f"root {tree_size} {fork}".encode()).digest()
    return LogCheckpoint(tree_size, root_hash, ts(tree_size % 3600), f"e30.size-{tree_size}.c2ln")
