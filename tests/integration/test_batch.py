"""POST /v1/events/batch: each item answered on its own, charged in order."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from crypto import verify_chain
from tests.integration.conftest import Customer, Service


async def _post_batch(
    service: Service, customer: Customer, events: list[Any]
) -> tuple[int, dict[str, Any]]:
    async with service.session.post(
        "/v1/events/batch", json={"events": events}, headers=customer.auth
    ) as response:
        return response.status, await response.json()


async def test_mixed_batch_answers_each_item_and_keeps_order(service: Service) -> None:
    customer = await service.create_customer(quota="1.00")
    replayed = service.event(customer, amount="0.10")
    assert (await service.post_event(customer, replayed))[0] == 202
    events: list[Any] = [
        service.event(customer, amount="0.20", usage_description="first"),
        service.event(customer, amount="0.001"),  # too many decimals
        replayed,  # same key, same request: a replay
        {**replayed, "amount": "0.30"},  # same key, different request
        service.event(customer, amount="0.30", usage_description="second"),
        "not an object",
        service.event(customer, amount="5.00"),  # over the hard quota
        service.event(customer, amount="0.40", usage_description="third"),
    ]
    status, body = await _post_batch(service, customer, events)
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [202, 400, 202, 409, 202, 400, 402, 202]
    assert results[1]["error"]["param"] == "events[1].amount"
    assert results[2]["replayed"] is True
    assert results[3]["error"]["code"] == "idempotency_key_reuse"
    assert results[6]["error"]["code"] == "quota_exceeded"
    chain = await service.receipts(customer)
    assert [r["usage_description"] for r in chain[1:]] == ["first", "second", "third"]
    assert [r["seq"] for r in chain] == [1, 2, 3, 4]
    assert verify_chain(chain, await service.jwks()).failure is None
    assert (await service.balance(customer))["balance"] == "1.00"


async def test_batch_over_the_limit_is_refused_without_charging(service: Service) -> None:
    customer = await service.create_customer()
    events = [service.event(customer) for _ in range(101)]
    status, body = await _post_batch(service, customer, events)
    assert status == 413
    assert body["error"]["code"] == "batch_too_large"
    assert (await service.balance(customer))["seq"] == 0


@pytest.mark.parametrize("settings_overrides", [{"customer_inflight_max": 4}])
async def test_a_batch_is_never_larger_than_the_customer_bound(service: Service) -> None:
    """A batch is admitted whole, so one above the customer's in-flight bound
    would wait forever: it is refused at once, and one within it charges."""
    customer = await service.create_customer()
    status, body = await _post_batch(service, customer, [service.event(customer)] * 5)
    assert status == 413 and "at most 4 events" in body["error"]["message"]
    status, body = await _post_batch(
        service, customer, [service.event(customer) for _ in range(4)]
    )
    assert status == 200 and [r["status"] for r in body["results"]] == [202] * 4


async def test_batch_shape_errors(service: Service) -> None:
    customer = await service.create_customer()
    async with service.session.post(
        "/v1/events/batch", json=[1, 2], headers=customer.auth
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "events"
    status, body = await _post_batch(service, customer, [])
    assert (status, body["error"]["code"]) == (400, "invalid_value")


async def test_full_batch_of_one_hundred_is_durable(service: Service) -> None:
    customer = await service.create_customer()
    events = [service.event(customer, amount="0.01") for _ in range(100)]
    status, body = await _post_batch(service, customer, events)
    assert status == 200
    assert {r["status"] for r in body["results"]} == {202}
    assert (await service.balance(customer))["balance"] == "1.00"


async def test_a_full_page_of_receipts_says_more_follow(service: Service) -> None:
    customer = await service.create_customer()
    for _ in range(11):  # 1,100 receipts, in batches of 100
        events = [service.event(customer, amount="0.01") for _ in range(100)]
        status, _ = await _post_batch(service, customer, events)
        assert status == 200
    async with service.session.get(
        "/v1/receipts", params={"limit": 1000}, headers=customer.auth
    ) as response:
        page = await response.json()
    assert len(page["data"]) == 1000
    assert page["has_more"] is True
    assert page["next_after_seq"] == 1000
    assert len(await service.receipts(customer)) == 1100


async def test_keys_repeated_within_and_across_concurrent_batches_charge_once(
    service: Service,
) -> None:
    """A batch reads its keys' stored receipts once; keys charged, or settled,
    while it runs must still be answered as replays, never charged again."""
    customer = await service.create_customer()
    keys = [service.event(customer, amount="0.01") for _ in range(12)]
    rng = random.Random(7)
    # 120 events: within the per-customer in-flight bound, so none gets a 429.
    batches = [[rng.choice(keys) for _ in range(10)] for _ in range(12)]
    answers = await asyncio.gather(*(_post_batch(service, customer, b) for b in batches))
    receipt_by_key: dict[str, set[str]] = {}
    for (status, body), batch in zip(answers, batches, strict=True):
        assert status == 200
        for event, result in zip(batch, body["results"], strict=True):
            assert result["status"] == 202, result
            receipt_by_key.setdefault(event["idempotent_key"], set()).add(
                result["receipt"]["receipt_id"]
            )
    assert all(len(ids) == 1 for ids in receipt_by_key.values()), receipt_by_key
    chain = await service.receipts(customer)
    assert sorted(r["idempotency_key"] for r in chain) == sorted(receipt_by_key)
    assert (await service.balance(customer))["balance"] == f"0.{len(receipt_by_key):02d}"


async def test_a_key_repeated_at_both_ends_of_a_full_batch_charges_once(
    service: Service,
) -> None:
    """By the batch's last event its first has been committed and forgotten
    by the actor: the key must still be found, not charged again."""
    customer = await service.create_customer()
    first = service.event(customer, amount="0.01")
    middle = [service.event(customer, amount="0.01") for _ in range(98)]
    status, body = await _post_batch(service, customer, [first, *middle, first])
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [202] * 100
    assert results[-1]["replayed"] is True
    assert results[-1]["receipt"]["receipt_id"] == results[0]["receipt"]["receipt_id"]
    assert (await service.balance(customer))["balance"] == "0.99"
