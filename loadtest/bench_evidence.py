"""Dispute evidence benchmark (not a test):
`python -m loadtest.bench_evidence [--receipts N] [--customers C] [--path FILE]`.

Builds a ledger of N receipts over C customers through the ledger API (real
receipts with their hashes and chains, one signed checkpoint per commit of
`commit_batch_receipts_max` receipts, as the writer commits them, with a
request record each), then times the evidence bundle of receipts picked
across the ledger (first, last, random) and checks each offline. Prints the
build rate and the bundle times; the target is under 1 s for any receipt of
a 1,000,000-receipt ledger. `--path` reuses a ledger built before.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from actors.integrity.evidence import build_evidence
from actors.receipt_log import LogAppender
from crypto import GENESIS_HASH, KeyRing, SigningKey, check_evidence, load_or_create_dev_key
from crypto.receipt import core_bytes, hash_of_core_bytes
from ledger import Customer, Entitlement, ReceiptWrite, RequestRecord, StoredReceipt, limits
from ledger.clock import utc_now_rfc3339
from ledger.log_proofs import LogProofs
from ledger.sqlite import SqliteLedger

_NOW = "2025-06-01T12:00:00.000000Z"


def _receipt(customer_id: str, seq: int, previous: str, balance: int) -> StoredReceipt:
    core = {
        "receipt_id": f"rcpt_{customer_id}_{seq:08d}",
        "customer_id": customer_id,
        "seq": seq,
        "idempotency_key": f"k{seq}",
        "entitlement_id": "api_calls",
        "amount_minor": 25,
        "currency": "USD",
        "usage_description": "one API call",
        "event_timestamp": _NOW,
        "recorded_at": _NOW,
        "balance_after_minor": balance,
        "quota_remaining_minor": None,
        "previous_receipt_hash": previous,
    }
    receipt_hash = hash_of_core_bytes(core_bytes(core))
    return StoredReceipt(
        customer_id=customer_id, seq=seq, receipt_id=str(core["receipt_id"]),
        idempotency_key=f"k{seq}", request_fingerprint="bench", entitlement_id="api_calls",
        amount_minor=25, currency="USD", receipt_hash=receipt_hash,
        previous_receipt_hash=previous, balance_after_minor=balance, recorded_at=_NOW,
        receipt_json=orjson.dumps({**core, "receipt_hash": receipt_hash}),
    )


def build(
    store: SqliteLedger, key: SigningKey, receipts: int, customers: int, origin: str = "bench"
) -> None:
    ids = [f"cus_{n:05d}" for n in range(customers)]
    for customer_id in ids:
        store.create_customer(Customer(customer_id, f"{customer_id}@example.com", "USD", _NOW))
        store.put_entitlement(
            Entitlement(customer_id, "api_calls", None, "soft", "active", _NOW)
        )
    heads = {customer_id: (0, GENESIS_HASH, 0) for customer_id in ids}
    appender = LogAppender(store, key=lambda: key, origin=origin, now_rfc3339=utc_now_rfc3339)
    batch_max = limits.commit_batch_receipts_max
    started, done, position = time.perf_counter(), 0, 0
    while done < receipts:
        batch = []
        for _ in range(min(batch_max, receipts - done)):
            customer_id = ids[position % customers]
            position += 1
            seq, previous, balance = heads[customer_id]
            receipt = _receipt(customer_id, seq + 1, previous, balance + 25)
            heads[customer_id] = (seq + 1, receipt.receipt_hash, balance + 25)
            batch.append(receipt)
        prepared = appender.prepare(batch)
        record = RequestRecord("key_bench", "127.0.0.1", "bench/1", _NOW, "req_bench")
        store.commit_batch(
            [ReceiptWrite(r, record) for r in prepared.receipts], [], prepared.log_append
        )
        appender.adopt(prepared)
        done += len(batch)
        if done % 100_000 < batch_max:
            rate = done / (time.perf_counter() - started)
            print(f"  built {done:,} receipts ({rate:,.0f}/s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--receipts", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--path", type=Path, help="ledger file (built if absent)")
    args = parser.parse_args()
    path = args.path or Path(tempfile.mkdtemp(prefix="bench-evidence-")) / "ledger.sqlite3"
    fresh = not path.exists()
    key = load_or_create_dev_key(path.parent, "ES256")  # the same key when reused
    store = SqliteLedger.open(path)
    try:
        if fresh:
            started = time.perf_counter()
            build(store, key, args.receipts, args.customers)
            print(f"built {args.receipts:,} receipts in {time.perf_counter() - started:.1f} s")
        key_ring = KeyRing(active=key, others=[])
        log_proofs = LogProofs(store)
        head = store.log_head()
        assert head is not None
        rng = random.Random(7)
        picks = [0, head.tree_size - 1]
        picks += [rng.randrange(head.tree_size) for _ in range(args.samples)]
        times_s = []
        for index in picks:
            (receipt,) = store.receipts_by_log_index(index, 1)
            started = time.perf_counter()
            bundle = build_evidence(store, log_proofs, store, key_ring, receipt, utc_now_rfc3339)
            times_s.append(time.perf_counter() - started)
            if not check_evidence(bundle).valid:
                raise SystemExit(f"the bundle of leaf {index} does not verify")
        print(
            f"evidence bundle, {len(picks)} receipts of a {head.tree_size:,}-receipt ledger: "
            f"median {statistics.median(times_s) * 1000:.1f} ms, "
            f"max {max(times_s) * 1000:.1f} ms (target: under 1000 ms); all verify offline"
        )
    finally:
        store.close()


if __name__ == "__main__":
    main()
