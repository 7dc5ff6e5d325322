"""Restore benchmark (not a test):
`python -m loadtest.bench_restore [--receipts N] [--customers C] [--path FILE]`.

Builds a ledger through the ledger API (loadtest.bench_evidence: real
receipts, chains and one signed checkpoint per commit), copies it into an
embedded archive (receipts and checkpoints, as the service archives them),
then restores that archive into a new SQLite ledger with the code behind
`billing restore`, and prints the restore rate in receipts/s and what it
means for a 1,000,000-receipt ledger against the 30-minute RTO.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from crypto import load_or_create_dev_key
from ledger.clock import utc_now_rfc3339
from ledger.local import FileArchive
from ledger.restore import restore_ledger
from ledger.sqlite import SqliteLedger
from loadtest.bench_evidence import build

_PAGE = 20_000


def archive_ledger(store: SqliteLedger, archive: FileArchive) -> None:
    """Everything the service would have archived: receipts, then checkpoints."""
    start = 0
    while page := store.receipts_by_log_index(start, _PAGE):
        archive.append(page)
        start += len(page)
    after = 0
    while checkpoints := store.log_checkpoints(after, _PAGE):
        archive.append_checkpoints(checkpoints)
        after = checkpoints[-1].tree_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--receipts", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--path", type=Path, help="source ledger file (built if absent)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    path = args.path or work / "ledger.sqlite3"
    fresh = not path.exists()
    key = load_or_create_dev_key(path.parent, "ES256")
    source = SqliteLedger.open(path)
    try:
        if fresh:
            started = time.perf_counter()
            build(source, key, args.receipts, args.customers)
            print(f"built {args.receipts:,} receipts in {time.perf_counter() - started:.1f} s")
        jwks = {"keys": [key.public_jwk()]}  # the key the build signed with
        archive = FileArchive(work / "archive")
        started = time.perf_counter()
        archive_ledger(source, archive)
        print(f"archived in {time.perf_counter() - started:.1f} s")
    finally:
        source.close()
    target = SqliteLedger.open(work / "restored.sqlite3")
    try:
        started = time.perf_counter()
        report = restore_ledger(archive, target, jwks, now_rfc3339=utc_now_rfc3339())
        elapsed_s = time.perf_counter() - started
    finally:
        target.close()
        archive.close()
    if not report.ok:
        raise SystemExit(f"restore failed: {report.failure}")
    rate = report.receipts / elapsed_s
    print(
        f"restored {report.receipts:,} receipts, {report.checkpoints:,} checkpoints, "
        f"{report.customers:,} customers in {elapsed_s:.1f} s: {rate:,.0f} receipts/s "
        f"(1,000,000 receipts: {1_000_000 / rate / 60:.1f} min; RTO 30 min)"
    )


if __name__ == "__main__":
    main()
