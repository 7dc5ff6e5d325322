"""`billing serve` as a real process: crash and restart, graceful stop, the
single-process lock, and the dev banner. Only ever on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crypto import verify_chain
from gateway.open_files import SERVE_OPEN_FILES_WANTED
from tests.integration._proc import (
    ServerProcess,
    client_session,
    remote_service,
    running_server,
    server_env,
    wait_until,
)
from tests.integration.conftest import Customer, Service

CONNECTION_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


@dataclass
class LoadRecord:
    """Every request sent (by idempotency key) and every acknowledgement."""

    sent: dict[str, tuple[Customer, dict[str, Any]]] = field(default_factory=dict)
    acked: dict[str, str] = field(default_factory=dict)  # key -> receipt_id
    acked_leaf: dict[str, int] = field(default_factory=dict)  # key -> log index answered
    answered: dict[str, int] = field(default_factory=dict)  # key -> status
    failed: dict[str, str] = field(default_factory=dict)  # key -> connection error
    inflight: int = 0


async def _admitted(session: aiohttp.ClientSession) -> float:
    """The server's count of charges admitted and not yet answered."""
    async with session.get("/metrics") as response:
        text = await response.text()
    match = re.search(r"^billing_admission_inflight (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


async def _customers(service: Service, count: int) -> list[Customer]:
    return list(await asyncio.gather(*(service.create_customer() for _ in range(count))))


async def _load(
    service: Service,
    customers: list[Customer],
    record: LoadRecord,
    stop: asyncio.Event,
    concurrency: int,
) -> None:
    """`concurrency` workers charging round-robin until `stop` or a dead server."""

    async def worker(index: int) -> None:
        n = index
        while not stop.is_set():
            customer = customers[n % len(customers)]
            n += concurrency
            body = service.event(customer)
            key = body["idempotent_key"]
            record.sent[key] = (customer, body)
            record.inflight += 1
            try:
                status, answer, _ = await service.post_event(customer, body)
            except CONNECTION_ERRORS as error:
                record.failed[key] = type(error).__name__
                return  # the server is gone
            finally:
                record.inflight -= 1
            record.answered[key] = status
            if status == 202:
                record.acked[key] = answer["receipt_id"]
                record.acked_leaf[key] = answer["log"]["index"]

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


async def _check_chains(service: Service, customers: list[Customer]) -> dict[str, list[Any]]:
    """Every chain verifies, seq is gapless, balance == sum of receipts."""
    jwks = await service.jwks()
    chains: dict[str, list[Any]] = {}
    for customer in customers:
        chain = await service.receipts(customer)
        assert [r["seq"] for r in chain] == list(range(1, len(chain) + 1))
        report = verify_chain(chain, jwks)
        assert report.failure is None, report
        assert report.verified == len(chain)
        balance = await service.balance(customer)
        assert balance["balance_minor"] == sum(r["amount_minor"] for r in chain)
        assert balance["seq"] == len(chain)
        chains[customer.customer_id] = chain
    return chains


async def test_kill_9_under_load_loses_nothing_acknowledged_and_retries_charge_once(
    tmp_path: Path, signing_key_file: Path
) -> None:
    with running_server(tmp_path, signing_key_file) as server:
        record = LoadRecord()
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            customers = await _customers(service, 20)
            stop = asyncio.Event()
            load = asyncio.create_task(_load(service, customers, record, stop, concurrency=32))
            await asyncio.sleep(2.0)
            in_flight_at_kill = record.inflight
            server.kill()  # SIGKILL to the whole group, mid-load
            stop.set()
            await asyncio.wait_for(load, timeout=15)
        assert in_flight_at_kill > 0, "the kill must land while charges are in flight"
        assert len(record.acked) > 50, "the load never got going"
        unanswered = set(record.sent) - set(record.answered)
        assert unanswered, "some requests must have been cut off by the kill"
        assert set(record.answered.values()) == {202}, record.answered

        server.start()  # same data dir
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            gate = asyncio.Semaphore(32)

            async def fetch(key: str, receipt_id: str) -> None:
                customer, _ = record.sent[key]
                async with (
                    gate,
                    session.get(f"/v1/receipts/{receipt_id}", headers=customer.auth) as response,
                ):
                    assert response.status == 200, (key, await response.text())

            await asyncio.gather(*(fetch(k, r) for k, r in record.acked.items()))
            chains = await _check_chains(service, customers)  # proofs against the head, too
            # Every acknowledged receipt is the leaf it was answered with, under
            # a stored checkpoint; the log has no gap and no index used twice.
            leaf_of = {r["idempotency_key"]: r["log"]["index"] for c in chains.values() for r in c}
            assert all(leaf_of[key] == leaf for key, leaf in record.acked_leaf.items())
            async with session.get("/v1/log/checkpoint", headers=customers[0].auth) as response:
                head_before = (await response.json())["tree_size"]
            assert sorted(leaf_of.values()) == list(range(head_before))

            # Retry every request ever sent, acknowledged or not.
            replayed_unacked = 0

            async def retry(key: str, customer: Customer, body: dict[str, Any]) -> None:
                nonlocal replayed_unacked
                async with gate:
                    status, answer, headers = await service.post_event(customer, body)
                assert status == 202, answer
                if key in record.acked:
                    assert headers.get("Idempotent-Replayed") == "true"
                    assert answer["receipt_id"] == record.acked[key]
                elif headers.get("Idempotent-Replayed") == "true":
                    replayed_unacked += 1  # committed, but the reply was lost

            await asyncio.gather(*(retry(k, c, b) for k, (c, b) in record.sent.items()))
            chains = await _check_chains(service, customers)
            async with session.get(
                "/v1/log/consistency", params={"first": head_before}, headers=customers[0].auth
            ) as response:
                assert response.status == 200  # the log resumed on top of what it had
        keys = [r["idempotency_key"] for chain in chains.values() for r in chain]
        leaves = sorted(r["log"]["index"] for chain in chains.values() for r in chain)
        assert leaves == list(range(len(keys))), "the resumed log has a gap or a reused index"
        assert len(keys) == len(set(keys)), "an idempotency key was charged twice"
        assert set(keys) == set(record.sent), "every request was charged exactly once"
        assert replayed_unacked <= len(unanswered)


async def test_sigterm_drains_in_flight_requests_and_exits_zero(
    tmp_path: Path, signing_key_file: Path
) -> None:
    drain_timeout_s = 5.0
    # A commit linger keeps each charge in flight long enough to be mid-request
    # when SIGTERM arrives.
    # Fewer charges than the writer's small batch (8), or a batch that forms
    # at once commits without lingering: on a loaded machine 8 of 16 did.
    env = {"BILLING_COMMIT_LINGER_MS": "3000", "BILLING_DRAIN_TIMEOUT_S": str(drain_timeout_s)}
    with running_server(tmp_path, signing_key_file, env=env) as server:
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            customers = await _customers(service, 6)
        # One connection per request: no idle keep-alive connection for the
        # server to close under a request that was not sent yet.
        async with client_session(server.url, force_close=True) as session:
            service = remote_service(server.url, session)
            bodies = [(c, service.event(c)) for c in customers]
            in_flight = [asyncio.create_task(service.post_event(c, body)) for c, body in bodies]

            async def all_admitted() -> bool:
                return await _admitted(session) == len(bodies)

            # Every one is being handled (admitted, waiting to be durable).
            assert await wait_until(all_admitted, timeout_s=2.5, interval_s=0.02)
            assert not any(task.done() for task in in_flight)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            results = await asyncio.wait_for(asyncio.gather(*in_flight), timeout=20)
            exit_code = await asyncio.get_running_loop().run_in_executor(
                None, server.wait, drain_timeout_s + 5
            )
            elapsed = time.monotonic() - started
            # After the drain nobody is listening any more.
            try:
                await service.post_event(customers[0], service.event(customers[0]))
                refused = False
            except CONNECTION_ERRORS:
                refused = True
        assert [status for status, _, _ in results] == [202] * len(bodies), results
        assert exit_code == 0, server.stderr()
        assert elapsed < drain_timeout_s, f"took {elapsed:.1f}s to stop"
        assert refused
        assert "Traceback" not in server.stderr()
        events = [r.get("message") for r in server.log_records()]
        assert "billing.draining" in events and "billing.stopped" in events

        server.start()
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            for (customer, body), (_, answer, _) in zip(bodies, results, strict=True):
                async with session.get(
                    f"/v1/receipts/{answer['receipt_id']}", headers=customer.auth
                ) as response:
                    assert response.status == 200
                    assert (await response.json())["idempotency_key"] == body["idempotent_key"]
            chains = await _check_chains(service, customers)
        assert sum(len(chain) for chain in chains.values()) == len(bodies)


async def test_second_server_on_the_same_data_dir_fails_fast_with_a_lock_error(
    tmp_path: Path, signing_key_file: Path
) -> None:
    with running_server(tmp_path, signing_key_file) as first:
        second = ServerProcess(
            data_dir=first.data_dir, env=first.env, log_dir=tmp_path, name="second"
        )
        started = time.monotonic()
        second.spawn()
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, second.wait, 15)
        finally:
            second.kill()
        assert time.monotonic() - started < 15
        assert code != 0
        stderr = second.stderr()
        assert "Traceback" not in stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1, stderr
        assert lines[0].startswith("billing serve:")
        assert "lock" in lines[0] and "another process" in lines[0]
        assert second.stdout() == ""

        async with client_session(first.url) as session:
            service = remote_service(first.url, session)
            customer = await service.create_customer()
            status, body, _ = await service.post_event(customer, service.event(customer))
            assert status == 202, body
            async with session.get("/readyz") as response:
                assert response.status == 200
        assert first.proc is not None and first.proc.poll() is None


