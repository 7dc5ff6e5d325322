"""Faults in a running `billing serve` process: a crashed account actor,
what clients see, the supervisor's restart, metrics and logs."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.charges import RETRY_SAFE_CODES
from crypto import verify_chain
from tests.integration._proc import (
    ServerProcess,
    client_session,
    remote_service,
    running_server,
    wait_until,
)
from tests.integration.conftest import Customer, Service

Result = tuple[int, dict[str, Any], dict[str, str]]


@pytest.fixture
def server(tmp_path: Path, signing_key_file: Path) -> Iterator[ServerProcess]:
    env = {"BILLING_FAULT_INJECTION": "1", "BILLING_CUSTOMER_INFLIGHT_MAX": "100"}
    with running_server(tmp_path, signing_key_file, env=env) as process:
        yield process


async def _inject_fault(service: Service, customer: Customer) -> bool:
    async with service.session.post(
        f"/v1/admin/faults/{customer.customer_id}", headers=service.admin
    ) as response:
        assert response.status == 200, await response.text()
        return bool((await response.json())["crashed"])


async def _account_node(service: Service, customer_id: str) -> dict[str, Any] | None:
    async with service.session.get("/v1/admin/tree", headers=service.admin) as response:
        assert response.status == 200
        tree = await response.json()
    accounts = next(c for c in tree["children"] if c["id"] == "accounts")
    return next((c for c in accounts["children"] if c["id"] == customer_id), None)


async def _chain_is_intact(service: Service, customer: Customer) -> list[dict[str, Any]]:
    chain = await service.receipts(customer)
    assert [r["seq"] for r in chain] == list(range(1, len(chain) + 1))
    report = verify_chain(chain, await service.jwks())
    assert report.failure is None and report.verified == len(chain), report
    balance = await service.balance(customer)
    assert balance["balance_minor"] == sum(r["amount_minor"] for r in chain)
    return chain


async def _crash_under_load(
    service: Service, customer: Customer, charges: int
) -> list[tuple[dict[str, Any], Result, float]]:
    """Queue `charges` charges for one customer and crash its actor mid-way."""
    bodies = [service.event(customer) for _ in range(charges)]

    async def one(body: dict[str, Any]) -> tuple[dict[str, Any], Result, float]:
        started = time.monotonic()
        result = await service.post_event(customer, body)
        return body, result, time.monotonic() - started

    tasks = [asyncio.create_task(one(body)) for body in bodies[: charges // 2]]
    await asyncio.sleep(0)
    fault = asyncio.create_task(_inject_fault(service, customer))
    tasks += [asyncio.create_task(one(body)) for body in bodies[charges // 2 :]]
    await fault
    return list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=30))


async def test_crashed_account_answers_every_request_and_restarts(
    server: ServerProcess,
) -> None:
    async with client_session(server.url) as session:
        service = remote_service(server.url, session)
        customer = await service.create_customer()
        assert (await service.post_event(customer, service.event(customer)))[0] == 202
        before = await _account_node(service, customer.customer_id)
        assert before is not None and before["state"] == "running"

        outcomes: list[tuple[dict[str, Any], Result, float]] = []
        for _ in range(5):
            outcomes += await _crash_under_load(service, customer, 60)
        statuses = [result[0] for _, result, _ in outcomes]
        assert set(statuses) <= {202, 503}, statuses
        unavailable = [(body, result) for body, result, _ in outcomes if result[0] == 503]
        for _, (_, answer, headers) in unavailable:
            assert answer["error"]["code"] in RETRY_SAFE_CODES, answer
            assert int(headers["Retry-After"]) >= 1
        assert max(elapsed for *_, elapsed in outcomes) < 5.0, "a request hung"

        async def restarted() -> bool:
            node = await _account_node(service, customer.customer_id)
            return node is not None and node["state"] == "running" and (
                node["restart_count"] > before["restart_count"]
            )

        assert await wait_until(restarted, timeout_s=10)
        await _chain_is_intact(service, customer)

        for body, _ in unavailable:
            status, answer, headers = await service.post_event(customer, body)
            assert status == 202, answer
        # Everything again: each key replays the one receipt it has.
        for body, _, _ in outcomes:
            status, answer, headers = await service.post_event(customer, body)
            assert status == 202 and headers.get("Idempotent-Replayed") == "true"
        chain = await _chain_is_intact(service, customer)
        keys = [r["idempotency_key"] for r in chain]
        assert len(keys) == len(set(keys)) == len(outcomes) + 1


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(service: Service) -> Samples:
    async with service.session.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_move_with_traffic_overload_replays_and_restarts(
    tmp_path: Path, signing_key_file: Path
) -> None:
    env = {
        "BILLING_FAULT_INJECTION": "1",
        "BILLING_CUSTOMER_INFLIGHT_MAX": "4",
        "BILLING_COMMIT_LINGER_MS": "20",
    }
    with running_server(tmp_path, signing_key_file, env=env) as server:
        async with client_session(server.url) as session:
            service = remote_service(server.url, session)
            customers = [await service.create_customer() for _ in range(3)]
            before = await _scrape(service)
            assert _value(before, "billing_live_account_actors") == 0

            flood = [
                asyncio.create_task(service.post_event(c, service.event(c)))
                for c in customers
                for _ in range(30)
            ]
            inflight_seen = 0.0
            while not all(task.done() for task in flood):
                during = await _scrape(service)
                inflight_seen = max(inflight_seen, _value(during, "billing_admission_inflight"))
            statuses = [task.result()[0] for task in flood]
            assert set(statuses) == {202, 429}, statuses
            accepted, rejected = statuses.count(202), statuses.count(429)

            body = {**service.event(customers[0]), "idempotent_key": "replay-me"}
            for _ in range(3):
                assert (await service.post_event(customers[0], body))[0] == 202
            assert await _inject_fault(service, customers[0])

            async def restarted() -> bool:
                node = await _account_node(service, customers[0].customer_id)
                return node is not None and node["restart_count"] >= 1

            assert await wait_until(restarted, timeout_s=10)

            async def all_live() -> bool:  # the new incarnation has started
                live = _value(await _scrape(service), "billing_live_account_actors")
                return live == len(customers)

            assert await wait_until(all_live, timeout_s=10)
            after = await _scrape(service)

        def moved(name: str, **labels: str) -> float:
            return _value(after, name, **labels) - _value(before, name, **labels)

        events = {"route": "/v1/events"}
        assert moved("billing_http_requests_total", **events, status="202") == accepted + 3
        assert moved("billing_http_requests_total", **events, status="429") == rejected
        assert moved("billing_admission_rejected_total") == rejected
        assert moved("billing_receipt_latency_seconds_count") == accepted + 3
        assert moved("billing_receipt_latency_seconds_sum") > 0
        assert inflight_seen > 0
        assert _value(after, "billing_admission_inflight") == 0
        assert moved("billing_idempotent_replays_total") == 2
        assert moved("supervisor_child_restarts_total", supervisor="accounts", child="dynamic") == 1
        assert _value(after, "billing_live_account_actors") == len(customers)
        committed = accepted + 1  # the replayed key charged once
        assert moved("billing_receipts_committed_total") == committed
        assert moved("billing_commit_batch_receipts_sum") == committed
        assert 0 < moved("billing_commit_batch_receipts_count") <= committed
        assert moved("billing_commit_latency_seconds_count") == moved(
            "billing_commit_batch_receipts_count"
        )


async def test_errors_during_requests_are_logged_as_json_with_the_request_id(
    server: ServerProcess,
) -> None:
    async with client_session(server.url) as session:
        service = remote_service(server.url, session)
        customer = await service.create_customer()
        unavailable: list[Result] = []
        for _ in range(20):  # a crash with charges queued behind it, usually at once
            outcomes = await _crash_under_load(service, customer, 60)
            unavailable += [result for _, result, _ in outcomes if result[0] == 503]
            if unavailable:
                break
        assert unavailable, "no charge was queued behind the crash"

        async def logged() -> bool:
            return any(r.get("message") == "account.crashed" for r in server.log_records())

        assert await wait_until(logged, timeout_s=5)
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    records = server.log_records()
    assert len(records) == len(lines), "every stderr line is one JSON object:\n" + "\n".join(
        line for line in lines if not line.startswith("{")
    )[:2000]
    by_request = {
        r["request_id"]: r for r in records if "request_id" in r and r["message"] == "http.error"
    }
    for _, answer, headers in unavailable:
        request_id = {k.lower(): v for k, v in headers.items()}["x-request-id"]
        assert request_id in by_request, f"no log line for request {request_id}"
        record = by_request[request_id]
        assert record["severity"] in ("WARNING", "ERROR")
        assert record["code"] == answer["error"]["code"]
        assert record["status"] == 503
    crashes = [r for r in records if r.get("message") == "account.crashed"]
    assert crashes and all(r["customer_id"] == customer.customer_id for r in crashes)
    # The actor's traceback is in the JSON too, not loose lines on stderr.
    assert any("injected fault" in r.get("exception", "") for r in records)


def _soak_seconds() -> float:
    """BILLING_SOAK_SECONDS (CI sets 5); a longer run locally by default."""
    return float(os.environ.get("BILLING_SOAK_SECONDS") or 10)


@pytest.mark.soak
async def test_soak_repeated_actor_crashes_under_load_charge_each_key_once(
    server: ServerProcess,
) -> None:
    """Load on several customers while their actors crash again and again;
    clients retry retry-safe answers. Runs for BILLING_SOAK_SECONDS."""
    async with client_session(server.url) as session:
        service = remote_service(server.url, session)
        customers = [await service.create_customer() for _ in range(8)]
        deadline = time.monotonic() + _soak_seconds()
        sent: dict[str, Customer] = {}
        crashes = 0

        async def client(customer: Customer) -> None:
            while time.monotonic() < deadline:
                body = service.event(customer)
                sent[body["idempotent_key"]] = customer
                for _ in range(50):
                    status, answer, _ = await service.post_event(customer, body)
                    if status == 202:
                        break
                    assert status in (429, 503), answer
                    assert answer["error"]["code"] in (*RETRY_SAFE_CODES, "customer_overloaded")
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError(f"{body['idempotent_key']} never got through")

        async def chaos() -> None:
            nonlocal crashes
            n = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                crashes += await _inject_fault(service, customers[n % len(customers)])
                n += 1

        await asyncio.wait_for(
            asyncio.gather(chaos(), *(client(c) for c in customers for _ in range(4))),
            timeout=_soak_seconds() + 60,
        )
        assert crashes > 0
        for customer in customers:
            chain = await _chain_is_intact(service, customer)
            keys = [r["idempotency_key"] for r in chain]
            assert len(keys) == len(set(keys))
            assert set(keys) == {k for k, c in sent.items() if c is customer}
