"""Group-commit throughput of SpannerLedger on the Cloud Spanner emulator.

    .venv/bin/python -m loadtest.bench_spanner [--seconds 3] [--customers 64]

Starts the emulator (Google Cloud CLI required), creates a database, then
for each batch size (1, 50, 512 receipts) commits batches through
`commit_batch` for a fixed time and prints commits/s and receipts/s. The
emulator runs one read-write transaction at a time and is far slower than
Spanner itself: the numbers compare batch sizes, they do not size production.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

import structlog

from ledger import GENESIS_HASH, ReceiptWrite
from ledger.limits import commit_batch_receipts_max

BATCH_SIZES = (1, 50, commit_batch_receipts_max)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_spanner", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="run time per batch size")
    parser.add_argument("--customers", type=int, default=64, help="customers spread over a batch")
    args = parser.parse_args(argv)
    return on_emulator("bench_spanner", lambda: _bench(args.seconds, args.customers))


def on_emulator(name: str, bench: Callable[[], int]) -> int:
    """Run `bench` against a Spanner emulator started for it, quietly."""
    # Per-commit debug logs would measure the terminal, not the store.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    from tests.emulators import EmulatorMissing, start_spanner

    try:
        emulator = start_spanner()
    except EmulatorMissing as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2
    os.environ["SPANNER_EMULATOR_HOST"] = emulator.host_port
    try:
        return bench()
    finally:
        emulator.stop()


def _bench(seconds: float, customer_count: int) -> int:
    from ledger.spanner import SpannerLedger
    from tests.gcp import _data

    url = f"spanner://projects/{_data.PROJECT}/instances/bench/databases/{_data.unique('bench')}"
    store = SpannerLedger.open(url, create=True, migrate=True)
    try:
        customers = [_data.customer() for _ in range(customer_count)]
        heads: dict[str, tuple[int, str, int]] = {}
        for customer in customers:
            store.create_customer(customer)
            store.put_entitlement(_data.entitlement(customer.customer_id))
            heads[customer.customer_id] = (0, GENESIS_HASH, 0)

        print(f"emulator, {customer_count} customers, {seconds:.0f}s per batch size")
        print(f"{'batch':>6} {'commits':>8} {'commits/s':>10} {'receipts/s':>11} {'ms/commit':>10}")
        for size in BATCH_SIZES:
            commits = receipts = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                writes = []
                per_customer = max(1, size // customer_count)
                for i in range(0, size, per_customer):
                    cid = customers[(commits + i // per_customer) % customer_count].customer_id
                    seq, head, balance = heads[cid]
                    chain = _data.chain(
                        cid,
                        min(per_customer, size - i),
                        start_seq=seq + 1,
                        previous=head,
                        balance=balance,
                    )
                    heads[cid] = (
                        chain[-1].seq,
                        chain[-1].receipt_hash,
                        chain[-1].balance_after_minor,
                    )
                    writes.extend(ReceiptWrite(r) for r in chain)
                store.commit_batch(writes, _data.outbox_for([w.receipt for w in writes]))
                commits += 1
                receipts += len(writes)
            elapsed = time.perf_counter() - started
            print(
                f"{size:>6} {commits:>8} {commits / elapsed:>10.1f} "
                f"{receipts / elapsed:>11.0f} {1000 * elapsed / commits:>10.1f}"
            )
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
