"""`make bench`: fixed loads against a local `billing serve`, next to a trivial
aiohttp handler measured in the same run on the same machine.

Phases (each a short fixed run; all durations are options):

1. trivial   - wrk, `--connections` (64) for `--duration` (30 s) against
               loadtest/trivial_server.py (aiohttp + uvloop): the ceiling.
2. sustained - the same wrk load against the service, POST /v1/events spread
               over `--customers` (1,000) customers, every key unique.
3. rate      - an open-loop generator (loadtest/open_loop.py) offering `--rate`
               (1,000) req/s; latency counts from the intended send time, so a
               slow server cannot hide behind a slow client.
4. overload  - `--overload-factor` (3) x the sustained rate, open loop; above
               `--open-loop-max`, wrk with that many times the admission bound
               in connections instead. Only 202s and 429s are fine.
5. batch     - (`--batch`) POST /v1/events/batch: events/s against single events/s.

wrk must be on the PATH (`apt-get install wrk`). Targets 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

from gateway.open_files import raise_open_files_limit
from loadtest import cpu_budget
from loadtest.open_loop import offer_open_loop
from loadtest.run_locust import free_port, local_service, stop_process, wait_ready

LOADTEST_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = LOADTEST_DIR / "wrk" / "events.lua"
ENTITLEMENT_ID = "api_calls"
# Admin requests in flight while creating customers.
setup_concurrency_max = 32
setup_timeout_s = 120.0
# wrk gets its duration plus this long before it is killed.
wrk_grace_s = 30.0
# The open-loop generator never has more than this many requests outstanding
# (sent or waiting for a connection); beyond it, sends are counted as dropped
# instead of piling up without bound.
open_loop_inflight_max = 2_000
# Kept-alive connections of the open-loop generator, like wrk2's -c: a fleet
# of clients with connection pools. Opening a new connection whenever all were
# busy made the overload a connect storm (~1,700 in the first 0.4 s) that sat
# in the accept queue for seconds, measuring the kernel's backlog instead of
# the service's answers.
open_loop_connections_max = 256
# Files a process of the bench needs besides the overload's connections.
open_files_margin = 1_024
open_loop_drain_s = 15.0
# A request unanswered after this long counts as an error (no answer).
open_loop_timeout_s = 10.0
# The phase repeating the overload's load on the trivial handler (a baseline).
TRIVIAL_OVERLOAD = "triv-ovl"
T = TypeVar("T")
_RESULT_RE = re.compile(r"^WRK_RESULT (\{.*\})$", re.MULTILINE)


@dataclass
class PhaseResult:
    name: str
    load: str
    duration_s: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0  # connect/read/write/timeout: no HTTP answer at all
    error_kinds: Counter[str] = field(default_factory=Counter)  # wrk's split of `errors`
    connections: int = 0  # wrk phases: the closed-loop concurrency
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    events_per_request: int = 1
    items_accepted: int | None = None
    dropped: int = 0  # open loop only: sends skipped at the client's in-flight bound
    offered_per_s: float = 0.0  # open loop only: the rate offered
    # Open loop only: of the 2xx answers alone (the overload target is on these).
    accepted_p50_ms: float | None = None
    accepted_p99_ms: float | None = None
    note: str = ""

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def requests_per_s(self) -> float:
        return self.answered / self.duration_s if self.duration_s else 0.0

    @property
    def accepted_per_s(self) -> float:
        """Charges (events) accepted per second."""
        if self.items_accepted is not None:
            return self.items_accepted / self.duration_s if self.duration_s else 0.0
        ok = self.statuses[202] + self.statuses[200]
        return ok * self.events_per_request / self.duration_s if self.duration_s else 0.0

    @property
    def others(self) -> int:
        return self.answered - self.statuses[202] - self.statuses[200] - self.statuses[429]


class BenchError(Exception):
    """A failure to report as one line."""


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not installed. On Debian/Ubuntu: `apt-get install -y wrk` (as root), "
            "then run `make bench` again."
        )
    return path


async def create_customers(
    url: str, admin_token: str, count: int, run_id: str
) -> list[tuple[str, str]]:
    """`count` customers with an API key and an unlimited entitlement, concurrently."""
    headers = {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"}
    gate = asyncio.Semaphore(setup_concurrency_max)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=setup_concurrency_max)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with session.request(
                method, url + path, data=orjson.dumps(body), headers=headers
            ) as resp:
                payload = await resp.read()
                if resp.status not in (200, 201):
                    raise BenchError(f"{method} {path} -> {resp.status}: {payload[:200]!r}")
                result: dict[str, Any] = orjson.loads(payload)
                return result

        async def one(index: int) -> tuple[str, str]:
            async with gate:
                wanted = f"bench_{run_id}_{index}"
                created = await call(
                    "POST",
                    "/v1/customers",
                    {"customer_id": wanted, "email": f"{wanted}@127.0.0.1", "currency": "USD"},
                )
                cid = str(created.get("customer_id") or wanted)
                key = await call("POST", f"/v1/customers/{cid}/api-keys", {})
                await call(
                    "PUT",
                    f"/v1/customers/{cid}/entitlements/{ENTITLEMENT_ID}",
                    {"quota": None, "policy": "soft", "status": "active"},
                )
                return cid, str(key["api_key"])

        return await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(count))), setup_timeout_s
        )


def run_wrk(
    name: str,
    url: str,
    customers_file: Path,
    *,
    connections: int,
    duration_s: float,
    threads: int,
    batch_size: int = 0,
    load: str = "",
) -> PhaseResult:
    """One wrk run with the events script; parses its WRK_RESULT line."""
    run_id = f"{name}-{secrets.token_hex(4)}"
    argv = [
        require_wrk(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(customers_file),
        run_id,
        str(batch_size),
    ]
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + wrk_grace_s, check=False
    )
    match = _RESULT_RE.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        raise BenchError(
            f"wrk failed in phase {name} (exit {completed.returncode}): "
            f"{(completed.stderr or completed.stdout)[-500:]}"
        )
    data = orjson.loads(match.group(1))
    error_kinds = Counter(
        {kind: int(data["errors"][kind]) for kind in ("connect", "read", "write", "timeout")}
    )
    latency = data["latency_us"]
    result = PhaseResult(
        name=name,
        load=load or f"{connections} conns",
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        statuses=Counter({int(k): int(v) for k, v in data["statuses"].items()}),
        errors=sum(error_kinds.values()),
        error_kinds=error_kinds,
        p50_ms=latency["p50"] / 1000,
        p95_ms=latency["p95"] / 1000,
        p99_ms=latency["p99"] / 1000,
        events_per_request=max(1, batch_size),
        items_accepted=int(data["items_accepted"]) if batch_size else None,
    )
    return result


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def event_requests(
    url: str, customers: Sequence[tuple[str, str]], run_id: str
) -> Callable[[int], bytes]:
    """Request `i` as bytes: POST /v1/events for customer `i mod n`, a unique key each."""
    from datetime import UTC, datetime

    host = urlsplit(url).netloc
    heads = [
        (
            cid,
            f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: ",
        )
        for cid, key in customers
    ]

    def build(index: int) -> bytes:
        cid, head = heads[index % len(heads)]
        body = orjson.dumps(
            {
                "idempotent_key": f"rate-{run_id}-{index}",
                "customer_id": cid,
                "entitlement_id": ENTITLEMENT_ID,
                "amount": "0.25",
                "currency": "USD",
                "usage_description": "bench rate",
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        return f"{head}{len(body)}\r\n\r\n".encode() + body

    return build


async def open_loop(
    url: str,
    customers: Sequence[tuple[str, str]],
    rate: float,
    duration_s: float,
    name: str = "rate",
    connections: int = open_loop_connections_max,
    prewarm: bool = False,
) -> PhaseResult:
    """Offer `rate` req/s for `duration_s` over at most `connections`
    connections (all open beforehand with `prewarm`), whatever the answers do."""
    split = urlsplit(url)
    if split.hostname is None or split.port is None:
        raise BenchError(f"the open loop needs a URL with a host and a port, not {url!r}")
    counts = await offer_open_loop(
        split.hostname,
        split.port,
        event_requests(url, customers, secrets.token_hex(4)),
        rate,
        duration_s,
        connections_max=connections,
        inflight_max=open_loop_inflight_max,
        timeout_s=open_loop_timeout_s,
        drain_s=open_loop_drain_s,
        prewarm=prewarm,
    )
    sent = int(rate * duration_s) - counts.dropped
    achieved = sent / counts.sent_for_s if counts.sent_for_s else 0.0
    note = f"generator sent {achieved:.0f}/s"
    if counts.dropped:
        note += (
            f", {counts.dropped} not sent: {open_loop_inflight_max} requests were already"
            " waiting (the service fell behind the offered rate)"
        )
    if counts.unfinished:
        note += f", {counts.unfinished} unanswered after a {open_loop_drain_s:g} s drain"
    if counts.error_kinds:
        note += "; failed requests: " + ", ".join(
            f"{count} {kind}" for kind, count in counts.error_kinds.most_common()
        )
    latencies_ms = counts.latencies_ms
    return PhaseResult(
        name=name,
        load=f"{rate:.0f}/s open",
        duration_s=counts.elapsed_s,
        connections=connections,
        offered_per_s=rate,
        statuses=counts.statuses,
        errors=counts.errors + counts.unfinished,
        error_kinds=counts.error_kinds,
        dropped=counts.dropped,
        p50_ms=_percentile(latencies_ms, 0.50),
        p95_ms=_percentile(latencies_ms, 0.95),
        p99_ms=_percentile(latencies_ms, 0.99),
        accepted_p50_ms=_percentile(counts.accepted_latencies_ms, 0.50),
        accepted_p99_ms=_percentile(counts.accepted_latencies_ms, 0.99),
        note=note,
    )


def on_uvloop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on its own uvloop event loop, as the service runs."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def format_table(results: Sequence[PhaseResult]) -> str:
    header = (
        f"{'phase':<10} {'load':<14} {'req/s':>8} {'charges/s':>10} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p99 ms':>8} {'2xx':>8} {'429':>7} {'other':>6} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        ok = r.statuses[202] + r.statuses[200]
        lines.append(
            f"{r.name:<10} {r.load:<14} {r.requests_per_s:>8.0f} {r.accepted_per_s:>10.0f} "
            f"{r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {r.p99_ms:>8.1f} {ok:>8} "
            f"{r.statuses[429]:>7} {r.others:>6} {r.errors:>6}"
        )
    return "\n".join(lines)


def _error_kinds(result: PhaseResult) -> str:
    """wrk's split of the transport errors, e.g. " (12 timeout, 20 read)": a
    timeout is a request the service left unanswered, a read error mostly a
    connection wrk closed at the end of the phase."""
    kinds = [f"{count} {kind}" for kind, count in result.error_kinds.most_common() if count]
    return f" ({', '.join(kinds)})" if kinds else ""


def _other_statuses(result: PhaseResult) -> str:
    other = {s: n for s, n in result.statuses.items() if s not in (200, 202, 429)}
    return ", ".join(f"{s}: {n}" for s, n in sorted(other.items()))


def run_overload(
    args: argparse.Namespace,
    url: str,
    customers: Sequence[tuple[str, str]],
    customers_file: Path,
    sustained: PhaseResult,
) -> PhaseResult:
    """Offer `overload_factor` x the sustained rate, open loop, over that many
    times the admission bound in connections, all open beforehand: enough
    concurrency to pass the bound, without a connect storm. Past
    `open_loop_max`, wrk with that many connections (closed loop)."""
    offered = args.overload_factor * sustained.requests_per_s
    connections = int(args.overload_factor * args.admission_queue_max)
    if 0 < offered <= args.open_loop_max:
        print(
            f"bench: overload, open loop at {offered:.0f} req/s over {connections} connections,"
            f" {args.overload_duration:g} s ..."
        )
        result = on_uvloop(
            open_loop(
                url, customers, offered, args.overload_duration, "overload", connections, True
            )
        )
        result.note = (
            f"offered {args.overload_factor:g}x the sustained rate ({offered:.0f} req/s) over"
            f" {connections} open connections; accepted p50 {result.accepted_p50_ms or 0:.0f} ms,"
            f" p99 {result.accepted_p99_ms or 0:.0f} ms; {result.note}"
        )
        return result
    print(f"bench: overload, wrk {connections} conns, {args.overload_duration:g} s ...")
    result = run_wrk(
        "overload",
        url,
        customers_file,
        connections=connections,
        duration_s=args.overload_duration,
        threads=args.threads,
    )
    factor = result.requests_per_s / sustained.requests_per_s if sustained.requests_per_s else 0
    result.note = (
        f"{connections} connections = {args.overload_factor:g}x the admission bound in flight;"
        f" answered {factor:.1f}x the sustained request rate"
    )
    return result


def run_trivial_overload(
    tmp_dir: Path, args: argparse.Namespace, overload: PhaseResult
) -> PhaseResult:
    """The overload phase's load, repeated on the trivial handler: the baseline."""
    if overload.offered_per_s:
        print(
            f"bench: trivial handler under the same overload,"
            f" {overload.offered_per_s:.0f} req/s open ..."
        )
        with trivial_target(tmp_dir) as (_, trivial_url, _):
            return on_uvloop(
                open_loop(
                    trivial_url,
                    [("cus_trivial", "sk_test_trivial")],
                    overload.offered_per_s,
                    args.overload_duration,
                    TRIVIAL_OVERLOAD,
                    overload.connections,
                    True,
                )
            )
    print(f"bench: trivial handler under the same overload, {overload.connections} conns ...")
    return run_trivial(
        tmp_dir, TRIVIAL_OVERLOAD, overload.connections, args.overload_duration, args.threads
    )


