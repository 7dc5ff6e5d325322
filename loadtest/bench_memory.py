"""Memory and start-up benchmark (not a test; prints figures):
`python -m loadtest.bench_memory [--customers N] [--seed ledger|http] [--idle-s S]`.

Starts `billing serve` on a fresh data directory, gives N customers a key and
an entitlement each (`--seed http`: through the admin API, concurrently;
`--seed ledger`: written to the SQLite ledger through the ledger API before
the service starts, far faster on 2 cores), then charges each customer once
over HTTP (which starts its account actor). It samples the service's RSS
(VmRSS) at ready, every `--sample-every` customers touched and after the
idle actors were passivated, then restarts the service on the same data
directory and times spawn to `/readyz` 200.

Budgets (issue 20): RSS at most 512 MiB with 100,000 customers touched;
start to ready at most 2 s with an existing data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from ledger import Customer, Entitlement
from ledger.api_keys import issue_api_key
from ledger.clock import utc_now_rfc3339
from ledger.sqlite import SqliteLedger
from loadtest.run_locust import billing_command, free_port, stop_process, wait_ready

RSS_BUDGET_MIB = 512
READY_BUDGET_S = 2.0
_LIVE_ACTORS = re.compile(rb"^billing_live_account_actors (\S+)$", re.M)


@dataclass
class Figures:
    rows: list[tuple[str, float, str]] = field(default_factory=list)

    def add(self, what: str, value: float, unit: str) -> None:
        self.rows.append((what, value, unit))
        print(f"  {what:<52} {value:>10.1f} {unit}", flush=True)

    def table(self) -> str:
        lines = [f"{'measurement':<52} {'value':>10} unit", "-" * 70]
        lines += [f"{what:<52} {value:>10.1f} {unit}" for what, value, unit in self.rows]
        return "\n".join(lines)


def rss_mib(pid: int) -> float:
    """The process's resident set (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    url: str
    ready_s: float


