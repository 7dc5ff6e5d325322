"""Does the service keep its throughput when its key is in Cloud KMS?

    python -m loadtest.bench_kms [--delay-ms 20] [--duration 20] [--rounds 2]

Runs the same closed-loop load (wrk, `--connections` 64, POST /v1/events
over `--customers`) against `billing serve` signing with a PEM key in the
process, then with a Cloud KMS key whose every signature takes `--delay-ms`
(the fake KMS of tests/fakes/kms_server.py, in a process of its own,
speaking KMS's REST wire format), alternating `--rounds` times in one run on
one machine. In checkpoint mode (the default) a commit signs one checkpoint,
one KMS round trip per commit, not per charge; the writer starts each
batch's signature as soon as its root is known, on top of batches still
signing or committing (ledger.limits.log_batches_inflight_max), and writes
the batch while KMS signs. Prints charges/s and latency per run, receipts
per commit and commit time (from the service's /metrics), KMS / PEM, and
the most a closed loop can give with that KMS: each charge waits for at
least one signature, so N connections give at most N / delay charges/s.

Needs wrk on the PATH, like loadtest.bench. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from loadtest.bench import (
    PhaseResult,
    create_customers,
    format_table,
    on_uvloop,
    open_loop,
    require_wrk,
    run_wrk,
)
from loadtest.run_locust import local_service, stop_process

fake_start_timeout_s = 30.0
scrape_timeout_s = 10.0
target_ratio = 0.90  # KMS charges/s over PEM charges/s


@dataclass
class Run:
    signer: str
    connections: int
    result: PhaseResult
    receipts_per_commit: float
    commit_ms: float


@contextmanager
def fake_kms(delay_ms: float, alg: str) -> Iterator[tuple[str, str]]:
    """The fake KMS in its own process: (endpoint, gcpkms:// key URI)."""
    argv = [sys.executable, "-m", "tests.fakes.kms_server", "--alg", alg]
    argv += ["--delay-ms", f"{delay_ms:g}"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + fake_start_timeout_s
        line = ""
        while time.monotonic() < deadline and not line.startswith("KMS_FAKE "):
            line = process.stdout.readline().decode("utf-8", "replace")
            if not line and process.poll() is not None:
                raise RuntimeError(f"the fake KMS exited with status {process.returncode}")
        if not line.startswith("KMS_FAKE "):
            raise RuntimeError("the fake KMS did not start")
        _, endpoint, uri = line.split()
        yield endpoint, uri
    finally:
        stop_process(process)


def _commit_totals(service_url: str) -> tuple[float, float, float]:
    """(commits, receipts committed, seconds committing) so far."""
    with urllib.request.urlopen(f"{service_url}/metrics", timeout=scrape_timeout_s) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = sample.value
    return (
        values.get("billing_commit_batch_receipts_count", 0.0),
        values.get("billing_commit_batch_receipts_sum", 0.0),
        values.get("billing_commit_latency_seconds_sum", 0.0),
    )


def measure(name: str, env: dict[str, str], args: argparse.Namespace, tmp: Path) -> list[Run]:
    """One service, its customers, then per connection count a warm-up and
    the measured wrk run."""
    runs: list[Run] = []
    with local_service(env=env, log_dir=tmp) as service:
        customers = asyncio.run(
            create_customers(service.url, service.admin_token, args.customers, secrets.token_hex(3))
        )
        customers_file = tmp / f"customers-{name}.txt"
        customers_file.write_text("".join(f"{cid} {key}\n" for cid, key in customers))

        def load(phase: str, connections: int, duration_s: float) -> PhaseResult:
            return run_wrk(
                phase,
                service.url,
                customers_file,
                connections=connections,
                duration_s=duration_s,
                threads=args.threads,
            )

        for connections in args.connections:
            if args.warmup > 0:
                load("warmup", connections, args.warmup)
            commits_0, receipts_0, seconds_0 = _commit_totals(service.url)
            result = load(name, connections, args.duration)
            commits_1, receipts_1, seconds_1 = _commit_totals(service.url)
            commits = max(1.0, commits_1 - commits_0)
            per_commit = (receipts_1 - receipts_0) / commits
            commit_ms = (seconds_1 - seconds_0) * 1e3 / commits
            runs.append(Run(name, connections, result, per_commit, commit_ms))
        if args.rate > 0:  # the per-instance target: a fixed rate, p99 from the send time
            result = on_uvloop(open_loop(service.url, customers, args.rate, args.duration, name))
            runs.append(Run(name, 0, result, 0.0, 0.0))
    return runs


def run(args: argparse.Namespace) -> int:
    require_wrk()
    load_1m, _, _ = os.getloadavg()
    print(
        f"bench_kms: {os.cpu_count()} CPUs, load average {load_1m:.1f} at start; "
        f"{args.connections} conns, {args.duration:g} s per run, KMS signature "
        f"{args.delay_ms:g} ms, {args.rounds} round(s), receipt signing: {args.receipt_signing}"
    )
    runs: list[Run] = []
    common = {"BILLING_RECEIPT_SIGNING": args.receipt_signing, "BILLING_SIGNING_ALG": args.alg}
    with (
        tempfile.TemporaryDirectory(prefix="billing-bench-kms-") as tmp,
        fake_kms(args.delay_ms, args.alg) as (endpoint, uri),
    ):
        kms_env = {**common, "BILLING_SIGNING_KEY": uri, "BILLING_KMS_ENDPOINT": endpoint}
        for round_index in range(args.rounds):
            for name, env in (("pem", common), ("kms", kms_env)):
                print(f"bench_kms: round {round_index + 1}, {name} ...", flush=True)
                runs.extend(measure(name, env, args, Path(tmp)))
    print()
    print(format_table([r.result for r in sorted(runs, key=lambda r: r.connections)]))
    print()
    for connections in args.connections:
        print(summary([r for r in runs if r.connections == connections], connections,
                      args.delay_ms))
    for signer in ("pem", "kms"):
        for r in (r for r in runs if r.connections == 0 and r.signer == signer):
            print(
                f"  open loop {args.rate:g}/s, {signer}: {r.result.accepted_per_s:.0f} charges/s,"
                f" p50 {r.result.p50_ms:.1f} ms, p99 {r.result.p99_ms:.1f} ms"
            )
    return 0


def summary(runs: Sequence[Run], connections: int, delay_ms: float) -> str:
    """Receipts per commit, commit time and KMS / PEM charges/s at one load."""
    lines: list[str] = []
    mean: dict[str, float] = {}
    for signer in ("pem", "kms"):
        mine = [r for r in runs if r.signer == signer]
        mean[signer] = sum(r.result.accepted_per_s for r in mine) / len(mine)
        per_commit = sum(r.receipts_per_commit for r in mine) / len(mine)
        commit_ms = sum(r.commit_ms for r in mine) / len(mine)
        p50 = sum(r.result.p50_ms for r in mine) / len(mine)
        lines.append(
            f"  {connections} conns, {signer}: {mean[signer]:.0f} charges/s, p50 {p50:.1f} ms,"
            f" {per_commit:.1f} receipts per commit, {commit_ms:.1f} ms per commit"
        )
    ratio = mean["kms"] / mean["pem"] if mean["pem"] else 0.0
    verdict = "meets" if ratio >= target_ratio else "MISSES"
    lines.append(
        f"  {connections} conns, KMS / PEM charges/s = {ratio:.2f}"
        f" ({verdict} the {target_ratio:.0%} target)"
    )
    if delay_ms > 0 and mean["pem"]:
        bound = connections / (delay_ms / 1000)  # Little's law, latency >= one signature
        lines.append(
            f"  {connections} conns, a {delay_ms:g} ms signature allows at most {bound:.0f}"
            f" charges/s in a closed loop ({bound / mean['pem']:.2f} of PEM's)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_kms",
        description="Charges/s with the PEM signer against Cloud KMS (a fake with a delay).",
    )
    parser.add_argument("--delay-ms", type=float, default=20.0, help="per KMS signature")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, not reported")
    parser.add_argument("--rounds", type=int, default=2, help="PEM then KMS, this many times")
    parser.add_argument("--connections", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument(
        "--rate", type=float, default=1_000.0, help="then an open loop at this rate (0: skip)"
    )
    parser.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    parser.add_argument(
        "--receipt-signing", choices=("checkpoint", "receipt"), default="checkpoint"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be at least 1 and --duration positive")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
