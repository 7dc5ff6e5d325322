"""What one charge costs at least on this machine, part by part (not a test).

    .venv/bin/python -m loadtest.bench_floor [--seconds S]

Each part is work that every charge needs whatever the design: an RS256
signature, the receipt's RFC 8785 hash, one HTTP request served and one sent
by the load generator (both on this machine, as in `make bench`), its share of
a durable group commit, and one round trip from the event loop to a thread
and back (blocking work must leave the loop). Each is measured alone, as CPU
time per charge, with the real code: our signing key, our hasher, the trivial
aiohttp server under wrk with the bench's own script, our SQLite ledger. The sum is a floor, not an
estimate: validation, the actors' bookkeeping, the archive, metrics and the
GIL's contention all come on top. Dividing the machine's CPUs by it gives the
most charges/s any design built from these parts could reach here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from crypto import GENESIS_HASH, SigningKey, receipt_hash
from crypto.receipt import core_bytes
from gateway.thread_cpu import stat_cpu_seconds
from ledger.model import Customer, Entitlement
from ledger.sqlite import SqliteLedger
from loadtest.bench import BenchError, on_uvloop, require_wrk, run_wrk, trivial_target
from loadtest.bench_crypto import _core
from loadtest.bench_ledger import T0, Chains

_LEDGER_BATCH = 64  # receipts per group commit, as the writer sees them at ~1,000/s
_HANDOFFS_IN_FLIGHT = 64  # the bench's connection count


def _cpu_us_per_call(work: Callable[[], object], seconds: float) -> float:
    """CPU microseconds per call of `work`, on this thread, over `seconds` of wall time."""
    calls, started_cpu = 0, time.thread_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        work()
        calls += 1
    return (time.thread_time() - started_cpu) * 1e6 / calls


def _process_cpu_s(pid: int) -> float:
    seconds = stat_cpu_seconds(Path(f"/proc/{pid}/stat"))
    if seconds is None:
        raise BenchError(f"process {pid} is gone: no CPU time to read")
    return seconds


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def http_floor(tmp_dir: Path, seconds: float, connections: int) -> tuple[float, float]:
    """CPU µs per request of the trivial aiohttp server and of wrk sending it."""
    with trivial_target(tmp_dir) as (server, url, customers):
        server_before, wrk_before = _process_cpu_s(server.pid), _children_cpu_s()
        result = run_wrk(
            "floor", url, customers, connections=connections, duration_s=seconds, threads=2
        )
        server_s = _process_cpu_s(server.pid) - server_before
        wrk_s = _children_cpu_s() - wrk_before
    requests = sum(result.statuses.values())
    return server_s * 1e6 / requests, wrk_s * 1e6 / requests


def ledger_floor(tmp_dir: Path, batches: int) -> float:
    """CPU µs per receipt of our SQLite group commit (WAL, synchronous=FULL)."""
    store = SqliteLedger.open(tmp_dir / "floor.sqlite3")
    try:
        chains = Chains(1_000, 1_000)
        for cid in chains.ids:
            store.create_customer(Customer(cid, f"{cid}@example.com", "USD", T0))
            store.put_entitlement(Entitlement(cid, "usage", None, "soft", "active", T0))
        planned = [chains.batch(i * _LEDGER_BATCH, _LEDGER_BATCH) for i in range(batches)]
        started_cpu = time.thread_time()
        for writes in planned:
            store.commit_batch(writes, ())
        return (time.thread_time() - started_cpu) * 1e6 / (batches * _LEDGER_BATCH)
    finally:
        store.close()


def handoff_floor(round_trips: int) -> float:
    """Process CPU µs per loop -> worker thread -> loop round trip, with
    `_HANDOFFS_IN_FLIGHT` in flight: how the gateway reaches an actor and back."""
    inbox: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]] | None]
    inbox = queue.SimpleQueue()

    def worker() -> None:
        while (item := inbox.get()) is not None:
            loop, future = item
            loop.call_soon_threadsafe(future.set_result, 1)

    async def client(count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            future: asyncio.Future[int] = loop.create_future()
            inbox.put((loop, future))
            await future

    per_client = max(1, round_trips // _HANDOFFS_IN_FLIGHT)

    async def run() -> None:
        await asyncio.gather(*(client(per_client) for _ in range(_HANDOFFS_IN_FLIGHT)))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    started_cpu = time.process_time()
    on_uvloop(run())
    used_s = time.process_time() - started_cpu
    inbox.put(None)
    thread.join()
    return used_s * 1e6 / (per_client * _HANDOFFS_IN_FLIGHT)


def main() -> int:
    try:
        run(_parse_args())
    except BenchError as error:
        print(f"bench_floor: {error}", file=sys.stderr)
        return 2
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measured part")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--target", type=float, default=3_000, help="charges/s to compare with")
    return parser.parse_args()


def run(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    require_wrk()

    key = SigningKey.generate("RS256")
    core = _core(1, GENESIS_HASH)
    payload = core_bytes(core)
    print(f"measuring, {args.seconds:g} s per part ...", flush=True)
    parts: list[tuple[str, float]] = [
        (
            "RS256 signature (RSA-2048)",
            _cpu_us_per_call(lambda: key.sign_detached(payload), args.seconds),
        ),
        (
            "RFC 8785 + SHA-256 of the core",
            _cpu_us_per_call(lambda: receipt_hash(core), args.seconds),
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="bench_floor_") as tmp:
        served_us, sent_us = http_floor(Path(tmp), args.seconds * 3, args.connections)
        parts.append(("HTTP request served (aiohttp, trivial)", served_us))
        parts.append(("HTTP request sent (wrk, bench script)", sent_us))
        parts.append(
            (f"SQLite durable commit, 1/{_LEDGER_BATCH} of a batch", ledger_floor(Path(tmp), 100))
        )
    parts.append(("hand-off loop -> thread -> loop", handoff_floor(50_000)))

    cpus = os.cpu_count() or 1
    total_us = sum(us for _, us in parts)
    print(f"\n{'part of one charge':46} {'CPU us':>8}")
    print("-" * 56)
    for name, us in parts:
        print(f"{name:46} {us:8.1f}")
    print("-" * 56)
    print(f"{'floor per charge':46} {total_us:8.1f}")
    ceiling = cpus * 1e6 / total_us
    print(f"\n  {cpus} CPUs / floor = at most {ceiling:,.0f} charges/s, with nothing else running")
    print(
        f"  {args.target:,.0f} charges/s would need {args.target * total_us / 1e6:.2f} of the "
        f"{cpus} CPUs for these parts alone ({args.target * total_us / 1e4 / cpus:.0f}%)"
    )


if __name__ == "__main__":
    sys.exit(main())
