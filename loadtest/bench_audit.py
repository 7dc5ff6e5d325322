"""Continuous audit benchmark (not a test):
`python -m loadtest.bench_audit [--receipts N] [--customers C] [--dir WORK_DIR]`.

Quick mode (a few minutes): `--receipts 50000 --customers 100`. The issue's
figure: the defaults, 1,000,000 receipts over 1,000 customers (building the
ledger takes ~2 minutes on the 2-core machine, the run ~4 more per round and
~5 for the pass; a work directory whose ledger was tampered by an earlier run
is halted: use a new one).

Builds a ledger of N receipts over C customers through the ledger API
(loadtest.bench_evidence: real receipts and chains, a signed checkpoint per
commit) in a service data directory, signed with the key the service will
use. Then, with `billing serve` on that directory:
1. charges/s at 64 connections (wrk, loadtest/bench.py) with the reconciler
   idle (BILLING_RECONCILE_INTERVAL_S=86400);
2. the same while a background pass runs (rounds every --interval-s, the
   service's default 60 s; each round audits its share of the log and of the
   customers, paced over 80% of its interval; a pass ends within 240 s);
   idle and running phases alternate, each in a fresh service, idle first
   and last (`--rounds` running phases, default 3); each running phase is
   compared with the mean of the idle phases either side of it, and the
   median of those shares is printed;
3. in a fresh service with the audit running: how long its first whole
   pass took (billing_reconciler_last_pass_seconds);
4. one receipt tampered behind the service's back (sqlite3), and the time
   until the audit finds it (/readyz turns 503: the integrity halt).
Prints each figure; the promise is "found within 5 minutes".

`--child-cpu` measures instead, with no service, the audit child's CPU per
customer (what its `AuditOne` costs: the audit and the comparison of the
archive with the ledger), on the ledger of --dir and an archive of it
beside it; e.g. `--receipts 76000 --customers 20` (3,800 receipts each, the
issue's 1,000,000 over 1,000 after a few weeks' charges).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import sqlite3
import statistics
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

from actors.integrity._audit_process import AuditOne, _Worker
from crypto import load_or_create_dev_key
from gateway.compose import KEYS_DIR
from gateway.settings import Settings
from gateway.storage import ARCHIVE_DIR, LEDGER_FILE
from ledger.local import FileArchive
from ledger.sqlite import SqliteLedger
from loadtest import cpu_budget
from loadtest.bench import PhaseResult, create_customers, run_wrk
from loadtest.bench_evidence import build
from loadtest.run_locust import Service, billing_command, local_service

_CONNECTIONS = 64
_FOUND_WITHIN_S_MAX = 600.0


def _build(data_dir: Path, receipts: int, customers: int) -> None:
    path = data_dir / LEDGER_FILE
    if path.exists():
        print(f"reusing the ledger in {data_dir}")
        return
    key = load_or_create_dev_key(data_dir / KEYS_DIR, Settings().signing_alg)
    store = SqliteLedger.open(path)
    try:
        started = time.perf_counter()
        # The service's origin: its audit refuses a log whose origin changes.
        build(store, key, receipts, customers, origin=Settings().log_origin)
        print(f"built {receipts:,} receipts in {time.perf_counter() - started:.1f} s")
    finally:
        store.close()


def _child_cpu(data_dir: Path) -> None:
    """The audit child's CPU per customer, its work timed as it does it
    (time.process_time around `_Worker.answer`), over every customer."""
    store = SqliteLedger.open_read_only(data_dir / LEDGER_FILE)
    archive = FileArchive(data_dir / ARCHIVE_DIR)
    try:
        customer_ids = store.list_customer_ids()
        if not archive.customer_ids():
            for customer_id in customer_ids:
                archive.append(list(store.iter_receipts(customer_id)))
        key = load_or_create_dev_key(data_dir / KEYS_DIR, Settings().signing_alg)
        jwks = {"keys": [key.public_jwk()]}
        worker = _Worker(store, (store, archive))
        worker.answer(AuditOne(jwks, customer_ids[0]))  # keys parsed, caches warm
        started = time.process_time()
        for customer_id in customer_ids:
            answer = worker.answer(AuditOne(jwks, customer_id))
            if answer.error is not None:
                raise SystemExit(f"customer {customer_id}: {answer.error}")
            audit, copies = answer.value
            if not audit.ok or not copies.ok or copies.missing:
                raise SystemExit(f"customer {customer_id}: {audit} {copies}")
        cpu_s = time.process_time() - started
    finally:
        archive.close()
        store.close()
    print(f"audit child: {cpu_s / len(customer_ids) * 1000:.1f} ms of CPU per customer "
          f"({len(customer_ids)} customers)")


def _wait_archived(url: str) -> None:
    """The embedded archive first follows a new ledger from its start: let it
    catch up, so that the phases measure charging, not archiving."""
    pattern = re.compile(r'billing_outbox_backlog\{topic="receipt.archive"\} ([0-9.e+]+)')
    started = time.monotonic()
    while time.monotonic() - started < _FOUND_WITHIN_S_MAX:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            match = pattern.search(response.read().decode())
        if match is not None and float(match.group(1)) == 0:
            return
        time.sleep(2.0)
    raise SystemExit("the archive did not catch up")


def _charges(
    service: Service, name: str, duration_s: float, work: Path
) -> tuple[PhaseResult, cpu_budget.CpuBudget | None]:
    """The phase's charges/s and latency, and its CPU per charge by part
    (the audit child shows up as a child process of the service)."""
    _wait_archived(service.url)
    customers = asyncio.run(
        create_customers(service.url, service.admin_token, _CONNECTIONS, secrets.token_hex(3))
    )
    customers_file = work / f"customers-{name}.txt"
    customers_file.write_text("".join(f"{cid} {key}\n" for cid, key in customers))
    before = cpu_budget.sample(service.url)
    result = run_wrk(
        name, service.url, customers_file,
        connections=_CONNECTIONS, duration_s=duration_s, threads=2,
    )
    after = cpu_budget.sample(service.url)
    print(
        f"{name}: {result.accepted_per_s:,.0f} charges/s at {_CONNECTIONS} connections, "
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"
    )
    charges = round(result.accepted_per_s * result.duration_s)
    return result, cpu_budget.budget(name, before, after, charges)


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return 0.0 if match is None else float(match.group(1))


def _wait_metric(url: str, name: str, what: str) -> float:
    """The metric once it is above 0 (a pass started, or ended)."""
    started = time.monotonic()
    while (value := _metric(url, name)) <= 0:
        if time.monotonic() - started > _FOUND_WITHIN_S_MAX:
            raise SystemExit(f"{what}: not within {_FOUND_WITHIN_S_MAX:.0f} s")
        time.sleep(1.0)
    return value


def _tamper(path: Path, built: int) -> str:
    """Change one receipt's amount in its signed JSON, as an attacker would:
    one of the built ledger's (not of the customers the phases charged,
    whose ids sort first and are audited first in each pass)."""
    with closing(sqlite3.connect(path, timeout=30.0)) as conn, conn:
        index = random.Random(17).randrange(built)
        receipt_id, raw = conn.execute(
            "SELECT receipt_id, receipt_json FROM receipts WHERE log_index = ?", (index,)
        ).fetchone()
        document = json.loads(raw)
        document["amount_minor"] += 1
        conn.execute(
            "UPDATE receipts SET receipt_json = ? WHERE receipt_id = ?",
            (json.dumps(document).encode(), receipt_id),
        )
    return f"{receipt_id} (leaf {index})"


def _halted(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return bool(response.status != 200)
    except urllib.error.HTTPError as error:
        return error.code == 503
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--receipts", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--interval-s", type=float, default=60.0)
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="idle and audit-running phases, alternated: the median share is printed "
        "(charge rates swing ~10%% between runs of one phase on a 2-core machine)",
    )
    parser.add_argument("--dir", type=Path, help="service data directory (built if empty)")
    parser.add_argument("--child-cpu", action="store_true",
                        help="only the audit child's CPU per customer, no service")
    args = parser.parse_args()
    work = Path(args.dir or Path.cwd() / f"bench-audit-{secrets.token_hex(3)}")
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    _build(data_dir, args.receipts, args.customers)
    if args.child_cpu:
        _child_cpu(data_dir)
        return
    # `billing serve` on OUR data directory (local_service's default is a new one).
    command = [*billing_command(0, data_dir)[:-3], "{port}", "--data-dir", str(data_dir)]
    idle_env = {"BILLING_RECONCILE_INTERVAL_S": "86400"}
    audit_env = {"BILLING_RECONCILE_INTERVAL_S": f"{args.interval_s:g}"}

    def idle_phase(number: int) -> tuple[PhaseResult, cpu_budget.CpuBudget | None]:
        with local_service(command=command, env=idle_env, log_dir=work) as service:
            return _charges(service, f"audit idle #{number}", args.duration_s, work)

    shares: list[float] = []
    idle, idle_cpu = idle_phase(0)
    budgets = [b for b in (idle_cpu,) if b is not None]
    for round_number in range(1, args.rounds + 1):
        with local_service(command=command, env=audit_env, log_dir=work) as service:
            _wait_metric(service.url, 'billing_reconciler_audits_total{result="ok"}',
                         "a first round")
            running, running_cpu = _charges(
                service, f"audit running #{round_number}", args.duration_s, work
            )
        idle_after, idle_cpu = idle_phase(round_number)
        shares.append(_share(round_number, (idle, idle_after), running))
        budgets += [b for b in (running_cpu, idle_cpu) if b is not None]
        idle = idle_after
    with local_service(command=command, env=audit_env, log_dir=work) as service:
        found_s = _pass_and_tamper(service, data_dir, args.receipts)
    print(
        f"found in {found_s:.0f} s (bound: 300 s); charges/s with the audit running: "
        f"median {statistics.median(shares):.0%} of idle over {len(shares)} round(s) "
        f"({', '.join(f'{share:.0%}' for share in shares)})"
    )
    if budgets:
        print(cpu_budget.format_budgets(budgets, os.cpu_count() or 1))


def _share(
    round_number: int, idles: tuple[PhaseResult, PhaseResult], running: PhaseResult
) -> float:
    """The running phase's charges/s over the mean of the idle phases either
    side of it: idle rates drift from one service start to the next (the
    page cache warms, the ledger grows), and bracketing cancels the drift."""
    idle_per_s = (idles[0].accepted_per_s + idles[1].accepted_per_s) / 2
    share = running.accepted_per_s / idle_per_s if idle_per_s else 0.0
    print(
        f"round {round_number}: charges/s with the audit running: {share:.0%} of idle "
        f"({running.accepted_per_s:,.0f} vs {idle_per_s:,.0f}, the idle phases either side)",
        flush=True,
    )
    return share


def _pass_and_tamper(service: Service, data_dir: Path, receipts: int) -> float:
    """Print how long a whole pass took, tamper one receipt, and return how
    long the running audit took to find it."""
    pass_s = _wait_metric(service.url, "billing_reconciler_last_pass_seconds", "a pass")
    print(f"a background pass over {receipts:,} receipts took {pass_s:.0f} s")
    if _halted(service.url):
        raise SystemExit(f"halted before any tampering: see {service.log_path}")
    tampered = _tamper(data_dir / LEDGER_FILE, receipts)
    started = time.monotonic()
    print(f"tampered receipt {tampered}; waiting for the audit to find it ...", flush=True)
    while not _halted(service.url):
        if time.monotonic() - started > _FOUND_WITHIN_S_MAX:
            raise SystemExit(f"not found within {_FOUND_WITHIN_S_MAX:.0f} s")
        time.sleep(1.0)
    return time.monotonic() - started

if __name__ == "__main__":
    main()
