"""Integrity halts as an operator and an attacker meet them: recorded in the
ledger, held over restarts, found at start-up, public answers that name the
incident and nobody's data, and lifted only by `billing halt clear`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ledger import HaltIncident
from tests.integration.conftest import (
    ADMIN_TOKEN,
    Customer,
    Service,
    base_settings,
    now_rfc3339,
    run_billing_cli,
    serve,
)

LEDGER = "ledger.sqlite3"


async def _readyz(service: Service) -> tuple[int, dict[str, Any]]:
    async with service.session.get("/readyz") as response:
        return response.status, dict(await response.json())


async def _admin_halt(service: Service) -> dict[str, Any]:
    async with service.session.get("/v1/admin/halt", headers=service.admin) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def _charge_some(service: Service, customer: Customer, count: int) -> None:
    for _ in range(count):
        assert (await service.post_event(customer, service.event(customer)))[0] == 202


def _tamper_last_amount(ledger_file: Path, customer_id: str) -> str:
    """Someone edits the amount of the customer's last receipt behind our back;
    returns that receipt's id."""
    with sqlite3.connect(ledger_file) as db:
        seq, receipt_id, document = db.execute(
            "SELECT seq, receipt_id, receipt_json FROM receipts WHERE customer_id = ? "
            "ORDER BY seq DESC LIMIT 1",
            (customer_id,),
        ).fetchone()
        forged = bytes(document).replace(b'"amount_minor":25', b'"amount_minor":1')
        assert forged != bytes(document)
        db.execute(
            "UPDATE receipts SET receipt_json = ? WHERE customer_id = ? AND seq = ?",
            (forged, customer_id, seq),
        )
    return str(receipt_id)


