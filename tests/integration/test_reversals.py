"""Reversals through the real service: a new receipt in the chain with a
negative amount, never more than what is left of the original (concurrent
reversals too), balance and quota restored, idempotent under its own key,
and the chain still verifies."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from actors.integrity._audit import _Walk, audit_customer
from tests.integration.conftest import Customer, Service


async def _reverse(service: Service, receipt_id: str, key: str,
                   body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with service.session.post(
        f"/v1/receipts/{receipt_id}/reversals", json=body,
        headers={**service.admin, "Idempotency-Key": key},
    ) as response:
        return response.status, await response.json(), dict(response.headers)


async def _charge(service: Service, customer: Customer, amount: str) -> str:
    status, body, _ = await service.post_event(customer, service.event(customer, amount=amount))
    assert status == 202, body
    return str(body["receipt_id"])


async def test_a_reversal_restores_balance_and_quota_and_is_idempotent(service: Service) -> None:
    customer = await service.create_customer(quota="10.00")
    original = await _charge(service, customer, "6.00")
    await _charge(service, customer, "4.00")
    status, body, _ = await service.post_event(customer, service.event(customer, amount="0.01"))
    assert (status, body["error"]["code"]) == (402, "quota_exceeded")

    status, reversal, _ = await _reverse(service, original, "ops-1",
                                         {"amount": "2.50", "reason": "outage credit"})
    assert status == 202, reversal
    assert reversal["amount"] == "-2.50" and reversal["balance_after"] == "7.50"
    again_status, again, headers = await _reverse(service, original, "ops-1",
                                                  {"amount": "2.50", "reason": "outage credit"})
    assert (again_status, again["receipt_id"]) == (202, reversal["receipt_id"])
    assert headers.get("Idempotent-Replayed") == "true"
    # Same key, another request: refused, nothing appended.
    status, body, _ = await _reverse(service, original, "ops-1",
                                     {"amount": "1.00", "reason": "outage credit"})
    assert (status, body["error"]["code"]) == (409, "idempotency_key_reuse")

    balance = await service.balance(customer)
    assert balance["balance"] == "7.50"
    assert balance["entitlements"][0]["used"] == "7.50"
    assert await _charge(service, customer, "2.50")  # the quota came back
    receipts = await service.receipts(customer)
    assert [r["amount_minor"] for r in receipts] == [600, 400, -250, 250]
    reversed_one = receipts[2]
    assert reversed_one["idempotency_key"] == f"reversal:{original}:ops-1"
    assert reversed_one["usage_description"] == "outage credit"
    assert reversed_one["previous_receipt_hash"] == receipts[1]["receipt_hash"]


async def test_a_reversal_larger_than_what_is_left_is_refused_and_changes_nothing(
    service: Service,
) -> None:
    customer = await service.create_customer()
    original = await _charge(service, customer, "3.00")
    assert (await _reverse(service, original, "a", {"amount": "2.00", "reason": "x"}))[0] == 202
    before = await service.receipts(customer)
    status, body, _ = await _reverse(service, original, "b", {"amount": "1.01", "reason": "x"})
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400, "reversal_exceeds_receipt", "amount")
    assert await service.receipts(customer) == before
    # A reversal cannot be reversed; an unknown receipt is 404.
    status, body, _ = await _reverse(service, before[-1]["receipt_id"], "c", {"reason": "x"})
    assert (status, body["error"]["code"]) == (400, "reversal_not_allowed")
    status, body, _ = await _reverse(service, "rcpt_nope", "d", {"reason": "x"})
    assert (status, body["error"]["code"]) == (404, "receipt_not_found")
    # Without an amount, all that is left is reversed.
    status, rest, _ = await _reverse(service, original, "e", {"reason": "x"})
    assert (status, rest["amount"]) == (202, "-1.00")
    assert (await service.balance(customer))["balance"] == "0.00"


async def test_concurrent_reversals_never_exceed_the_receipt(service: Service) -> None:
    customer = await service.create_customer()
    original = await _charge(service, customer, "5.00")
    results = await asyncio.gather(*(
        _reverse(service, original, f"k-{index}", {"amount": "0.70", "reason": "race"})
        for index in range(12)
    ))
    accepted = [body for status, body, _ in results if status == 202]
    refused = [body["error"]["code"] for status, body, _ in results if status != 202]
    assert len(accepted) == 7  # 7 x 0.70 = 4.90 <= 5.00 < 8 x 0.70
    assert set(refused) == {"reversal_exceeds_receipt"}
    assert (await service.balance(customer))["balance"] == "0.10"


async def test_customer_keys_cannot_pose_as_reversals(service: Service) -> None:
    customer = await service.create_customer()
    status, body, _ = await service.post_event(
        customer, service.event(customer, idempotent_key="reversal:rcpt_x:1"))
    assert (status, body["error"]["code"]) == (400, "invalid_value")


async def test_the_audit_accepts_reversals_and_refuses_an_unexplained_negative_receipt(
    service: Service,
) -> None:
    customer = await service.create_customer()
    original = await _charge(service, customer, "3.00")
    await _reverse(service, original, "a", {"amount": "1.00", "reason": "x"})
    await _reverse(service, original, "b", {"reason": "x"})
    await _charge(service, customer, "1.00")
    services = service.runtime.services
    store = service.runtime.adapters.store
    audit = audit_customer(store, services.key_ring.jwks(), customer.customer_id,
                           services.log_proofs)
    assert audit.ok, audit
    # The same chain with a negative receipt that names no charge.
    stored = list(store.iter_receipts(customer.customer_id))
    document = orjson.loads(stored[1].receipt_json)
    document["idempotency_key"] = "refund-without-reason"
    forged = dataclasses.replace(stored[1], idempotency_key="refund-without-reason",
                                 receipt_json=orjson.dumps(document))
    walk = _Walk(head_seq=len(stored))
    list(walk.documents(iter([stored[0], forged, *stored[2:]])))
    assert walk.problem is not None and walk.problem.reason == "invalid_reversal"
