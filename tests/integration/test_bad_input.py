"""Every client mistake gets a Stripe-shaped 4xx with the right code and param,
never a 500, and the service stays healthy afterwards."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import Service


def _ts(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


BAD_EVENTS: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    ("missing amount", {"amount": None}, 400, "parameter_missing", "amount"),
    ("number, too many decimals", {"amount": 150.001}, 400, "amount_precision", "amount"),
    ("negative number", {"amount": -1.5}, 400, "invalid_amount", "amount"),
    ("unknown field", {"ammount": "1.00"}, 400, "parameter_unknown", "ammount"),
    ("too many decimals", {"amount": "0.255"}, 400, "amount_precision", "amount"),
    ("zero amount", {"amount": "0"}, 400, "invalid_amount", "amount"),
    ("negative amount", {"amount": "-1.00"}, 400, "invalid_amount", "amount"),
    ("not a number", {"amount": "ten"}, 400, "invalid_amount", "amount"),
    # `$` matches before a final newline: each of these was charged as 1.50.
    ("amount with final newline", {"amount": "1.50\n"}, 400, "invalid_amount", "amount"),
    ("amount with leading space", {"amount": " 1.50"}, 400, "invalid_amount", "amount"),
    ("amount with final tab", {"amount": "1.50\t"}, 400, "invalid_amount", "amount"),
    ("amount with a NUL", {"amount": "1.50\x00"}, 400, "invalid_amount", "amount"),
    ("amount in Arabic digits", {"amount": "\u0661.50"}, 400, "invalid_amount", "amount"),
    (
        "timestamp with final newline",
        {"timestamp": _ts(timedelta(0)) + "\n"},
        400,
        "invalid_timestamp",
        "timestamp",
    ),
    (
        "timestamp in ISO 8601 basic format, not RFC 3339",
        {"timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")},
        400,
        "invalid_timestamp",
        "timestamp",
    ),
    ("unknown currency", {"currency": "XYZ"}, 400, "unknown_currency", "currency"),
    ("currency as int", {"currency": 840}, 400, "invalid_type", "currency"),
    (
        "future timestamp",
        {"timestamp": _ts(timedelta(minutes=10))},
        400,
        "timestamp_in_future",
        "timestamp",
    ),
    (
        "old timestamp",
        {"timestamp": _ts(-timedelta(days=36))},
        400,
        "timestamp_too_old",
        "timestamp",
    ),
    ("timestamp not RFC 3339", {"timestamp": "yesterday"}, 400, "invalid_timestamp", "timestamp"),
    (
        "timestamp without zone",
        {"timestamp": "2026-01-01T00:00:00"},
        400,
        "invalid_timestamp",
        "timestamp",
    ),
    ("key too long", {"idempotent_key": "k" * 256}, 400, "too_long", "idempotent_key"),
    ("key missing", {"idempotent_key": None}, 400, "parameter_missing", "idempotent_key"),
    (
        "description too long",
        {"usage_description": "d" * 1001},
        400,
        "too_long",
        "usage_description",
    ),
    ("entitlement wrong type", {"entitlement_id": ["a"]}, 400, "invalid_type", "entitlement_id"),
    (
        "unknown entitlement",
        {"entitlement_id": "missing"},
        400,
        "entitlement_not_found",
        "entitlement_id",
    ),
    (
        "other customer",
        {"customer_id": "cus_someone_else"},
        404,
        "customer_not_found",
        "customer_id",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "status", "code", "param"),
    [case[1:] for case in BAD_EVENTS],
    ids=[case[0] for case in BAD_EVENTS],
)
async def test_bad_event_fields(
    service: Service, overrides: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    customer = await service.create_customer()
    event = service.event(customer)
    for name, value in overrides.items():
        if value is None:
            event.pop(name)
        else:
            event[name] = value
    got_status, body, _ = await service.post_event(customer, event)
    assert got_status == status, body
    assert body["error"]["code"] == code
    assert body["error"]["param"] == param
    assert set(body["error"]) == {"type", "code", "message", "param", "doc_url"}
    assert body["error"]["doc_url"] == f"/docs#error-{code}"
    # Healthy afterwards: a good charge still works.
    assert (await service.post_event(customer, service.event(customer)))[0] == 202


async def _raw_post(
    service: Service, headers: dict[str, str], data: bytes
) -> tuple[int, dict[str, Any]]:
    async with service.session.post("/v1/events", data=data, headers=headers) as response:
        return response.status, await response.json()


async def test_body_level_mistakes(service: Service) -> None:
    customer = await service.create_customer()
    json_headers = {**customer.auth, "Content-Type": "application/json"}
    status, body = await _raw_post(service, json_headers, b"{not json")
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    status, body = await _raw_post(service, {**customer.auth, "Content-Type": "text/plain"}, b"x")
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    status, body = await _raw_post(service, json_headers, b'{"a": "' + b"x" * 70_000 + b'"}')
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    deep = b"[" * 40 + b"]" * 40
    status, body = await _raw_post(service, json_headers, deep)
    assert (status, body["error"]["code"]) == (400, "json_too_deep")
    status, body = await _raw_post(service, json_headers, b"[1, 2]")
    assert (status, body["error"]["code"]) == (400, "invalid_type")
    status, body = await _raw_post(service, {**json_headers, "Authorization": "Bearer sk_x"}, b"{}")
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    async with service.session.get("/no/such/route") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "resource_missing"
    async with service.session.get("/healthz") as response:
        assert response.status == 200
    async with service.session.get("/readyz") as response:
        assert response.status == 200


async def test_admin_routes_validate_too(service: Service) -> None:
    async with service.session.post(
        "/v1/customers", json={"email": "a@example.com", "currency": "USD"}
    ) as response:
        assert response.status == 401
    async with service.session.post(
        "/v1/customers", json={"email": "not-an-email", "currency": "USD"}, headers=service.admin
    ) as response:
        body = await response.json()
        assert (response.status, body["error"]["param"]) == (400, "email")
    async with service.session.post(
        "/v1/customers/cus_missing/api-keys", headers=service.admin
    ) as response:
        assert response.status == 404
    # `$` matched before a final newline: these ids and emails were stored.
    for body, param in [
        ({"customer_id": "cus_nl\n", "email": "nl@example.com"}, "customer_id"),
        ({"email": "nl@example.com\n"}, "email"),
        ({"email": "nul\x00@example.com"}, "email"),
    ]:
        async with service.session.post(
            "/v1/customers", json={**body, "currency": "USD"}, headers=service.admin
        ) as response:
            assert (response.status, (await response.json())["error"]["param"]) == (400, param)
    customer = await service.create_customer()
    async with service.session.post(
        "/v1/customers",
        json={"customer_id": customer.customer_id, "email": "b@example.com", "currency": "USD"},
        headers=service.admin,
    ) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (
            409,
            "customer_exists",
        )
    async with service.session.put(
        f"/v1/customers/{customer.customer_id}/entitlements/e1",
        json={"quota": "1.001", "policy": "hard"},
        headers=service.admin,
    ) as response:
        assert (response.status, (await response.json())["error"]["param"]) == (400, "quota")
    async with service.session.put(
        f"/v1/customers/{customer.customer_id}/entitlements/e1%0A",
        json={"quota": None},
        headers=service.admin,
    ) as response:
        assert (response.status, (await response.json())["error"]["param"]) == (
            400,
            "entitlement_id",
        )


async def test_an_unavailable_store_is_a_retry_safe_503_not_a_500(service: Service) -> None:
    customer = await service.create_customer()
    service.runtime.adapters.store.close()  # the disk went away, say
    async with service.session.post(
        "/v1/customers", json={"email": "x@example.com", "currency": "USD"}, headers=service.admin
    ) as response:
        body = await response.json()
        assert response.status == 503, body
        assert body["error"]["code"] == "store_unavailable"
        assert response.headers["Retry-After"]
    async with service.session.get("/v1/balance", headers=customer.auth) as response:
        assert response.status == 503


async def test_a_client_hanging_up_mid_body_is_not_a_server_error(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Load generators stop mid-request; that must not show up as a 500."""
    customer = await service.create_customer()
    host, port = service.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            "POST /v1/events/batch HTTP/1.1\r\n"
            f"Host: {host}\r\nAuthorization: Bearer {customer.api_key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
            '{"events": ['
        ).encode()
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)

    async with service.session.get("/metrics") as response:
        metrics = await response.text()
    batch_lines = [line for line in metrics.splitlines() if "/v1/events/batch" in line]
    assert any('status="499"' in line for line in batch_lines), batch_lines
    assert not any('status="500"' in line for line in batch_lines), batch_lines
    async with service.session.get("/healthz") as response:
        assert response.status == 200
