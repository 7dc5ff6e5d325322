"""An operator lists customers and a customer's keys, over HTTP and with
`billing customers list|get` and `billing keys list`; a key's secret and its
hash are never shown again after it is issued."""

from __future__ import annotations

import json

from tests.integration.conftest import ADMIN_TOKEN, Service, run_billing_cli


async def test_customers_page_in_id_order_through_every_customer(service: Service) -> None:
    made = sorted([(await service.create_customer()).customer_id for _ in range(5)])
    seen: list[str] = []
    after = ""
    while True:
        params = {"limit": "2", **({"starting_after": after} if after else {})}
        async with service.session.get(
            "/v1/customers", params=params, headers=service.admin
        ) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert [c for c in seen if c in made] == made
    assert seen == sorted(seen)


async def test_listing_needs_the_admin_token(service: Service) -> None:
    customer = await service.create_customer()
    for path in ("/v1/customers", f"/v1/customers/{customer.customer_id}/api-keys"):
        async with service.session.get(path, headers=customer.auth) as response:
            assert response.status == 401, path


async def test_cli_lists_and_gets_customers_and_keys_without_secrets(service: Service) -> None:
    customer = await service.create_customer()
    async with service.session.delete(
        f"/v1/customers/{customer.customer_id}/api-keys/{customer.key_id}", headers=service.admin
    ) as response:
        assert response.status == 200
    async with service.session.post(
        f"/v1/customers/{customer.customer_id}/api-keys", headers=service.admin
    ) as response:
        second = await response.json()
    common = ("--url", service.url, "--admin-token", ADMIN_TOKEN)

    code, out, err = await run_billing_cli("customers", "get", customer.customer_id, *common)
    assert code == 0, err
    assert json.loads(out)["email"] == f"{customer.customer_id}@example.com"

    code, out, err = await run_billing_cli("customers", "list", "--limit", "100", *common)
    assert code == 0, err
    assert customer.customer_id in [c["id"] for c in json.loads(out)["data"]]

    code, out, err = await run_billing_cli("keys", "list", customer.customer_id, *common)
    assert code == 0, err
    keys = {k["key_id"]: k for k in json.loads(out)["data"]}
    assert keys[customer.key_id]["status"] == "revoked" and keys[customer.key_id]["revoked_at"]
    assert keys[second["key_id"]]["status"] == "active"
    assert customer.api_key not in out and second["api_key"] not in out
    assert "hash" not in out and "sk_" not in out

    code, _, err = await run_billing_cli("customers", "get", "cus_nobody", *common)
    assert code == 2 and "404" in err


async def test_keys_of_an_unknown_customer_are_404(service: Service) -> None:
    async with service.session.get(
        "/v1/customers/cus_nobody/api-keys", headers=service.admin
    ) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "customer_not_found"


async def test_cli_ids_stay_in_their_path_segment(service: Service) -> None:
    """An id with "/" or "?" in it names nothing: it cannot steer the CLI's
    request to another route (here: revoke another key of another path)."""
    customer = await service.create_customer()
    common = ("--url", service.url, "--admin-token", ADMIN_TOKEN)
    smuggled = f"{customer.customer_id}/api-keys/{customer.key_id}#"
    for command in (
        ("keys", "revoke", smuggled, "key_whatever"),
        ("keys", "create", smuggled),
        ("entitlements", "set", smuggled, "ent_x", "--quota", "1.00"),
    ):
        code, _, err = await run_billing_cli(*command, *common)
        assert code != 0 and "404" in err, (command, err)
    async with service.session.get("/v1/receipts", headers=customer.auth) as response:
        assert response.status == 200, "the customer's key was revoked through a smuggled id"
