"""Benchmark the embedded ledger's commit path (not a timed test).

    .venv/bin/python -m loadtest.bench_ledger [--customers N] [--batches N] ...

Prints single-receipt commits/s (one transaction and one fsync each: the
floor for an unbatched writer) and receipts/s in 512-row group commits, on a
temporary file, with receipt ids and idempotency keys as random as production's.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

import structlog

from crypto.receipt import GENESIS_HASH
from ledger import limits
from ledger.model import Customer, Entitlement, OutboxMessage, StoredReceipt
from ledger.ports import ReceiptWrite
from ledger.sqlite import SqliteLedger

T0 = "2026-01-01T00:00:00.000000Z"


class Chains:
    """Valid receipt chains for many customers, built before the clock starts."""

    def __init__(self, customers: int, receipt_bytes: int) -> None:
        self.ids = [f"cus_{i:06d}" for i in range(customers)]
        self.heads = {cid: (0, GENESIS_HASH, 0) for cid in self.ids}
        self.body = b"x" * receipt_bytes

    def receipt(self, customer_id: str) -> StoredReceipt:
        seq, last_hash, balance = self.heads[customer_id]
        receipt_id = "rcpt_" + os.urandom(12).hex()
        receipt_hash = "sha256:" + hashlib.sha256(receipt_id.encode()).hexdigest()
        receipt = StoredReceipt(
            customer_id=customer_id,
            seq=seq + 1,
            receipt_id=receipt_id,
            idempotency_key=str(uuid.uuid4()),
            request_fingerprint=receipt_hash[7:39],
            entitlement_id="usage",
            amount_minor=25,
            currency="USD",
            receipt_hash=receipt_hash,
            previous_receipt_hash=last_hash,
            balance_after_minor=balance + 25,
            recorded_at=T0,
            receipt_json=self.body,
        )
        self.heads[customer_id] = (seq + 1, receipt_hash, balance + 25)
        return receipt

    def batch(self, start: int, size: int) -> list[ReceiptWrite]:
        # Round-robin over customers, then chain order within each customer,
        # as the group-committing writer hands them over.
        owners = [self.ids[(start + i) % len(self.ids)] for i in range(size)]
        owners.sort()
        return [ReceiptWrite(self.receipt(cid)) for cid in owners]


def outbox_for(writes: list[ReceiptWrite], per_receipt: int) -> list[OutboxMessage]:
    return [
        OutboxMessage(
            message_id=f"{w.receipt.receipt_id}:{topic}",
            topic=f"topic{topic}",
            ordering_key=w.receipt.customer_id,
            payload=w.receipt.receipt_json,
            created_at=T0,
        )
        for w in writes
        for topic in range(per_receipt)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=limits.commit_batch_receipts_max)
    parser.add_argument("--single", type=int, default=1_000, help="single-receipt commits")
    parser.add_argument("--receipt-bytes", type=int, default=1_000, help="signed receipt size")
    parser.add_argument("--outbox-per-receipt", type=int, default=0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as tmp:
        store = SqliteLedger.open(Path(tmp) / "ledger.sqlite3")
        try:
            chains = Chains(args.customers, args.receipt_bytes)
            for cid in chains.ids:
                store.create_customer(Customer(cid, f"{cid}@example.com", "USD", T0))
                store.put_entitlement(Entitlement(cid, "usage", None, "soft", "active", T0))

            singles = [chains.batch(i, 1) for i in range(args.single)]
            started = time.perf_counter()
            for writes in singles:
                store.commit_batch(writes, outbox_for(writes, args.outbox_per_receipt))
            single_s = time.perf_counter() - started

            batches = [
                chains.batch(i * args.batch_size, args.batch_size) for i in range(args.batches)
            ]
            outboxes = [outbox_for(w, args.outbox_per_receipt) for w in batches]
            started = time.perf_counter()
            for writes, outbox in zip(batches, outboxes, strict=True):
                store.commit_batch(writes, outbox)
            batch_s = time.perf_counter() - started
            receipts = args.batches * args.batch_size
        finally:
            store.close()

    print(
        f"sqlite ledger, WAL + synchronous=FULL, {args.customers} customers, "
        f"{args.receipt_bytes}-byte receipts, {args.outbox_per_receipt} outbox rows/receipt"
    )
    print(f"single-receipt commits/s: {args.single / single_s:,.0f}")
    print(
        f"receipts/s in {args.batch_size}-row batches: {receipts / batch_s:,.0f} "
        f"({receipts:,} receipts, {batch_s * 1000 / args.batches:.1f} ms/batch)"
    )


if __name__ == "__main__":
    main()
