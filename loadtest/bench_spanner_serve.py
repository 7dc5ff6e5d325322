"""`billing serve` on Google Cloud storage (the emulators), driven over HTTP.

    .venv/bin/python -m loadtest.bench_spanner_serve [--seconds 20] [--clients 16]
                                                     [--customers 50]

Starts the Spanner, Firestore, Pub/Sub and Cloud Storage emulators (Google
Cloud CLI required), runs `billing migrate --create`, creates the topic and
the bucket, starts one `billing serve --store spanner://...` with
BILLING_READ_MODEL / BILLING_BROADCAST / BILLING_ARCHIVE on 127.0.0.1, creates
the customers, then `--clients` concurrent clients charge round-robin over
them for `--seconds`. Prints charges/s, p50/p99 latency, the answers that
were not 202, and the outbox per topic, polled from /metrics every half second
under the load and after it until the backlog is drained: the backlog
(`billing_outbox_backlog`) and the lag, the age of the oldest undelivered
message (`billing_outbox_oldest_age_seconds`); then how long each topic's
backlog took to reach zero after the load stopped (the relay measures its
backlog once a second: that is the resolution), and the
`billing_outbox_lag_seconds` histogram (commit to delivery, per sink).

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


@dataclass(frozen=True)
class OutboxSample:
    """One poll of /metrics, `at_s` seconds after the load started."""

    at_s: float
    backlog: dict[str, float]
    lag_s: dict[str, float]


@dataclass
class Load:
    latencies_s: list[float] = field(default_factory=list)  # of the 202s
    statuses: Counter[str] = field(default_factory=Counter)
    during: list[OutboxSample] = field(default_factory=list)
    after: list[OutboxSample] = field(default_factory=list)  # until drained


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
    from tests.gcp._stack import provision
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

            started = time.perf_counter()

            async def watch() -> None:
                while not stop.is_set():
                    load.during.append(await _outbox_sample(session, started))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), metrics_poll_s)

            print(f"  {clients} clients over {customer_count} customers for {seconds:.0f}s ...")
            tasks = [asyncio.create_task(client(i)) for i in range(clients)]
            watcher = asyncio.create_task(watch())
            await asyncio.sleep(seconds)
            stop.set()
            stopped = time.perf_counter()
            await asyncio.gather(*tasks, watcher)
            elapsed = stopped - started

            while time.perf_counter() - stopped < drain_timeout_s:
                sample = await _outbox_sample(session, started)
                load.after.append(sample)
                if sample.backlog and not any(sample.backlog.values()):
                    break
                await asyncio.sleep(metrics_poll_s)
            families = await _metrics(session)
        _report(load, elapsed, families)
    return 0


async def _outbox_sample(session: Any, started: float) -> OutboxSample:
    families = await _metrics(session)
    return OutboxSample(
        time.perf_counter() - started,
        _by_topic(families, "billing_outbox_backlog"),
        _by_topic(families, "billing_outbox_oldest_age_seconds"),
    )


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


def _report(load: Load, elapsed: float, families: dict[str, Any]) -> None:
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

    _report_outbox(load, elapsed)

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


def _report_outbox(load: Load, elapsed: float) -> None:
    samples = load.during + load.after
    topics = sorted({t for sample in samples for t in (*sample.backlog, *sample.lag_s)})
    print(
        f"outbox, polled every {metrics_poll_s:g}s: backlog = undelivered messages, "
        "lag = age of the oldest one"
    )
    for title, phase in (("under load", load.during), ("after the load", load.after)):
        print(f"  {title} ({len(phase)} polls)")
        for topic in topics:
            backlog = [sample.backlog.get(topic, 0.0) for sample in phase]
            lag_s = [sample.lag_s.get(topic, 0.0) for sample in phase]
            print(f"    {topic:<20} backlog  {_series(backlog, '.0f')}")
            print(f"    {'':<20} lag (s)  {_series(lag_s, '.1f')}")
    print(f"  backlog drained to 0 after the load stopped (at {elapsed:.1f}s):")
    for topic in topics:
        drained_at = next((s.at_s for s in load.after if s.backlog.get(topic, 1.0) == 0), None)
        print(
            f"    {topic:<20} NOT within {drain_timeout_s:.0f}s"
            if drained_at is None
            else f"    {topic:<20} in {max(0.0, drained_at - elapsed):.1f}s"
        )


def _series(values: list[float], spec: str) -> str:
    """first / max / mean / last of a polled series."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return (
        f"first {values[0]:>6{spec}} max {max(values):>6{spec}} "
        f"mean {mean:>8.1f} last {values[-1]:>6{spec}}"
    )


if __name__ == "__main__":
    sys.exit(main())
