"""Dispute evidence as a customer, a support agent and a forger meet it: one
sealed bundle per receipt that verifies offline, fails on any altered byte,
names who made the charge, and is never another customer's to read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import crypto
from tests.integration.conftest import ADMIN_TOKEN, Customer, Service, run_billing_cli


async def _charge(service: Service, customer: Customer, request_id: str) -> dict[str, Any]:
    headers = {**customer.auth, "User-Agent": "acme-meter/2.1", "X-Request-Id": request_id}
    async with service.session.post(
        "/v1/events", json=service.event(customer), headers=headers
    ) as response:
        assert response.status == 202, await response.text()
        return dict(await response.json())


async def _evidence(service: Service, receipt_id: str, headers: dict[str, str]) -> bytes:
    async with service.session.get(f"/v1/receipts/{receipt_id}/evidence", headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.read()


async def test_a_receipts_evidence_verifies_offline_and_names_who_charged(
    service: Service, tmp_path: Path
) -> None:
    alice = await service.create_customer()
    bob = await service.create_customer()
    receipts = []
    for n in range(4):
        receipts.append(await _charge(service, alice, f"req_alice_{n}"))
        await _charge(service, bob, f"req_bob_{n}")
    target = receipts[2]
    bundle_bytes = await _evidence(service, target["receipt_id"], alice.auth)

    report = crypto.check_evidence(bundle_bytes)
    assert report.valid, report.first_failure()
    bundle = json.loads(bundle_bytes)
    assert bundle["receipt"]["receipt_id"] == target["receipt_id"]
    assert bundle["request"]["api_key_id"] == alice.key_id
    assert bundle["request"]["user_agent"] == "acme-meter/2.1"
    assert bundle["request"]["request_id"] == "req_alice_2"
    assert bundle["verdict"]["valid"] is True
    # The chain ends at the receipt and holds only Alice's receipts.
    assert bundle["chain"][-1]["receipt_id"] == target["receipt_id"]
    assert {link["customer_id"] for link in bundle["chain"]} == {alice.customer_id}
    assert "req_bob" not in bundle_bytes.decode() and bob.customer_id not in bundle_bytes.decode()
    # Checked with the keys the service publishes, not the bundle's own.
    assert crypto.check_evidence(bundle_bytes, await service.jwks()).valid

    path = tmp_path / "evidence.json"
    code, out, err = await run_billing_cli(
        "evidence", target["receipt_id"], "-o", str(path),
        "--url", service.url, "--admin-token", ADMIN_TOKEN,
    )
    assert code == 0, err
    code, out, err = await run_billing_cli("verify", "--evidence", str(path))
    assert (code, out.strip().splitlines()[-1]) == (0, "evidence holds"), out + err
    forged = path.read_bytes().replace(b'"amount_minor":25', b'"amount_minor":1', 1)
    path.write_bytes(forged)
    code, out, _ = await run_billing_cli("verify", "--evidence", str(path))
    assert code == 1 and "DOES NOT hold" in out


async def test_every_altered_byte_of_a_bundle_fails_the_check(service: Service) -> None:
    customer = await service.create_customer()
    receipt = await _charge(service, customer, "req_one")
    data = await _evidence(service, receipt["receipt_id"], customer.auth)
    assert crypto.check_evidence(data).valid
    for position in range(len(data)):
        altered = bytearray(data)
        altered[position] ^= 0x01  # stays ASCII: a different character, same length
        report = crypto.check_evidence(bytes(altered))
        assert not report.valid, f"byte {position} ({chr(data[position])!r}) altered unnoticed"


async def test_evidence_is_the_customers_or_the_operators_only(service: Service) -> None:
    alice = await service.create_customer()
    mallory = await service.create_customer()
    receipt = await _charge(service, alice, "req_a")
    path = f"/v1/receipts/{receipt['receipt_id']}/evidence"
    async with service.session.get(path, headers=mallory.auth) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "receipt_not_found"
    async with service.session.get(path) as response:
        assert response.status == 401
    by_operator = await _evidence(service, receipt["receipt_id"], service.admin)
    assert crypto.check_evidence(by_operator).valid


@pytest.mark.parametrize("how", ["suffix", "accept"])
async def test_the_evidence_page_is_the_same_bundle_for_a_person(
    service: Service, how: str
) -> None:
    customer = await service.create_customer()
    receipt = await _charge(service, customer, "req_page")
    if how == "suffix":
        path, headers = f"/v1/receipts/{receipt['receipt_id']}/evidence.html", customer.auth
    else:
        path = f"/v1/receipts/{receipt['receipt_id']}/evidence"
        headers = {**customer.auth, "Accept": "text/html"}
    async with service.session.get(path, headers=headers) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "the receipt holds" in page and receipt["receipt_id"] in page
    assert "<script" not in page and "acme-meter/2.1" in page
