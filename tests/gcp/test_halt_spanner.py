"""Integrity halts on Spanner, end to end (issue 17: "a halt survives restart
and reaches a second gateway on the same Spanner emulator").

Two `billing serve` processes share one Spanner database. Someone alters a
receipt behind the service's back; gateway A's audit finds it and records an
incident. Gateway B, which found nothing itself, refuses charges within
seconds: the store is the only channel between them. The row is then
repaired but the halt NOT cleared, and both restart: they come up unready
on the recorded incidents (the start-up audit finds nothing new, so only
the record holds them). Only `billing halt clear` of every open incident
lifts it, on both.

Also here, because it needs the real service on Spanner: the request record
of a charge made through A is in the evidence bundle B serves.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest

import crypto
from ledger._spanner_codec import decode_bytes, encode_bytes
from ledger.gcp_urls import parse_spanner_url
from tests.gcp._stack import GcpStack
from tests.integration._proc import ServerProcess, client_session, remote_service
from tests.integration.conftest import ADMIN_TOKEN, Customer, Service, run_billing_cli

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(300)]

# Each gateway reads the open incidents every second.
HALT_REACH_S = 5.0
RESTART_TIMEOUT_S = 30.0


def _database(store_url: str) -> Any:
    from google.cloud import spanner

    url = parse_spanner_url(store_url)
    return spanner.Client(project=url.project).instance(url.instance).database(url.database)


def _swap_last_receipt_json(store_url: str, customer_id: str, change: Any) -> tuple[str, bytes]:
    """Rewrite the customer's last stored receipt document with `change(doc)`
    behind the service's back; returns (receipt_id, the document before)."""
    database = _database(store_url)
    with database.snapshot() as snapshot:
        rows = list(
            snapshot.execute_sql(
                "SELECT seq, receipt_id, receipt_json FROM Receipts WHERE customer_id = @c "
                "ORDER BY seq DESC LIMIT 1",
                params={"c": customer_id},
                param_types={"c": _string()},
            )
        )
    seq, receipt_id, document = decode_bytes(rows[0])
    with database.batch() as batch:
        batch.update(
            "Receipts",
            ("customer_id", "seq", "receipt_json"),
            [encode_bytes((customer_id, seq, change(bytes(document))))],
        )
    return str(receipt_id), bytes(document)


def _string() -> Any:
    from google.cloud.spanner_v1 import param_types

    return param_types.STRING


def _forge(document: bytes) -> bytes:
    forged = document.replace(b'"amount_minor":25', b'"amount_minor":1')
    assert forged != document
    return forged


async def _readyz(service: Service) -> tuple[int, dict[str, Any]]:
    async with service.session.get("/readyz") as response:
        return response.status, dict(await response.json())


async def _until_ready_is(service: Service, status: int, what: str) -> dict[str, Any]:
    started = time.monotonic()
    while True:
        got, body = await _readyz(service)
        if got == status:
            return body
        assert time.monotonic() - started < HALT_REACH_S, f"{what}: /readyz {got} {body}"
        await asyncio.sleep(0.1)


async def _open_incidents(service: Service) -> dict[str, str]:
    """The open incidents as the admin route shows them: id -> reason."""
    async with service.session.get("/v1/admin/halt", headers=service.admin) as response:
        assert response.status == 200, await response.text()
        return {i["incident_id"]: i["reason"] for i in (await response.json())["open"]}


async def _refuses_charges(service: Service, customer: Customer, incident_id: str) -> str:
    status, body, headers = await service.post_event(customer, service.event(customer))
    assert (status, body["error"]["code"]) == (503, "service_unavailable"), body
    assert "Retry-After" in headers and incident_id in body["error"]["message"]
    return json.dumps(body)


def _restart(server: ServerProcess) -> None:
    server.signal(signal.SIGTERM)
    assert server.wait(RESTART_TIMEOUT_S) == 0, server.stderr()
    server.start(until_ready=False)  # a halted gateway comes up unready


