"""The charge path over real HTTP: receipts, idempotency, chain, quota, isolation."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from typing import Any

import pytest
import rfc8785

from crypto import RECEIPT_CORE_FIELDS, verify_chain, verify_receipt
from tests.integration.conftest import Customer, Service


async def _bounded(
    service: Service, customer: Customer, bodies: list[dict[str, Any]], concurrency: int = 48
) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    """Post concurrently but below the per-customer in-flight bound (128)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with gate:
            return await service.post_event(customer, body)

    return list(await asyncio.gather(*(one(body) for body in bodies)))


async def test_charge_returns_a_durable_signed_receipt(service: Service) -> None:
    customer = await service.create_customer(quota="100.00")
    status, body, headers = await service.post_event(customer, service.event(customer))
    assert status == 202, body
    assert body["status"] == "processed" and body["committed"] is True  # old name kept
    assert (body["object"], body["id"]) == ("receipt", body["receipt_id"])
    assert body["balance_after"] == "0.25"
    assert body["quota_remaining"] == "99.75"
    assert body["receipt_url"].endswith(f"/v1/receipts/{body['receipt_id']}")
    assert "Idempotent-Replayed" not in headers

    async with service.session.get(
        f"/v1/receipts/{body['receipt_id']}", headers=customer.auth
    ) as response:
        assert response.status == 200
        receipt = await response.json()
    assert receipt["amount"] == "0.25" and receipt["amount_minor"] == 25
    assert (receipt["object"], receipt["id"]) == ("receipt", body["receipt_id"])
    assert receipt["seq"] == 1
    assert receipt["previous_receipt_hash"] == "sha256:" + "0" * 64
    core = {name: receipt[name] for name in RECEIPT_CORE_FIELDS}
    assert receipt["receipt_hash"] == "sha256:" + hashlib.sha256(rfc8785.dumps(core)).hexdigest()
    result = verify_receipt(receipt, await service.jwks())
    assert result.ok, result


async def test_same_key_twice_replays_the_original_receipt(service: Service) -> None:
    customer = await service.create_customer()
    event = service.event(customer)
    first = await service.post_event(customer, event)
    second = await service.post_event(customer, event)
    assert first[0] == second[0] == 202
    assert second[1]["receipt_id"] == first[1]["receipt_id"]
    assert second[2].get("Idempotent-Replayed") == "true"
    balance = await service.balance(customer)
    assert balance["balance"] == "0.25" and balance["seq"] == 1


async def test_an_account_keeps_only_receipts_in_flight_yet_replays_every_old_key(
    service: Service,
) -> None:
    """Memory per live customer stays bounded by what is in flight, and a
    key committed long ago still replays (from the store), never charges."""
    customer = await service.create_customer()
    events = [service.event(customer) for _ in range(40)]
    firsts = [await service.post_event(customer, event) for event in events]
    ref = service.runtime.services.directory.lookup(customer.customer_id)
    assert ref is not None
    actor = ref._actor_weakref()  # pykka keeps the actor behind a weak reference
    assert len(actor._recent) <= 1  # the memory a user pays for

    replays = [await service.post_event(customer, event) for event in events]
    assert [body["receipt_id"] for _, body, _ in replays] == [
        body["receipt_id"] for _, body, _ in firsts
    ]
    assert all(headers.get("Idempotent-Replayed") == "true" for _, _, headers in replays)
    balance = await service.balance(customer)
    assert balance["seq"] == 40 and balance["balance"] == "10.00"


async def test_fifty_concurrent_duplicates_charge_once(service: Service) -> None:
    customer = await service.create_customer()
    event = service.event(customer, amount="1.00")
    results = await asyncio.gather(*(service.post_event(customer, event) for _ in range(50)))
    assert {status for status, _, _ in results} == {202}
    assert len({body["receipt_id"] for _, body, _ in results}) == 1
    replays = [h for _, _, h in results if h.get("Idempotent-Replayed") == "true"]
    assert len(replays) == 49
    chain = await service.receipts(customer)
    assert len(chain) == 1
    assert (await service.balance(customer))["balance"] == "1.00"


async def test_key_reuse_with_a_different_request_is_409_and_charges_nothing(
    service: Service,
) -> None:
    customer = await service.create_customer()
    event = service.event(customer)
    assert (await service.post_event(customer, event))[0] == 202
    status, body, _ = await service.post_event(customer, {**event, "amount": "9.99"})
    assert status == 409
    assert body["error"]["code"] == "idempotency_key_reuse"
    assert (await service.balance(customer))["balance"] == "0.25"