@contextlib.contextmanager
def trivial_target(tmp_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The trivial server, its URL and a customers file for the wrk script;
    the server is stopped on exit."""
    trivial, trivial_url = start_trivial_server(tmp_dir)
    script_input = tmp_dir / "trivial-customers.txt"
    # The trivial server ignores auth; the file only feeds the script.
    script_input.write_text("cus_trivial sk_test_trivial\n")
    try:
        yield trivial, trivial_url, script_input
    finally:
        stop_process(trivial)


def run_trivial(
    tmp_dir: Path, name: str, connections: int, duration_s: float, threads: int
) -> PhaseResult:
    """The same wrk load against the trivial handler: this machine's ceiling."""
    with trivial_target(tmp_dir) as (_, trivial_url, script_input):
        return run_wrk(
            name,
            trivial_url,
            script_input,
            connections=connections,
            duration_s=duration_s,
            threads=threads,
        )


def start_trivial_server(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log_file = (log_dir / f"trivial-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtest.trivial_server", "--port", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/readyz", process, 30.0)
    except RuntimeError:
        stop_process(process)
        raise
    return process, url


def run_bench(args: argparse.Namespace) -> int:
    require_wrk()
    results: list[PhaseResult] = []
    notes: list[str] = []
    # Every overload connection is a file in this process (and in the service,
    # which raises its own limit), plus the files each needs anyway.
    warning = raise_open_files_limit(
        int(args.overload_factor * args.admission_queue_max) + open_files_margin
    )
    if warning:
        print(f"bench: {warning}")
        notes.append(f"overload: {warning}")
    overload: PhaseResult | None = None  # repeated on the trivial handler
    budgets: list[cpu_budget.CpuBudget] = []
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as tmp:
        tmp_dir = Path(tmp)
        load_1m, _, _ = os.getloadavg()
        print(
            f"bench: {os.cpu_count()} CPUs, load average {load_1m:.1f} at start;"
            f" wrk -t{args.threads}; service and load generators share this machine"
        )

        print(f"bench: trivial handler, {args.connections} conns, {args.duration:g} s ...")
        results.append(
            run_trivial(tmp_dir, "trivial", args.connections, args.duration, args.threads)
        )
        customers_file = tmp_dir / "customers.txt"

        sustained_by_mode: dict[str, PhaseResult] = {}
        for mode_index, mode in enumerate(args.signing_modes):
            first_mode = mode_index == 0

            def named(phase: str, mode: str = mode) -> str:
                """Phase names carry the signing mode when several are compared."""
                return phase if len(args.signing_modes) == 1 else f"{phase}[{mode}]"

            env = {"BILLING_RECEIPT_SIGNING": mode}
            with local_service(log_dir=tmp_dir, env=env) as service:
                started = time.monotonic()
                customers = asyncio.run(
                    create_customers(
                        service.url, service.admin_token, args.customers, secrets.token_hex(3)
                    )
                )
                setup_s = time.monotonic() - started
                print(
                    f"bench: service ({mode} signing) at {service.url};"
                    f" {len(customers)} customers in {setup_s:.1f} s"
                )
                customers_file.write_text("".join(f"{cid} {key}\n" for cid, key in customers))

                def wrk_service(name: str, connections: int, duration_s: float) -> PhaseResult:
                    return run_wrk(
                        name,
                        service.url,
                        customers_file,
                        connections=connections,
                        duration_s=duration_s,
                        threads=args.threads,
                    )

                def measured(run_phase: Callable[[], PhaseResult]) -> PhaseResult:
                    """Run a service phase and keep its result and its CPU per charge."""
                    before = cpu_budget.sample(service.url)
                    result = run_phase()
                    result = dataclasses.replace(result, name=named(result.name))
                    charges = round(result.accepted_per_s * result.duration_s)
                    budget = cpu_budget.budget(
                        result.name, before, cpu_budget.sample(service.url), charges
                    )
                    if budget is not None:
                        budgets.append(budget)
                    results.append(result)
                    return result

                if args.warmup > 0:
                    wrk_service("warmup", args.connections, args.warmup)
                print(f"bench: sustained, {args.connections} conns, {args.duration:g} s ...")
                sustained = measured(
                    lambda: wrk_service("sustained", args.connections, args.duration)
                )
                sustained_by_mode[mode] = sustained
                if args.rate > 0 and first_mode:
                    time.sleep(args.settle)
                    print(f"bench: open loop at {args.rate:g} req/s, {args.rate_duration:g} s ...")
                    rate = measured(
                        lambda customers=customers: on_uvloop(
                            open_loop(service.url, customers, args.rate, args.rate_duration)
                        )
                    )
                    notes.append(f"rate: {rate.note}")
                if args.overload_factor > 0 and first_mode:
                    time.sleep(args.settle)
                    overload = run_overload(args, service.url, customers, customers_file, sustained)
                    results.append(overload)
                    notes.append(f"overload: {overload.note}")
                    if overload.others or overload.errors:
                        notes.append(
                            f"overload: NOT only 202/429 - other statuses "
                            f"{_other_statuses(overload) or 'none'}, {overload.errors} requests"
                            f" without an answer (transport error or none within"
                            f" {open_loop_timeout_s:g} s){_error_kinds(overload)}"
                        )
                    elif not overload.statuses[429]:
                        notes.append(
                            "overload: no 429 - requests queued before admission (event loop or"
                            " socket backlog) instead of being shed"
                        )
                    else:
                        notes.append("overload: only 202 and 429 answers, no transport errors")
                if args.batch:
                    time.sleep(args.settle)
                    print(f"bench: batch of {args.batch_size}, {args.batch_connections} conns ...")
                    batch = measured(
                        lambda: run_wrk(
                            "batch",
                            service.url,
                            customers_file,
                            connections=args.batch_connections,
                            duration_s=args.batch_duration,
                            threads=args.threads,
                            batch_size=args.batch_size,
                            load=f"{args.batch_connections}c x{args.batch_size}",
                        )
                    )
                    if sustained.accepted_per_s:
                        notes.append(
                            f"{named('batch')}: {batch.accepted_per_s:.0f} events/s = "
                            f"{batch.accepted_per_s / sustained.accepted_per_s:.2f}x"
                            " single events/s"
                        )
                    if batch.statuses[429] and not batch.items_accepted:
                        notes.append(
                            "batch: every batch got 429 - a batch takes one admission slot"
                            " per event;"
                            " lower --batch-size below BILLING_CUSTOMER_INFLIGHT_MAX"
                        )
        if overload is not None:  # after the service stopped
            baseline = run_trivial_overload(tmp_dir, args, overload)
            results.append(baseline)
            notes.append(
                f"overload: the trivial handler under the same load:"
                f" {baseline.errors} requests without an answer{_error_kinds(baseline)},"
                f" p99 {baseline.p99_ms:.0f} ms (what one event loop on this machine gives"
                " that load)"
            )
    sustained = sustained_by_mode[args.signing_modes[0]]
    print()
    print(format_table(results))
    print()
    trivial_result = results[0]
    if trivial_result.requests_per_s:
        notes.insert(
            0,
            f"sustained/trivial: {sustained.requests_per_s:.0f} / "
            f"{trivial_result.requests_per_s:.0f} req/s = "
            f"{sustained.requests_per_s / trivial_result.requests_per_s:.2f}",
        )
    for result in results:
        if result.name not in ("overload", TRIVIAL_OVERLOAD) and (result.others or result.errors):
            notes.append(
                f"{result.name}: unexpected answers {_other_statuses(result) or 'none'},"
                f" {result.errors} transport errors{_error_kinds(result)}"
            )
    if len(sustained_by_mode) > 1:
        rates = {m: r.accepted_per_s for m, r in sustained_by_mode.items()}
        base_mode, base_rate = next(iter(rates.items()))
        for other, rate in list(rates.items())[1:]:
            if rate:
                notes.append(
                    f"signing: {base_mode} {base_rate:.0f} charges/s = "
                    f"{base_rate / rate:.2f}x {other} {rate:.0f} charges/s"
                )
    for note in notes:
        print(f"  {note}")
    if budgets:
        print()
        print(cpu_budget.format_budgets(budgets, os.cpu_count() or 1))
        print(
            "\n  CPU of the service's threads and signing processes (its"
            " billing_*_cpu_seconds_total counters) and of this bench and wrk, divided by"
            " the charges accepted in the phase"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Benchmark billing serve with wrk against a trivial aiohttp handler.",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="trivial/sustained seconds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, not reported")
    parser.add_argument("--rate", type=float, default=1_000.0, help="open-loop req/s (0: skip)")
    parser.add_argument("--rate-duration", type=float, default=15.0)
    parser.add_argument(
        "--overload-factor", type=float, default=3.0, help="x sustained rate offered; 0 skips"
    )
    parser.add_argument(
        "--open-loop-max",
        type=float,
        default=6_000.0,
        help="highest rate the open-loop generator offers (it used 0.25 CPU at 4,000/s);"
        " above it overload uses wrk",
    )
    parser.add_argument(
        "--admission-queue-max",
        type=int,
        default=1_000,
        help="the service's admission bound (sizes the wrk overload fallback)",
    )
    parser.add_argument("--overload-duration", type=float, default=15.0)
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds between service phases, so one phase's backlog drains before the next",
    )
    parser.add_argument("--batch", action="store_true", help="add the batch phase")
    parser.add_argument(
        "--signing-modes",
        type=lambda text: [m for m in text.split(",") if m],
        default=["checkpoint"],
        help="comma-separated BILLING_RECEIPT_SIGNING modes to compare in one run"
        " (sustained and batch phases per mode; rate and overload on the first)",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--batch-duration", type=float, default=15.0)
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
