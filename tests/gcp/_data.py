"""Small builders for receipts and customers shared by the emulator tests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid

from ledger import GENESIS_HASH, Customer, Entitlement, OutboxMessage, StoredReceipt
from ledger.clock import utc_now_rfc3339

PROJECT = "vexa-test"  # every emulator test uses this Google Cloud project id


def unique(prefix: str) -> str:
    """A short, unique, lower-case id usable as a database/topic/bucket name."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def customer(customer_id: str | None = None) -> Customer:
    cid = customer_id or unique("cus")
    return Customer(cid, f"{cid}@example.com", "USD", utc_now_rfc3339())


def entitlement(customer_id: str, entitlement_id: str = "plan") -> Entitlement:
    return Entitlement(
        customer_id,
        entitlement_id,
        quota_minor=10_000,
        policy="hard",
        status="active",
        updated_at=utc_now_rfc3339(),
    )


def fake_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def chain(
    customer_id: str,
    count: int,
    *,
    start_seq: int = 1,
    previous: str = GENESIS_HASH,
    balance: int = 0,
    amount: int = 10,
    key_prefix: str | None = None,
    entitlement_id: str = "plan",
) -> list[StoredReceipt]:
    """`count` receipts continuing a customer's chain after `start_seq - 1`."""
    receipts = []
    prefix = key_prefix or unique("key")
    for seq in range(start_seq, start_seq + count):
        balance += amount
        receipt_id = f"rcpt_{uuid.uuid4().hex}"
        core = {
            "receipt_id": receipt_id,
            "customer_id": customer_id,
            "seq": seq,
            "previous_receipt_hash": previous,
            "amount_minor": amount,
        }
        body = json.dumps(core, sort_keys=True).encode()
        receipt_hash = fake_hash(body.decode())
        receipts.append(
            StoredReceipt(
                customer_id=customer_id,
                seq=seq,
                receipt_id=receipt_id,
                idempotency_key=f"{prefix}-{seq}",
                request_fingerprint=fake_hash(f"req{seq}"),
                entitlement_id=entitlement_id,
                amount_minor=amount,
                currency="USD",
                receipt_hash=receipt_hash,
                previous_receipt_hash=previous,
                balance_after_minor=balance,
                recorded_at=utc_now_rfc3339(),
                receipt_json=body,
            )
        )
        previous = receipt_hash
    return receipts


def outbox_for(receipts: list[StoredReceipt], topic: str = "receipts") -> list[OutboxMessage]:
    return [
        OutboxMessage(f"msg-{r.receipt_id}", topic, r.customer_id, r.receipt_json, r.recorded_at)
        for r in receipts
    ]


def with_key(receipt: StoredReceipt, idempotency_key: str) -> StoredReceipt:
    return dataclasses.replace(receipt, idempotency_key=idempotency_key)