async def test_concurrent_charges_form_one_gapless_verifiable_chain(service: Service) -> None:
    customer = await service.create_customer()
    amounts = [f"{n % 7 + 1}.{n % 100:02d}" for n in range(200)]
    results = await _bounded(
        service, customer, [service.event(customer, amount=a) for a in amounts]
    )
    assert [status for status, _, _ in results] == [202] * 200
    chain = await service.receipts(customer)
    assert [r["seq"] for r in chain] == list(range(1, 201))
    report = verify_chain(chain, await service.jwks())
    assert report.failure is None and report.verified == 200
    balance = await service.balance(customer)
    assert balance["balance_minor"] == sum(r["amount_minor"] for r in chain)
    assert chain[-1]["balance_after_minor"] == balance["balance_minor"]


async def test_hard_quota_is_never_exceeded_under_concurrency(service: Service) -> None:
    customer = await service.create_customer(quota="10.00", policy="hard")
    results = await _bounded(
        service, customer, [service.event(customer, amount="0.25") for _ in range(100)]
    )
    statuses = [status for status, _, _ in results]
    assert statuses.count(202) == 40
    assert statuses.count(402) == 60
    refused = next(body for status, body, _ in results if status == 402)
    assert refused["error"]["code"] == "quota_exceeded"
    balance = await service.balance(customer)
    assert balance["balance"] == "10.00"
    assert balance["entitlements"][0]["quota_remaining"] == "0.00"


async def test_soft_quota_charges_past_the_quota(service: Service) -> None:
    customer = await service.create_customer(quota="0.50", policy="soft")
    statuses = [(await service.post_event(customer, service.event(customer)))[0] for _ in range(3)]
    assert statuses == [202, 202, 202]
    balance = await service.balance(customer)
    assert balance["entitlements"][0]["quota_remaining"] == "-0.25"


async def test_customers_cannot_see_or_charge_each_other(service: Service) -> None:
    alice = await service.create_customer()
    bob = await service.create_customer()
    _, receipt, _ = await service.post_event(alice, service.event(alice))
    async with service.session.get(
        f"/v1/receipts/{receipt['receipt_id']}", headers=bob.auth
    ) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "receipt_not_found"
    status, body, _ = await service.post_event(bob, service.event(alice))
    assert status == 404
    assert body["error"]["param"] == "customer_id"
    assert (await service.balance(alice))["seq"] == 1
    assert (await service.receipts(bob)) == []


async def test_inactive_entitlement_and_wrong_currency_are_refused(service: Service) -> None:
    customer = await service.create_customer(status="canceled")
    status, body, _ = await service.post_event(customer, service.event(customer))
    assert (status, body["error"]["code"]) == (402, "entitlement_inactive")
    active = await service.create_customer(currency="EUR")
    status, body, _ = await service.post_event(active, service.event(active, currency="USD"))
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "currency_mismatch",
        "currency",
    )
    status, body, _ = await service.post_event(active, service.event(active, entitlement_id="nope"))
    assert (status, body["error"]["code"]) == (400, "entitlement_not_found")


async def test_entitlement_change_takes_effect_on_a_live_account(service: Service) -> None:
    customer = await service.create_customer(quota=None)
    assert (await service.post_event(customer, service.event(customer)))[0] == 202
    async with service.session.put(
        f"/v1/customers/{customer.customer_id}/entitlements/{customer.entitlement_id}",
        json={"quota": None, "policy": "hard", "status": "canceled"},
        headers=service.admin,
    ) as response:
        assert response.status == 200
    status, body, _ = await service.post_event(customer, service.event(customer))
    assert (status, body["error"]["code"]) == (402, "entitlement_inactive")


async def test_revoked_and_missing_keys_are_401(service: Service) -> None:
    customer = await service.create_customer()
    async with service.session.post("/v1/events", json=service.event(customer)) as response:
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "authentication_error"
    async with service.session.delete(
        f"/v1/customers/{customer.customer_id}/api-keys/{customer.key_id}", headers=service.admin
    ) as response:
        assert response.status == 200
    status, body, _ = await service.post_event(customer, service.event(customer))
    assert (status, body["error"]["code"]) == (401, "api_key_revoked")


async def test_an_operator_cannot_revoke_a_key_through_another_customer(service: Service) -> None:
    customer_a = await service.create_customer()
    customer_b = await service.create_customer()
    for key_id in (customer_b.key_id, "key_no_such_key"):
        async with service.session.delete(
            f"/v1/customers/{customer_a.customer_id}/api-keys/{key_id}", headers=service.admin
        ) as response:
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (404, "api_key_not_found")
            assert body["error"]["param"] == "key_id"
    # B's key still charges; A's key too.
    for customer in (customer_b, customer_a):
        assert (await service.post_event(customer, service.event(customer)))[0] == 202


