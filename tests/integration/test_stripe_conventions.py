"""Stripe's conventions, as a client developer who knows Stripe expects them:
the Idempotency-Key header, list objects with cursors, `id` and `object` on
every object, unknown parameters refused, `doc_url` into the docs page, and
JSON-number amounts read as decimals."""

from __future__ import annotations

import re
from typing import Any

from tests.integration.conftest import Customer, Service


async def _post(
    service: Service, customer: Customer, body: dict[str, Any], key: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = dict(customer.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    async with service.session.post("/v1/events", json=body, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def _get(service: Service, path: str, headers: dict[str, str], **params: Any) -> Any:
    async with service.session.get(path, params=params, headers=headers) as response:
        return response.status, await response.json()


async def test_the_idempotency_key_header_charges_once_like_the_body_key(
    service: Service,
) -> None:
    customer = await service.create_customer()
    event = service.event(customer)
    key = event.pop("idempotent_key")
    first = await _post(service, customer, event, key)
    assert first[0] == 202, first[1]
    # The header and the body key are one key: a retry in either form replays.
    again = await _post(service, customer, {**event, "idempotent_key": key}, None)
    both = await _post(service, customer, {**event, "idempotent_key": key}, key)
    for status, body, headers in (again, both):
        assert status == 202 and body["receipt_id"] == first[1]["receipt_id"]
        assert headers.get("Idempotent-Replayed") == "true"
    assert (await service.balance(customer))["balance"] == "0.25"

    status, body, _ = await _post(service, customer, {**event, "idempotent_key": "other"}, key)
    assert (status, body["error"]["code"]) == (400, "idempotency_key_mismatch")
    status, body, _ = await _post(service, customer, event, None)
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400, "parameter_missing", "idempotent_key")
    status, body, _ = await _post(service, customer, event, "")
    assert (status, body["error"]["param"]) == (400, "Idempotency-Key")
    async with service.session.post(
        "/v1/events/batch", json={"events": [service.event(customer)]},
        headers={**customer.auth, "Idempotency-Key": "k"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "Idempotency-Key"
    assert (await service.balance(customer))["seq"] == 1


async def test_json_number_amounts_are_read_as_decimals(service: Service) -> None:
    """The original API's example: `"amount": 150.00` answers "processed"."""
    usd = await service.create_customer()
    status, body, _ = await service.post_event(usd, service.event(usd, amount=150.00))
    assert status == 202, body
    assert (body["amount"], body["status"]) == ("150.00", "processed")
    # 0.1 + 0.2 is not 0.3 in binary floats; as decimal text it is exact.
    status, body, _ = await service.post_event(usd, service.event(usd, amount=0.3))
    assert (status, body["amount"]) == (202, "0.30")
    assert (await service.balance(usd))["balance_minor"] == 15030
    jpy = await service.create_customer(currency="JPY")
    status, body, _ = await service.post_event(jpy, service.event(jpy, amount=150))
    assert (status, body["amount"]) == (202, "150")
    status, body, _ = await service.post_event(jpy, service.event(jpy, amount=1.5))
    assert (status, body["error"]["code"]) == (400, "amount_precision")
    status, body, _ = await service.post_event(jpy, service.event(jpy, amount=1e30))
    assert (status, body["error"]["code"]) == (400, "amount_too_large")


async def test_receipts_list_is_a_stripe_list_with_cursors(service: Service) -> None:
    customer = await service.create_customer()
    ids = []
    for _ in range(5):
        ids.append((await service.post_event(customer, service.event(customer)))[1]["id"])
    auth = customer.auth
    status, page = await _get(service, "/v1/receipts", auth, limit=2)
    assert status == 200
    assert (page["object"], page["url"], page["has_more"]) == ("list", "/v1/receipts", True)
    assert [r["id"] for r in page["data"]] == ids[:2]
    status, page = await _get(service, "/v1/receipts", auth, limit=2, starting_after=ids[1])
    assert [r["id"] for r in page["data"]] == ids[2:4] and page["has_more"]
    status, page = await _get(service, "/v1/receipts", auth, limit=2, starting_after=ids[3])
    assert [r["id"] for r in page["data"]] == ids[4:] and not page["has_more"]
    # ending_before pages backward: the receipts just before, still oldest first.
    status, page = await _get(service, "/v1/receipts", auth, limit=2, ending_before=ids[4])
    assert [r["id"] for r in page["data"]] == ids[2:4] and page["has_more"]
    status, page = await _get(service, "/v1/receipts", auth, limit=3, ending_before=ids[2])
    assert [r["id"] for r in page["data"]] == ids[:2] and not page["has_more"]
    status, page = await _get(service, "/v1/receipts", auth, ending_before=ids[0])
    assert (status, page["data"], page["has_more"]) == (200, [], False)
    # The seq cursor stays, as documented.
    status, page = await _get(service, "/v1/receipts", auth, after_seq=3)
    assert [r["id"] for r in page["data"]] == ids[3:]

    status, body = await _get(service, "/v1/receipts", auth, starting_after=ids[0],
                              ending_before=ids[4])
    assert (status, body["error"]["code"]) == (400, "parameter_conflict")
    other = await service.create_customer()
    status, body = await _get(service, "/v1/receipts", other.auth, starting_after=ids[0])
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400, "resource_missing", "starting_after")


async def test_unknown_parameters_are_refused_not_ignored(service: Service) -> None:
    customer = await service.create_customer()
    for path, params in (("/v1/receipts", {"lmit": "5"}), ("/v1/balance", {"expand": "x"})):
        status, body = await _get(service, path, customer.auth, **params)
        assert (status, body["error"]["code"]) == (400, "parameter_unknown")
        assert body["error"]["param"] == next(iter(params))
    async with service.session.post(
        "/v1/customers", json={"email": "a@example.com", "currency": "USD", "name": "Ann"},
        headers=service.admin,
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "name"
    async with service.session.put(
        f"/v1/customers/{customer.customer_id}/entitlements/api_calls",
        json={"quota": None, "polcy": "soft"}, headers=service.admin,
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == "polcy"
    batch = {"events": [service.event(customer, colour="red")], "dry_run": True}
    async with service.session.post("/v1/events/batch", json=batch,
                                    headers=customer.auth) as response:
        assert (response.status, (await response.json())["error"]["param"]) == (400, "dry_run")
    del batch["dry_run"]
    async with service.session.post("/v1/events/batch", json=batch,
                                    headers=customer.auth) as response:
        result = (await response.json())["data"][0]
        assert (result["status"], result["error"]["param"]) == (400, "events[0].colour")
    assert (await service.balance(customer))["seq"] == 0  # nothing was charged


async def test_every_object_has_id_and_object(service: Service) -> None:
    customer = await service.create_customer()
    balance = await service.balance(customer)
    assert (balance["object"], balance["id"]) == ("balance", customer.customer_id)
    assert [(e["object"], e["id"]) for e in balance["entitlements"]] == [
        ("entitlement", "api_calls")]
    admin = service.admin
    _, got = await _get(service, f"/v1/customers/{customer.customer_id}", admin)
    assert (got["object"], got["id"], got["customer_id"]) == (
        "customer", customer.customer_id, customer.customer_id)
    async with service.session.post(
        f"/v1/customers/{customer.customer_id}/api-keys", headers=admin
    ) as response:
        key = await response.json()
    assert (key["object"], key["id"]) == ("api_key", key["key_id"])
    async with service.session.delete(
        f"/v1/customers/{customer.customer_id}/api-keys/{key['key_id']}", headers=admin
    ) as response:
        revoked = await response.json()
    assert (revoked["object"], revoked["id"], revoked["deleted"]) == (
        "api_key", key["key_id"], True)


async def test_doc_url_points_at_the_codes_anchor_in_the_docs_page(service: Service) -> None:
    customer = await service.create_customer()
    status, body, _ = await service.post_event(customer, service.event(customer, amount="x"))
    assert status == 400
    doc_url = body["error"]["doc_url"]
    path, _, anchor = doc_url.partition("#")
    async with service.session.get(path) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        csp = response.headers["Content-Security-Policy"]
        page = await response.text()
    assert anchor == "error-invalid_amount" and f'id="{anchor}"' in page
    # Self-contained: nothing from another origin, no script.
    assert "default-src 'none'" in csp and "script" not in csp
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    for operation_id in ("postEvent", "listReceipts", "stripeWebhook"):
        assert f'id="op-{operation_id}"' in page


async def test_the_document_is_served(service: Service) -> None:
    async with service.session.get("/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["components"]["securitySchemes"]) == {
        "apiKey", "adminToken", "serviceToken", "metricsToken", "stripeSignature"}
    assert "/v1/events" in document["paths"]
