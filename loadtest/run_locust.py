"""`make loadtest`: start a local service, run a short headless Locust scenario,
check that nothing was lost or doubled, print where the reports are, stop.

    python -m loadtest.run_locust                          # steady, local service
    python -m loadtest.run_locust --scenario retry_storm -u 20 -t 30s
    python -m loadtest.run_locust --host "$BILLING_URL" --scenario steady

With `--host` nothing is started: the scenario runs against that deployment
with the admin token from `--admin-token` or env `BILLING_ADMIN_TOKEN`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtest import check as lost_or_doubled

LOADTEST_DIR = Path(__file__).resolve().parent
LOCUSTFILE = LOADTEST_DIR / "locustfile.py"
REPORTS_DIR = LOADTEST_DIR / "reports"
SCENARIO_CLASSES = {
    "steady": "SteadyUser",
    "hot": "HotCustomerUser",
    "retry_storm": "RetryStormUser",
    "overload": "OverloadUser",
    "webhook_mix": "WebhookMixUser",
}
ready_timeout_s = 60.0
stop_timeout_s = 20.0
# Locust gets its run time plus this much to start, stop users and write reports.
locust_grace_s = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Poll `url` until 200; fail early if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode} before ready")
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                if resp.status == 200:
                    return
                last_error = f"status {resp.status}"
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s ({last_error})")


@dataclass
class Service:
    url: str
    admin_token: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def billing_command(port: int, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = stop_timeout_s) -> int:
    """SIGTERM, wait, and only then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    return process.returncode


@contextmanager
def local_service(
    *,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    ready_path: str = "/readyz",
) -> Iterator[Service]:
    """`billing serve` (or `command`, which gets the port and data dir appended by
    the caller) on a free loopback port, a temp data dir and a fresh admin token."""
    port = free_port()
    admin_token = "adm_" + secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="billing-loadtest-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        log_path = (log_dir or Path(tmp)) / f"service-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = list(command) if command is not None else billing_command(port, data_dir)
        argv = [a.replace("{port}", str(port)).replace("{data_dir}", str(data_dir)) for a in argv]
        child_env = {
            **os.environ,
            "BILLING_ADMIN_TOKEN": admin_token,
            "BILLING_HOST": "127.0.0.1",
            "BILLING_PORT": str(port),
            "BILLING_DATA_DIR": str(data_dir),
            **(env or {}),
        }
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, env=child_env, cwd=os.getcwd()
            )
            service = Service(f"http://127.0.0.1:{port}", admin_token, data_dir, log_path, process)
            try:
                try:
                    wait_ready(service.url + ready_path, process, ready_timeout_s)
                except RuntimeError as error:
                    raise RuntimeError(
                        f"{error}\n--- service log ---\n{service.log_tail()}"
                    ) from None
                yield service
            finally:
                stop_process(process)


def locust_command(
    *,
    host: str,
    scenario: str,
    users: int,
    spawn_rate: float,
    run_time_s: float,
    results: Path,
    report_prefix: Path | None,
    extra: Sequence[str] = (),
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        f"{run_time_s:g}s",
        "--stop-timeout",
        "5",
        "--only-summary",
        "--results-file",
        str(results),
    ]
    if report_prefix is not None:
        argv += ["--csv", str(report_prefix), "--html", f"{report_prefix}.html"]
    argv += list(extra)
    argv.append(SCENARIO_CLASSES[scenario])
    return argv


@dataclass
class RunOutcome:
    locust_status: int
    report: lost_or_doubled.Report
    output: str


def run_scenario(
    *,
    host: str,
    admin_token: str,
    scenario: str,
    users: int,
    run_time_s: float,
    results: Path,
    report_prefix: Path | None = None,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run one scenario headless in a subprocess (bounded by time), then the check."""
    results.parent.mkdir(parents=True, exist_ok=True)
    if results.exists():
        results.unlink()
    argv = locust_command(
        host=host,
        scenario=scenario,
        users=users,
        spawn_rate=users,
        run_time_s=run_time_s,
        results=results,
        report_prefix=report_prefix,
        extra=extra,
    )
    child_env = {**os.environ, **(env or {}), "BILLING_ADMIN_TOKEN": admin_token}
    completed = subprocess.run(
        argv,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=run_time_s + locust_grace_s,
        check=False,
    )
    output = completed.stdout.decode(errors="replace")
    report = lost_or_doubled.check(host, results) if results.exists() else _empty_report()
    return RunOutcome(completed.returncode, report, output)


def _empty_report() -> lost_or_doubled.Report:
    return lost_or_doubled.verify(lost_or_doubled.RunRecords(), {})


def _parse_duration(text: str) -> float:
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.run_locust",
        description="Run a Locust scenario headless and check nothing was lost or doubled.",
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIO_CLASSES), default="steady")
    parser.add_argument("-u", "--users", type=int, default=20)
    parser.add_argument("-t", "--run-time", default="20s", help="e.g. 20s, 2m")
    parser.add_argument(
        "--host", default="", help="target an existing deployment instead of a local service"
    )
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("BILLING_ADMIN_TOKEN", ""),
        help="admin token for --host (default: env BILLING_ADMIN_TOKEN)",
    )
    parser.add_argument("--reports", type=Path, default=REPORTS_DIR, help="report directory")
    parser.add_argument(
        "--admission-queue-max",
        type=int,
        default=0,
        help="local service only: BILLING_ADMISSION_QUEUE_MAX (overload defaults to 64)",
    )
    parser.add_argument("locust_args", nargs="*", help="extra Locust arguments after --")
    args = parser.parse_args(argv)
    run_time_s = _parse_duration(args.run_time)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.reports.mkdir(parents=True, exist_ok=True)
    prefix = args.reports / f"{args.scenario}-{stamp}"
    results = args.reports / f"{args.scenario}-{stamp}.results.jsonl"

    def run(host: str, token: str) -> int:
        print(f"loadtest: {args.scenario}, {args.users} users, {run_time_s:g} s against {host}")
        outcome = run_scenario(
            host=host,
            admin_token=token,
            scenario=args.scenario,
            users=args.users,
            run_time_s=run_time_s,
            results=results,
            report_prefix=prefix,
            extra=args.locust_args,
        )
        print(outcome.output.rstrip())
        print(outcome.report.summary())
        print(f"loadtest: reports: {prefix}.html, {prefix}_stats.csv, results {results}")
        status = 0
        if outcome.locust_status != 0:
            print(f"loadtest: Locust reported failures (exit {outcome.locust_status})")
            status = 1
        if not outcome.report.ok or outcome.report.customers == 0:
            status = 1
        return status

    if args.host:
        if not args.admin_token:
            print(
                "loadtest: --host needs --admin-token or env BILLING_ADMIN_TOKEN", file=sys.stderr
            )
            return 2
        return run(args.host.rstrip("/"), args.admin_token)

    if shutil.which("billing") is None and not (LOADTEST_DIR.parent / "gateway").is_dir():
        print("loadtest: cannot find the service (install the project first)", file=sys.stderr)
        return 2
    admission = args.admission_queue_max or (64 if args.scenario == "overload" else 0)
    env = {"BILLING_ADMISSION_QUEUE_MAX": str(admission)} if admission else {}
    try:
        with local_service(env=env, log_dir=args.reports) as service:
            print(f"loadtest: service up at {service.url} (log {service.log_path})")
            return run(service.url, service.admin_token)
    except RuntimeError as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