def _assert_no_customer_data(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a public answer names {secret!r}: {text}"


async def test_a_halt_found_by_the_audit_names_only_the_incident_in_public(
    service: Service,
) -> None:
    victim = await service.create_customer()
    bystander = await service.create_customer()
    await _charge_some(service, victim, 3)
    await _charge_some(service, bystander, 1)
    receipt_id = _tamper_last_amount(service.runtime.settings.data_dir / LEDGER, victim.customer_id)
    async with service.session.post("/v1/admin/reconcile", headers=service.admin) as response:
        assert (await response.json())["audits_failed"] == 1

    status, body = await _readyz(service)
    assert status == 503
    incident_id = body["incident_id"]
    assert body["reason"] == f"integrity halt: incident {incident_id}"
    # Another customer charging meets the halt, and learns nothing of the victim.
    async with service.session.post(
        "/v1/events", json=service.event(bystander), headers=bystander.auth
    ) as response:
        text = await response.text()
        assert response.status == 503 and "Retry-After" in response.headers
    assert json.loads(text)["error"]["code"] == "service_unavailable"
    assert incident_id in text
    for public in (text, json.dumps(body)):
        _assert_no_customer_data(public, victim.customer_id, receipt_id)
    # Reads keep working.
    assert len(await service.receipts(bystander)) == 1
    # The operator sees where, and what found it; the metric says halted.
    halt = await _admin_halt(service)
    (incident,) = halt["open"]
    assert (incident["incident_id"], incident["customer_id"]) == (incident_id, victim.customer_id)
    assert incident["source"] == "reconciler" and halt["halted"] is True
    async with service.session.get("/metrics") as response:
        assert "billing_integrity_halted 1.0" in await response.text()


async def test_a_halt_recorded_by_another_gateway_stops_charges_within_seconds(
    service: Service,
) -> None:
    """The store is the only channel: an incident written to it (as another
    gateway on the same database does) halts this one, and its clearing
    there resumes charges, each within a few seconds."""
    customer = await service.create_customer()
    halts = service.runtime.adapters.halts
    halts.record_halt(
        HaltIncident("inc_elsewhere", now_rfc3339(), "chain_broken", "elsewhere", "reconciler")
    )
    started = time.monotonic()
    while (await _readyz(service))[0] != 503:
        assert time.monotonic() - started < 5.0, "the halt did not reach this gateway"
        await asyncio.sleep(0.1)
    status, body, headers = await service.post_event(customer, service.event(customer))
    assert (status, body["error"]["code"]) == (503, "service_unavailable")
    assert "inc_elsewhere" in body["error"]["message"] and "Retry-After" in headers
    halts.clear_halt("inc_elsewhere", "checked: false alarm", now_rfc3339())
    started = time.monotonic()
    while (await _readyz(service))[0] != 200:
        assert time.monotonic() - started < 5.0, "the clearing did not reach this gateway"
        await asyncio.sleep(0.1)
    assert (await service.post_event(customer, service.event(customer)))[0] == 202


async def test_a_tamper_found_at_start_up_holds_over_restarts_until_halt_clear(
    tmp_path: Path, signing_key_file: Path
) -> None:
    settings = base_settings(tmp_path / "data", signing_key_file)
    async with serve(settings) as first:
        customer = await first.create_customer()
        await _charge_some(first, customer, 3)
    receipt_id = _tamper_last_amount(settings.data_dir / LEDGER, customer.customer_id)

    async with serve(settings) as second:
        status, body = await _readyz(second)
        assert status == 503, body
        incident_id = body["incident_id"]
        _assert_no_customer_data(json.dumps(body), customer.customer_id, receipt_id)
        status, _, headers = await second.post_event(customer, second.event(customer))
        assert status == 503 and "Retry-After" in headers
        assert len(await second.receipts(customer)) == 3  # reads keep working
        (incident,) = (await _admin_halt(second))["open"]
        assert incident["source"] == "startup_audit"
        assert (incident["customer_id"], incident["receipt_id"]) == (
            customer.customer_id,
            receipt_id,
        )

    async with serve(settings) as third:  # a plain restart does not lift it
        status, body = await _readyz(third)
        assert (status, body.get("incident_id")) == (503, incident_id)
        code, out, err = await run_billing_cli(
            "halt", "clear", "--incident", incident_id, "--reason", "restored seq 3",
            "--url", third.url, "--admin-token", ADMIN_TOKEN,
        )
        assert code == 0, err
        assert json.loads(out)["status"] == "cleared"
        assert (await _readyz(third))[0] == 200
        code, out, err = await run_billing_cli(
            "halt", "show", "--url", third.url, "--admin-token", ADMIN_TOKEN
        )
        assert code == 0, err
        shown = json.loads(out)
        assert shown["halted"] is False
        (cleared,) = [i for i in shown["recent"] if i["incident_id"] == incident_id]
        assert cleared["clear_reason"] == "restored seq 3" and cleared["cleared_at"]


async def test_a_damaged_log_at_start_up_is_a_recorded_halt_not_a_crash_loop(
    tmp_path: Path, signing_key_file: Path
) -> None:
    settings = base_settings(tmp_path / "data", signing_key_file)
    async with serve(settings) as first:
        customer = await first.create_customer()
        await _charge_some(first, customer, 3)
    with sqlite3.connect(settings.data_dir / LEDGER) as db:
        db.execute("UPDATE log_tiles SET hashes = zeroblob(length(hashes)) WHERE level = 0")
    async with serve(settings) as second:
        status, body = await _readyz(second)
        assert status == 503 and body["reason"].startswith("integrity halt")
        assert second.runtime.root.is_running  # not escalated by a failing writer
        halt = await _admin_halt(second)
        assert [i["reason"] for i in halt["open"]] == ["log_damaged"]
        assert len(await second.receipts(customer)) == 3


async def test_clearing_an_unknown_incident_is_a_documented_404(service: Service) -> None:
    async with service.session.post(
        "/v1/admin/halt/clear",
        json={"incident_id": "inc_nope", "reason": "typo"},
        headers=service.admin,
    ) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "incident_not_found"
