"""`billing serve` on Google Cloud storage (the emulators), driven over HTTP.

    .venv/bin/python -m loadtest.bench_spanner_serve [--seconds 20] [--clients 16]
                                                     [--customers 50]

Starts the Spanner, Firestore, Pub/Sub and Cloud Storage emulators (Google
Cloud CLI required), runs `billing migrate --create`, creates the topic and
the bucket, starts one `billing serve --store spanner://...` with
BILLING_READ_MODEL / BILLING_BROADCAST / BILLING_ARCHIVE on 127.0.0.1, creates
the customers, then `--clients` concurrent clients charge round-robin over
them for `--seconds`. Prints charges/s, p50/p99 latency, the answers that
were not 202, and the outbox under load: `billing_outbox_backlog` polled from
/metrics every half second, the `billing_outbox_lag_seconds` histogram (commit
to delivery, per sink), and how long the backlog took to drain afterwards.

The Spanner emulator runs one read-write transaction at a time and is far
slower than Spanner: the numbers describe this setup, not production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

metrics_poll_s = 0.5
drain_timeout_s = 120.0
setup_concurrency_max = 4


@dataclass
class Load:
    latencies_s: list[float] = field(default_factory=list)  # of the 202s
    statuses: Counter[str] = field(default_factory=Counter)
    backlog: list[tuple[float, dict[str, float]]] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_spanner_serve", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--customers", type=int, default=50, help="customers charged")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.clients <= 0 or args.customers <= 0:
        parser.error("--seconds, --clients and --customers must be positive")

    from tests.emulators import (
        EmulatorMissing,
        start_firestore,
        start_pubsub,
        start_spanner,
        start_storage,
    )

    workdir = Path(tempfile.mkdtemp(prefix="bench-spanner-serve-"))
    emulators = []
    try:
        for start, variable, scheme in (
            (start_spanner, "SPANNER_EMULATOR_HOST", ""),
            (start_firestore, "FIRESTORE_EMULATOR_HOST", ""),
            (start_pubsub, "PUBSUB_EMULATOR_HOST", ""),
            (start_storage, "STORAGE_EMULATOR_HOST", "http://"),
        ):
            emulator = start(workdir)
            emulators.append(emulator)
            os.environ[variable] = scheme + emulator.host_port
        return asyncio.run(_bench(workdir, args.seconds, args.clients, args.customers))
    except EmulatorMissing as error:
        print(f"bench_spanner_serve: {error}", file=sys.stderr)
        return 2
    finally:
        for emulator in reversed(emulators):
            emulator.stop()


@contextlib.contextmanager
def _server(workdir: Path) -> Iterator[tuple[Any, Any]]:
    from tests.gcp.test_serve_spanner import provision
    from tests.integration._proc import running_server
    from tests.integration.conftest import ADMIN_TOKEN

    stack = provision()
    # No key file: the server makes a development signing key in its data dir.
    env = {**stack.env(), "BILLING_LOG_LEVEL": "warning", "BILLING_ADMIN_TOKEN": ADMIN_TOKEN}
    with running_server(
        workdir,
        None,
        args=("--store", stack.store),
        env=env,
        name="serve",
    ) as server:
        yield server, stack


async def _bench(workdir: Path, seconds: float, clients: int, customer_count: int) -> int:
    from tests.integration._proc import client_session, remote_service

    with _server(workdir) as (server, stack):
        print(f"billing serve {server.url} on {stack.store}")
        print(
            f"  read model {stack.read_model}, broadcast {stack.broadcast}, archive {stack.archive}"
        )
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            gate = asyncio.Semaphore(setup_concurrency_max)

            async def create() -> Any:
                async with gate:
                    return await service.create_customer()

            started = time.perf_counter()
            customers = list(await asyncio.gather(*(create() for _ in range(customer_count))))
            print(f"  {customer_count} customers created in {time.perf_counter() - started:.1f}s")

            load = Load()
            stop = asyncio.Event()

            async def client(index: int) -> None:
                n = index
                while not stop.is_set():
                    customer = customers[n % len(customers)]
                    n += clients
                    sent = time.perf_counter()
                    try:
                        status, _, _ = await service.post_event(customer, service.event(customer))
                    except (TimeoutError, OSError) as error:
                        load.statuses[type(error).__name__] += 1
                        continue
                    load.statuses[str(status)] += 1
                    if status == 202:
                        load.latencies_s.append(time.perf_counter() - sent)

            async def watch() -> None:
                t0 = time.perf_counter()
                while not stop.is_set():
                    families = await _metrics(session)
                    load.backlog.append(
                        (time.perf_counter() - t0, _by_topic(families, "billing_outbox_backlog"))
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), metrics_poll_s)

            print(f"  {clients} clients over {customer_count} customers for {seconds:.0f}s ...")
            tasks = [asyncio.create_task(client(i)) for i in range(clients)]
            watcher = asyncio.create_task(watch())
            started = time.perf_counter()
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks, watcher)
            elapsed = time.perf_counter() - started

            drain_started = time.perf_counter()
            drained = False
            while time.perf_counter() - drain_started < drain_timeout_s:
                backlog = _by_topic(await _metrics(session), "billing_outbox_backlog")
                if backlog and not any(backlog.values()):
                    drained = True
                    break
                await asyncio.sleep(metrics_poll_s)
            drain_s = time.perf_counter() - drain_started
            families = await _metrics(session)
        _report(load, elapsed, families, drained, drain_s)
    return 0


async def _metrics(session: Any) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get("/metrics") as response:
        text = await response.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _by_topic(families: dict[str, Any], name: str) -> dict[str, float]:
    family = families.get(name)
    if family is None:
        return {}
    return {s.labels["topic"]: s.value for s in family.samples if s.name == name}


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _histogram_quantile(buckets: list[tuple[float, float]], q: float) -> str:
    """The upper bound of the bucket holding quantile q ('>' past the last)."""
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return "-"
    for bound, count in buckets:
        if count >= q * total:
            return f"<= {bound:g}s" if bound != float("inf") else f"> {buckets[-2][0]:g}s"
    return "-"


def _report(
    load: Load, elapsed: float, families: dict[str, Any], drained: bool, drain_s: float
) -> None:
    latencies = sorted(load.latencies_s)
    ok = load.statuses.get("202", 0)
    total = sum(load.statuses.values())
    print()
    print(f"charges      {ok} accepted of {total} requests in {elapsed:.1f}s")
    print(f"charges/s    {ok / elapsed:.1f}")
    print(
        f"latency      p50 {1000 * _quantile(latencies, 0.50):.1f} ms, "
        f"p99 {1000 * _quantile(latencies, 0.99):.1f} ms, "
        f"max {1000 * (latencies[-1] if latencies else float('nan')):.1f} ms (202s)"
    )
    errors = {k: v for k, v in sorted(load.statuses.items()) if k != "202"}
    print(f"errors       {sum(errors.values())} {errors or ''}".rstrip())

    topics = sorted({t for _, sample in load.backlog for t in sample})
    print("outbox backlog under load (billing_outbox_backlog, polled every 0.5s):")
    for topic in topics:
        values = [sample.get(topic, 0.0) for _, sample in load.backlog]
        mean = sum(values) / len(values) if values else 0.0
        print(
            f"  {topic:<20} max {max(values, default=0):>6.0f}  mean {mean:>8.1f}  "
            f"last {values[-1] if values else 0:>6.0f}"
        )
    print(
        f"  drained to 0 after the load in {drain_s:.1f}s"
        if drained
        else f"  NOT drained within {drain_timeout_s:.0f}s"
    )

    lag = families.get("billing_outbox_lag_seconds")
    print("outbox lag, commit to delivery (billing_outbox_lag_seconds):")
    if lag is None:
        print("  (no samples)")
        return
    per_topic: dict[str, dict[str, Any]] = {}
    for s in lag.samples:
        entry = per_topic.setdefault(s.labels["topic"], {"buckets": []})
        if s.name.endswith("_bucket"):
            entry["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_sum"):
            entry["sum"] = s.value
        elif s.name.endswith("_count"):
            entry["count"] = s.value
    for topic, entry in sorted(per_topic.items()):
        buckets = sorted(entry["buckets"])
        count = entry.get("count", 0.0)
        mean = entry.get("sum", 0.0) / count if count else float("nan")
        print(
            f"  {topic:<20} n {count:>6.0f}  mean {mean:.3f}s  "
            f"p50 {_histogram_quantile(buckets, 0.5)}  p99 {_histogram_quantile(buckets, 0.99)}"
        )


if __name__ == "__main__":
    sys.exit(main())