def start_service(data_dir: Path, env: dict[str, str], log_path: Path) -> Running:
    """Spawn `billing serve` and time it to its first /readyz 200."""
    port = free_port()
    child_env = {**os.environ, **env, "BILLING_PORT": str(port), "BILLING_HOST": "127.0.0.1",
                 "BILLING_DATA_DIR": str(data_dir)}
    with log_path.open("ab") as log_file:
        started_s = time.perf_counter()
        process = subprocess.Popen(
            billing_command(port, data_dir), stdout=log_file, stderr=subprocess.STDOUT,
            env=child_env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready_fast(url + "/readyz", process, timeout_s=300.0)
    except BaseException:
        stop_process(process)
        raise
    return Running(process, url, time.perf_counter() - started_s)


def _wait_ready_fast(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """As run_locust.wait_ready, polling every 20 ms so the time is not rounded up."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    wait_ready(url, process, 0.0)  # raises with the last error


def seed_ledger(data_dir: Path, customers: int) -> list[tuple[str, str]]:
    """(customer id, API key secret) per customer, written through the ledger API."""
    store = SqliteLedger.open(data_dir / "ledger.sqlite3")
    now = utc_now_rfc3339()
    seeded: list[tuple[str, str]] = []
    try:
        for n in range(customers):
            customer_id = f"cus_mem{n:07d}"
            store.create_customer(Customer(customer_id, f"{customer_id}@example.com", "USD", now))
            entitlement = Entitlement(customer_id, "api_calls", None, "soft", "active", now)
            store.put_entitlement(entitlement)
            _, secret = issue_api_key(store, customer_id, now)
            seeded.append((customer_id, secret))
    finally:
        store.close()
    return seeded


async def seed_http(
    session: aiohttp.ClientSession, url: str, admin_token: str, customers: int, concurrency: int
) -> list[tuple[str, str]]:
    admin = {"Authorization": f"Bearer {admin_token}"}
    seeded: list[tuple[str, str]] = []

    async def one(n: int) -> None:
        customer_id = f"cus_mem{n:07d}"
        body = {"customer_id": customer_id, "email": f"{customer_id}@example.com",
                "currency": "USD"}
        async with session.post(f"{url}/v1/customers", json=body, headers=admin) as resp:
            _expect(resp, 201)
        path = f"{url}/v1/customers/{customer_id}"
        async with session.put(f"{path}/entitlements/api_calls",
                               json={"quota": None, "policy": "soft"}, headers=admin) as resp:
            _expect(resp, 200)
        async with session.post(f"{path}/api-keys", headers=admin) as resp:
            _expect(resp, 201)
            seeded.append((customer_id, (await resp.json())["api_key"]))

    await _in_parallel(one, range(customers), concurrency)
    return seeded


def _expect(resp: aiohttp.ClientResponse, status: int) -> None:
    if resp.status != status:
        raise RuntimeError(f"{resp.method} {resp.url}: {resp.status}, expected {status}")


async def _in_parallel(work, items, concurrency: int) -> None:  # type: ignore[no-untyped-def]
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def charge_once(
    session: aiohttp.ClientSession, url: str, customer_id: str, secret: str
) -> None:
    """One charge; a 429 (admission) is retried after a short pause."""
    body = {"customer_id": customer_id, "entitlement_id": "api_calls", "amount": "0.01",
            "currency": "USD", "usage_description": "bench_memory",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "idempotent_key": "mem-" + secrets.token_hex(8)}
    headers = {"Authorization": f"Bearer {secret}"}
    for _ in range(50):
        async with session.post(f"{url}/v1/events", json=body, headers=headers) as resp:
            if resp.status == 429:
                await asyncio.sleep(0.05)
                continue
            if resp.status // 100 != 2:  # 200 replayed/processed, 202 accepted
                _expect(resp, 200)
            return
    raise RuntimeError(f"charge for {customer_id} still refused after 50 tries")


async def live_actors(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/metrics") as resp:
        match = _LIVE_ACTORS.search(await resp.read())
    return int(float(match.group(1))) if match else -1


async def touch_all(
    running: Running, seeded: list[tuple[str, str]], args: argparse.Namespace, figures: Figures,
    admin_token: str,
) -> None:
    pid = running.process.pid
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.seed == "http":
            began_s = time.perf_counter()
            seeded[:] = await seed_http(session, running.url, admin_token, args.customers,
                                        args.concurrency)
            figures.add("seed over HTTP (customer, entitlement, key)",
                        args.customers / (time.perf_counter() - began_s), "customers/s")
            figures.add("RSS after seeding over HTTP", rss_mib(pid), "MiB")
        began_s = time.perf_counter()
        for start in range(0, len(seeded), args.sample_every):
            chunk = seeded[start:start + args.sample_every]
            await _in_parallel(lambda item: charge_once(session, running.url, *item), chunk,
                               args.concurrency)
            touched = start + len(chunk)
            figures.add(f"RSS, {touched:,} customers touched "
                        f"({await live_actors(session, running.url):,} actors live)",
                        rss_mib(pid), "MiB")
        figures.add("charges/s while touching (first charge of each customer)",
                    len(seeded) / (time.perf_counter() - began_s), "charges/s")
        deadline_s = time.monotonic() + args.idle_s * 4 + 30
        while await live_actors(session, running.url) > 0 and time.monotonic() < deadline_s:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        figures.add(f"RSS after passivation ({await live_actors(session, running.url):,} live)",
                    rss_mib(pid), "MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", choices=("ledger", "http"), default="ledger")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-every", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=60.0,
                        help="BILLING_ACCOUNT_IDLE_S of the service (its default: 60)")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the data directory here")
    args = parser.parse_args(argv)
    admin_token = "adm_" + secrets.token_urlsafe(24)
    env = {"BILLING_ADMIN_TOKEN": admin_token, "BILLING_ACCOUNT_IDLE_S": str(args.idle_s)}
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        data_dir = args.keep or Path(tmp) / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = Path(tmp) / "service.log"
        seeded: list[tuple[str, str]] = []
        print(f"{args.customers:,} customers, seed={args.seed}, idle_s={args.idle_s}, "
              f"concurrency={args.concurrency}", flush=True)
        if args.seed == "ledger":
            began_s = time.perf_counter()
            seeded = seed_ledger(data_dir, args.customers)
            figures.add("seed through the ledger API", args.customers /
                        (time.perf_counter() - began_s), "customers/s")
        running = start_service(data_dir, env, log_path)
        try:
            figures.add("start to ready (seeded, no receipts)", running.ready_s, "s")
            figures.add("RSS at ready", rss_mib(running.process.pid), "MiB")
            asyncio.run(touch_all(running, seeded, args, figures, admin_token))
        finally:
            stop_process(running.process)
        for attempt in range(1, args.restarts + 1):
            running = start_service(data_dir, env, log_path)
            try:
                figures.add(f"start to ready, existing data dir (run {attempt})",
                            running.ready_s, "s")
                figures.add(f"RSS at ready after restart (run {attempt})",
                            rss_mib(running.process.pid), "MiB")
            finally:
                stop_process(running.process)
        audit = re.findall(r'"?duration_s"?[=:] ?([0-9.]+)', _audit_lines(log_path))
        if audit:
            figures.add("start-up audit, last start (service log)", float(audit[-1]), "s")
    print()
    print(figures.table())
    print(f"budgets: RSS <= {RSS_BUDGET_MIB} MiB at 100,000 customers; "
          f"start to ready <= {READY_BUDGET_S} s")
    return 0


def _audit_lines(log_path: Path) -> str:
    return "\n".join(line for line in log_path.read_text(errors="replace").splitlines()
                     if "startup_audit" in line)


if __name__ == "__main__":
    sys.exit(main())
