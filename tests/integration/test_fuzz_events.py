"""Seeded mutation fuzzing of the charge endpoints: whatever a client sends,
the answer is never a 5xx, every 4xx is a Stripe-shaped error, and what was
accepted is exactly what was charged (no charge lost, none twice).

Deterministic: the seed is fixed, so a failure reproduces; a failing body is
printed in the assertion message.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson

from tests.integration.conftest import Customer, Service

SEED = 20261122
BODIES = 400
FIELDS = (
    "idempotent_key",
    "customer_id",
    "entitlement_id",
    "amount",
    "currency",
    "usage_description",
    "timestamp",
)
ODD_STRINGS = (
    "",
    " ",
    "0",
    "-0",
    "1e3",
    "0x10",
    "1_000",
    "١٢",  # Arabic-Indic digits
    "0.25\n",
    "NaN",
    "Infinity",
    "9" * 400,
    "0." + "0" * 300 + "1",
    "\u0000",
    "\ud800",  # a lone surrogate (sent as an escape)
    "é" * 300,
    "usd",
    "2026-02-30T00:00:00Z",
    "2026-01-01T00:00:00+25:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "x" * 70_000,
)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**53, 2**63, -(2**64), 10**400])
    if kind == 3:
        return rng.choice([0.0, -0.0, 0.25, 1e308, 1e-320, 2.5e-7])
    if kind in (4, 5):
        return rng.choice(ODD_STRINGS)
    if kind == 6:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice((*FIELDS, "x")): _json_value(rng, depth + 1) for _ in range(2)}


def _encode(value: Any) -> bytes:
    """JSON text as a client might write it (big ints and lone surrogates too)."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


def _mutated_event(rng: random.Random, valid: dict[str, Any]) -> bytes:
    body: Any = dict(valid)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(6)
        field = rng.choice(FIELDS)
        if action == 0:
            body.pop(field, None)
        elif action in (1, 2):
            body[field] = _json_value(rng)
        elif action == 3:
            body[field] = rng.choice(ODD_STRINGS)
        elif action == 4:
            body["extra_" + str(rng.randrange(3))] = _json_value(rng)
        else:
            body = _json_value(rng)
            break
    text = _encode(body)
    if rng.randrange(10) == 0:  # raw damage: cut, duplicate a key, or garbage
        choice = rng.randrange(3)
        if choice == 0:
            text = text[: rng.randrange(len(text) + 1)]
        elif choice == 1 and text.startswith(b"{"):
            text = b'{"amount": "1.00", ' + text[1:]
        else:
            text = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    return text


async def _post(service: Service, path: str, customer: Customer, body: bytes) -> tuple[int, Any]:
    headers = {**customer.auth, "Content-Type": "application/json"}
    async with service.session.post(path, data=body, headers=headers) as response:
        raw = await response.read()
    try:
        return response.status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return response.status, raw


def _assert_answer(status: int, answer: Any, body: bytes) -> None:
    shown = body[:300]
    assert status < 500, f"{status} {answer!r} for {shown!r}"
    if status >= 400:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), dict), (
            f"{status} {answer!r} for {shown!r}"
        )
        assert answer["error"].get("message"), answer


async def test_no_mutated_event_gets_a_5xx_and_accepted_means_charged(service: Service) -> None:
    customer = await service.create_customer()
    rng = random.Random(SEED)
    accepted: set[str] = set()
    for _ in range(BODIES):
        body = _mutated_event(rng, service.event(customer))
        status, answer = await _post(service, "/v1/events", customer, body)
        _assert_answer(status, answer, body)
        if status == 202:
            accepted.add(answer["receipt_id"])
    receipts = await service.receipts(customer)
    assert {r["receipt_id"] for r in receipts} == accepted
    assert [r["seq"] for r in receipts] == list(range(1, len(receipts) + 1))
    # Still serving ordinary charges afterwards.
    status, _, _ = await service.post_event(customer, service.event(customer))
    assert status == 202


async def test_no_mutated_batch_gets_a_5xx(service: Service) -> None:
    customer = await service.create_customer()
    rng = random.Random(SEED + 1)
    for _ in range(BODIES // 4):
        items = [
            orjson.loads(text) if _is_json(text) else text.decode("latin-1")
            for text in (
                _mutated_event(rng, service.event(customer)) for _ in range(rng.randrange(1, 5))
            )
        ]
        body = _encode({"events": items} if rng.randrange(8) else items)
        status, answer = await _post(service, "/v1/events/batch", customer, body)
        _assert_answer(status, answer, body)
        if status == 200:
            for result in answer["results"]:
                assert result["status"] < 500, result


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