async def _charge_with_request(service: Service, customer: Customer) -> str:
    headers = {**customer.auth, "User-Agent": "acme-meter/2.1", "X-Request-Id": "req_on_a"}
    async with service.session.post(
        "/v1/events", json=service.event(customer), headers=headers
    ) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["receipt_id"])


async def _evidence_names_the_request(b: Service, customer: Customer, receipt_id: str) -> None:
    async with b.session.get(f"/v1/receipts/{receipt_id}/evidence", headers=customer.auth) as r:
        assert r.status == 200, await r.text()
        bundle_bytes = await r.read()
    assert crypto.check_evidence(bundle_bytes).valid
    request = json.loads(bundle_bytes)["request"]
    assert (request["api_key_id"], request["user_agent"], request["request_id"]) == (
        customer.key_id,
        "acme-meter/2.1",
        "req_on_a",
    )


async def test_a_halt_found_by_one_gateway_stops_the_other_and_survives_restarts(
    two_servers: tuple[ServerProcess, ServerProcess], stack: GcpStack
) -> None:
    server_a, server_b = two_servers
    async with client_session(server_a.url) as session_a, client_session(server_b.url) as session_b:
        a, b = remote_service(server_a.url, session_a), remote_service(server_b.url, session_b)
        victim, bystander = await a.create_customer(), await a.create_customer()
        charged = await _charge_with_request(a, victim)
        assert (await b.post_event(bystander, b.event(bystander)))[0] == 202
        await _evidence_names_the_request(b, victim, charged)

        receipt_id, original = _swap_last_receipt_json(stack.store, victim.customer_id, _forge)
        async with session_a.post("/v1/admin/reconcile", headers=a.admin) as response:
            assert (await response.json())["audits_failed"] == 1
        incident_id = (await _until_ready_is(a, 503, "A found the damage"))["incident_id"]
        # The altered receipt, and the copies that now differ from it.
        opened = await _open_incidents(a)
        assert incident_id in opened and "hash_mismatch" in opened.values()
        # B audited nothing: the record in Spanner is what stops it.
        body = await _until_ready_is(b, 503, "the halt did not reach B")
        assert body["incident_id"] == incident_id
        public = await _refuses_charges(b, bystander, incident_id) + json.dumps(body)
        assert victim.customer_id not in public and receipt_id not in public
        assert len(await b.receipts(bystander)) == 1  # reads keep working

    # Repaired, not cleared: the record alone must hold both over a restart.
    _swap_last_receipt_json(stack.store, victim.customer_id, lambda _: original)
    for server in (server_a, server_b):
        _restart(server)
    async with client_session(server_a.url) as session_a, client_session(server_b.url) as session_b:
        a, b = remote_service(server_a.url, session_a), remote_service(server_b.url, session_b)
        for service in (a, b):
            status, body = await _readyz(service)
            assert (status, body.get("incident_id")) == (503, incident_id), body
            await _refuses_charges(service, bystander, incident_id)

        assert await _open_incidents(b) == opened
        for n, incident in enumerate(sorted(opened)):
            if n:  # an incident still open holds both
                assert (await _readyz(a))[0] == (await _readyz(b))[0] == 503
            code, out, err = await run_billing_cli(
                "halt", "clear", "--incident", incident, "--reason", "row restored from archive",
                "--url", b.url, "--admin-token", ADMIN_TOKEN,
            )
            assert code == 0, err
            assert json.loads(out)["status"] == "cleared"
        await _until_ready_is(b, 200, "the clearing did not lift B")
        await _until_ready_is(a, 200, "the clearing did not reach A")
        assert (await a.post_event(victim, a.event(victim)))[0] == 202
        code, out, err = await run_billing_cli(
            "halt", "show", "--url", a.url, "--admin-token", ADMIN_TOKEN
        )
        assert code == 0, err
        cleared = [i for i in json.loads(out)["recent"] if i["incident_id"] in opened]
        assert len(cleared) == len(opened)
        assert {i["clear_reason"] for i in cleared} == {"row restored from archive"}
    assert any(
        r.get("message") == "billing.integrity_halt_cleared" for r in server_b.log_records()
    ), "the clearing was not logged"