async def test_serve_on_a_port_in_use_exits_at_once_with_one_line(
    tmp_path: Path, signing_key_file: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = ServerProcess(
            data_dir=tmp_path / "data",
            env=server_env(signing_key_file),
            log_dir=tmp_path,
            args=("--port", str(port)),
        )
        server.spawn()
        try:
            code = await asyncio.get_running_loop().run_in_executor(None, server.wait, 20)
        except subprocess.TimeoutExpired:
            code = None  # alive 20 s later, serving nothing
        finally:
            server.kill()
    assert code is not None, f"still running, not serving:\n{server.stderr()}"
    assert code != 0
    stderr = server.stderr()
    assert "Traceback" not in stderr
    # stderr also holds the JSON log lines of the start; the error is one line.
    lines = [line for line in stderr.splitlines() if line.strip() and line[0] != "{"]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("billing serve:") and str(port) in lines[0]
    assert "serving on" not in server.stdout()


def _banner_value(banner: str, pattern: str) -> str:
    match = re.search(pattern, banner, re.MULTILINE)
    assert match, f"{pattern!r} not in banner:\n{banner}"
    return match.group(1)


async def test_dev_mode_banner_curl_line_charges(tmp_path: Path) -> None:
    # No admin token and no signing key given: dev mode makes both.
    with running_server(tmp_path, None, args=("--dev",)) as server:
        banner = server.stdout()
        url = _banner_value(banner, r"serving on (http://127\.0\.0\.1:\d+)")
        assert url == server.url
        admin_token = _banner_value(banner, r"admin token: (\S+)")
        api_key = _banner_value(banner, r"demo API key: (\S+)")
        curl = _banner_value(banner, r"^\s*(curl .* \S+/v1/events .*)$")
        # What the shell would do with the $(date ...) substitution.
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        argv = shlex.split(re.sub(r"\$\(date [^)]*\)", now, curl))
        assert argv[:4] == ["curl", "-s", "-X", "POST"]
        target = argv[4]
        headers = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
        data = argv[argv.index("-d") + 1]
        assert target == f"{url}/v1/events"
        assert headers["Authorization"] == f"Bearer {api_key}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(target, data=data, headers=headers) as response:
                assert response.status == 202, await response.text()
                receipt = await response.json()
            assert (receipt["status"], receipt["committed"]) == ("processed", True)
            async with session.get(
                f"{url}/v1/admin/tree", headers={"Authorization": f"Bearer {admin_token}"}
            ) as response:
                assert response.status == 200
        token_file = server.data_dir / "admin-token"
        assert token_file.read_text().strip() == admin_token
        assert os.stat(token_file).st_mode & 0o077 == 0


def _soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line in /proc/PID/limits")


async def test_serve_raises_a_low_open_files_limit(tmp_path: Path, signing_key_file: Path) -> None:
    # Started with a soft limit of 512, as a shell with a low `ulimit -n` would.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip("the hard open-files limit leaves nothing to raise")
    server = ServerProcess(
        data_dir=tmp_path / "data", env=server_env(signing_key_file), log_dir=tmp_path
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert server.proc is not None
        wanted = (
            SERVE_OPEN_FILES_WANTED
            if hard == resource.RLIM_INFINITY
            else min(SERVE_OPEN_FILES_WANTED, hard)
        )
        assert _soft_open_files(server.proc.pid) == wanted
    finally:
        server.kill()
