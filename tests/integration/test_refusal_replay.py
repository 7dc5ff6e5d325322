"""A refused charge keeps its answer under its idempotency key, as Stripe
does: the same key sent again gets the same refusal (with
`Idempotent-Replayed: true`), never a charge, even after the quota grows,
across a restart, and through the batch endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import Customer, Service, base_settings, serve


async def _set_quota(service: Service, customer: Customer, quota: str) -> None:
    async with service.session.put(
        f"/v1/customers/{customer.customer_id}/entitlements/{customer.entitlement_id}",
        json={"quota": quota, "policy": "hard", "status": "active"},
        headers=service.admin,
    ) as response:
        assert response.status == 200, await response.text()


async def _post_batch(
    service: Service, customer: Customer, events: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    async with service.session.post(
        "/v1/events/batch", json={"events": events}, headers=customer.auth
    ) as response:
        assert response.status == 200, await response.text()
        return list((await response.json())["data"])


async def test_a_refused_key_replays_its_refusal_after_the_quota_grows(
    service: Service,
) -> None:
    customer = await service.create_customer(quota="1.00")
    refused_event = service.event(customer, amount="5.00")
    status, first, headers = await service.post_event(customer, refused_event)
    assert (status, first["error"]["code"]) == (402, "quota_exceeded")
    assert "Idempotent-Replayed" not in headers

    await _set_quota(service, customer, "100.00")
    status, again, headers = await service.post_event(customer, refused_event)
    assert (status, again) == (402, first)
    assert headers.get("Idempotent-Replayed") == "true"
    assert await service.receipts(customer) == []
    assert (await service.balance(customer))["balance"] == "0.00"

    # Another request under the refused key is refused as for a receipt's key.
    status, other, _ = await service.post_event(
        customer, {**refused_event, "amount": "1.00"}
    )
    assert (status, other["error"]["code"]) == (409, "idempotency_key_reuse")
    # A new key is charged: only the refused key is bound to its answer.
    status, body, _ = await service.post_event(customer, service.event(customer, amount="5.00"))
    assert status == 202, body


async def test_a_refusal_is_replayed_after_a_restart(
    tmp_path: Path, signing_key_file: Path
) -> None:
    settings = base_settings(tmp_path / "data", signing_key_file)
    async with serve(settings) as service:
        customer = await service.create_customer(quota="1.00")
        refused_event = service.event(customer, amount="5.00")
        status, first, _ = await service.post_event(customer, refused_event)
        assert status == 402, first
        await _set_quota(service, customer, "100.00")
    async with serve(settings) as service:
        status, again, headers = await service.post_event(customer, refused_event)
        assert (status, again) == (402, first)
        assert headers.get("Idempotent-Replayed") == "true"
    async with serve(settings) as service:  # answered from the store, not memory
        status, other, _ = await service.post_event(
            customer, {**refused_event, "usage_description": "another call"}
        )
        assert (status, other["error"]["code"]) == (409, "idempotency_key_reuse")
        assert await service.receipts(customer) == []


async def test_the_batch_endpoint_replays_refusals_too(service: Service) -> None:
    customer = await service.create_customer(quota="1.00")
    charged = service.event(customer, amount="1.00")
    refused_event = service.event(customer, amount="5.00")
    first = await _post_batch(service, customer, [charged, refused_event])
    assert first[0]["status"] == 202 and first[0]["replayed"] is False
    assert first[1]["status"] == 402 and first[1]["error"]["code"] == "quota_exceeded"
    assert first[1].get("replayed") is not True

    await _set_quota(service, customer, "100.00")
    again = await _post_batch(service, customer, [charged, refused_event])
    assert again[0]["replayed"] is True
    assert again[0]["receipt"]["receipt_id"] == first[0]["receipt"]["receipt_id"]
    assert again[1] == {**first[1], "replayed": True}
    # The single-event endpoint shares the key space with the batch's.
    status, body, headers = await service.post_event(customer, refused_event)
    assert (status, body["error"]) == (402, first[1]["error"])
    assert headers.get("Idempotent-Replayed") == "true"
    assert [r["amount"] for r in await service.receipts(customer)] == ["1.00"]


async def test_a_payment_required_refusal_is_replayed_once_paid(service: Service) -> None:
    customer = await service.create_customer(quota="10.00", status="past_due")
    event = service.event(customer)
    status, first, _ = await service.post_event(customer, event)
    assert (status, first["error"]["code"]) == (402, "payment_required")
    await _set_quota(service, customer, "10.00")  # paid: active again
    status, again, headers = await service.post_event(customer, event)
    assert (status, again, headers.get("Idempotent-Replayed")) == (402, first, "true")
    assert await service.receipts(customer) == []