@pytest.mark.parametrize(
    ("settings_overrides", "prefix"),
    [({"dev": False}, "sk_live_"), ({"dev": True}, "sk_test_")],
    ids=["production", "development"],
)
async def test_production_keys_are_live_and_development_keys_test(
    service: Service, prefix: str
) -> None:
    customer = await service.create_customer()
    assert customer.api_key.startswith(prefix)
    assert (await service.post_event(customer, service.event(customer)))[0] == 202


@pytest.mark.parametrize(
    "settings_overrides", [{"dev": False, "public_url": "https://billing.example.com"}]
)
async def test_receipt_url_uses_the_public_url_not_the_host_header(service: Service) -> None:
    """Behind Cloud Run's proxy the request says http:// and an internal host."""
    customer = await service.create_customer()
    async with service.session.post(
        "/v1/events",
        json=service.event(customer),
        headers={**customer.auth, "Host": "internal.local:8080"},
    ) as response:
        body = await response.json()
    assert response.status == 202, body
    assert body["receipt_url"] == f"https://billing.example.com/v1/receipts/{body['receipt_id']}"


async def test_receipt_list_paginates_in_chain_order(service: Service) -> None:
    customer = await service.create_customer()
    for _ in range(5):
        await service.post_event(customer, service.event(customer))
    async with service.session.get(
        "/v1/receipts", params={"after_seq": 2, "limit": 2}, headers=customer.auth
    ) as response:
        page: dict[str, Any] = await response.json()
    assert [r["seq"] for r in page["data"]] == [3, 4]
    assert page["has_more"] is True


async def test_one_customer_flooding_gets_429_while_others_are_served(service: Service) -> None:
    flooder = await service.create_customer()
    other = await service.create_customer()
    flood = [service.post_event(flooder, service.event(flooder)) for _ in range(400)]
    calm = [service.post_event(other, service.event(other)) for _ in range(10)]
    results = await asyncio.gather(*flood, *calm)
    flood_results, calm_results = results[:400], results[400:]
    assert {status for status, _, _ in calm_results} == {202}
    statuses = [status for status, _, _ in flood_results]
    assert set(statuses) == {202, 429}
    rejected = next((b, h) for s, b, h in flood_results if s == 429)
    assert rejected[0]["error"]["code"] == "customer_overloaded"
    assert rejected[1]["Retry-After"] == "1"
    assert (await service.balance(flooder))["seq"] == statuses.count(202)


async def test_reconcile_audits_every_chain_and_reports_clean(service: Service) -> None:
    customers = [await service.create_customer() for _ in range(3)]
    for customer in customers:
        for _ in range(4):
            assert (await service.post_event(customer, service.event(customer)))[0] == 202
    async with service.session.post("/v1/admin/reconcile", headers=service.admin) as response:
        assert response.status == 200, await response.text()
        summary = await response.json()
    assert summary["customers"] == 3
    assert summary["audits_ok"] == 3
    assert summary["audits_failed"] == 0 and summary["divergent"] == 0
    async with service.session.get("/readyz") as response:
        assert response.status == 200


async def test_a_tampered_ledger_halts_charges(service: Service) -> None:
    customer = await service.create_customer()
    for _ in range(3):
        assert (await service.post_event(customer, service.event(customer)))[0] == 202
    ledger_file = service.runtime.settings.data_dir / "ledger.sqlite3"
    with sqlite3.connect(ledger_file) as db:  # someone edits an amount behind our back
        row = db.execute(
            "SELECT receipt_json FROM receipts WHERE customer_id = ? AND seq = 2",
            (customer.customer_id,),
        ).fetchone()
        forged = bytes(row[0]).replace(b'"amount_minor":25', b'"amount_minor":1')
        db.execute(
            "UPDATE receipts SET receipt_json = ? WHERE customer_id = ? AND seq = 2",
            (forged, customer.customer_id),
        )
    async with service.session.post("/v1/admin/reconcile", headers=service.admin) as response:
        summary = await response.json()
    assert summary["audits_failed"] == 1
    async with service.session.get("/readyz") as response:
        assert response.status == 503
        assert "integrity" in (await response.json())["reason"]
    status, body, headers = await service.post_event(customer, service.event(customer))
    assert (status, body["error"]["code"]) == (503, "service_unavailable")
    assert "Retry-After" in headers
