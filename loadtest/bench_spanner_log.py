"""Receipt-log appends on the Cloud Spanner emulator: commits/s of one batch
size (64 receipts by default) without the log, with it, and with two
gateways (two SpannerLedger instances, one database) racing for the log head.

    .venv/bin/python -m loadtest.bench_spanner_log [--seconds 5] [--batch 64]

A writer keeps the log's leaves in memory, as the service's writer keeps its
right edge; building the tiles and root is done before the clock starts for
each commit, so `store ms/commit` is the store's transaction alone, while
`commits/s` also pays for the test helper's tree build (it rehashes every
leaf each commit, so it slows down as the log grows). After a
LogConflict a racing writer reloads the stored level-0 tiles and retries the
same receipts. The emulator runs one read-write transaction at a time and is
far slower than Spanner: the figures compare modes, they do not size
production.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.errors import LogConflict
from loadtest.bench_spanner import on_emulator


@dataclass
class _Tally:
    commits: int = 0
    receipts: int = 0
    conflicts: int = 0
    store_s: float = 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_spanner_log", description=__doc__
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="run time per mode")
    parser.add_argument("--batch", type=int, default=64, help="receipts per commit")
    args = parser.parse_args(argv)
    return on_emulator("bench_spanner_log", lambda: _bench(args.seconds, args.batch))


def _writer(
    store: Any,
    chains: list[Any],
    seconds: float,
    batch: int,
    *,
    with_log: bool,
    tally: _Tally,
    lock: threading.Lock,
) -> None:
    """Commit batches through `store` until the time is up."""
    from tests.contract._log import LogWriter

    log = LogWriter.reload(store) if with_log else None
    deadline = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < deadline:
        writes = [chains[(turn + i) % len(chains)].next(amount_minor=1) for i in range(batch)]
        turn += batch
        while True:
            indexed, append = log.append(writes) if log is not None else (writes, None)
            started = time.perf_counter()
            try:
                store.commit_batch(indexed, [], append)
            except LogConflict:
                with lock:
                    tally.conflicts += 1
                log = LogWriter.reload(store)
                continue
            finally:
                with lock:
                    tally.store_s += time.perf_counter() - started
            break
        if log is not None:
            log.landed(indexed)
        with lock:
            tally.commits += 1
            tally.receipts += len(writes)


def _bench(seconds: float, batch: int) -> int:
    from ledger.spanner import SpannerLedger
    from tests.contract._chain import Chain, customer, entitlement
    from tests.gcp import _data

    url = f"spanner://projects/{_data.PROJECT}/instances/bench/databases/{_data.unique('log')}"
    stores = [SpannerLedger.open(url, create=True, migrate=True), SpannerLedger.open(url)]
    try:
        chains = []
        for writer in range(2):
            ids = [f"cus_{writer}_{i}" for i in range(batch)]
            for cid in ids:
                stores[0].create_customer(customer(cid))
                stores[0].put_entitlement(entitlement(cid, quota_minor=None))
            chains.append([Chain(cid) for cid in ids])
        print(f"emulator, {batch} receipts a commit over {batch} customers, {seconds:.0f}s a mode")
        print(
            f"{'mode':<18} {'commits':>8} {'conflicts':>9} {'commits/s':>10} "
            f"{'receipts/s':>11} {'store ms/commit':>16}"
        )
        for mode, writers, with_log in (
            ("no log, 1 writer", 1, False),
            ("log, 1 writer", 1, True),
            ("log, 2 gateways", 2, True),
        ):
            tally, lock = _Tally(), threading.Lock()
            threads = [
                threading.Thread(
                    target=_writer,
                    args=(stores[i], chains[i], seconds, batch),
                    kwargs={"with_log": with_log, "tally": tally, "lock": lock},
                )
                for i in range(writers)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=seconds + 120)
            elapsed = time.perf_counter() - started
            attempts = tally.commits + tally.conflicts
            print(
                f"{mode:<18} {tally.commits:>8} {tally.conflicts:>9} "
                f"{tally.commits / elapsed:>10.1f} {tally.receipts / elapsed:>11.0f} "
                f"{1000 * tally.store_s / max(1, attempts):>16.1f}"
            )
    finally:
        for store in stores:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
