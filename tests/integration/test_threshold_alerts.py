"""Threshold alerts through the real service: a customer's endpoint (a small
HTTP receiver on loopback) gets each threshold once per period, signed so
that Stripe's own library verifies it, retried until it lands under one
event id, and nothing lost or doubled over a restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import stripe
from aiohttp import web

from tests.integration._proc import wait_until
from tests.integration.conftest import Customer, Service, base_settings, serve

TOLERANCE_S = 300


@dataclass
class Receiver:
    """The customer's webhook endpoint: records each POST and its answer,
    500 while `failures_left` > 0, else 200."""

    url: str = ""
    posts: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    failures_left: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.append((body, dict(request.headers)))
        status = 200
        if self.failures_left > 0:
            self.failures_left -= 1
            status = 500
        self.statuses.append(status)
        return web.Response(status=status, text="ok" if status == 200 else "try again")

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for body, _ in self.posts]

    def delivered_ids(self) -> list[str]:
        """Event ids of the POSTs answered 200."""
        return [str(event["id"]) for event, status in zip(self.events(), self.statuses,
                                                          strict=True) if status == 200]


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/hooks"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # 200 charges of one customer at once, none shed with 429.
    return {"customer_inflight_max": 256}


async def _endpoint(service: Service, customer: Customer, url: str) -> dict[str, Any]:
    async with service.session.post("/v1/webhook_endpoints", json={"url": url},
                                    headers=customer.auth) as response:
        assert response.status == 201, await response.text()
        return dict(await response.json())


async def _events(service: Service, customer: Customer, **params: Any) -> dict[str, Any]:
    async with service.session.get("/v1/events/outbound", params=params,
                                   headers=customer.auth) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def _charge(service: Service, customer: Customer, amount: str) -> dict[str, Any]:
    status, body, _ = await service.post_event(customer, service.event(customer, amount=amount))
    assert status == 202, body
    return body


def _verify(body: bytes, headers: dict[str, str], secret: str) -> None:
    """The receiver's standard check: Stripe's library on our header."""
    stripe.WebhookSignature.verify_header(body.decode(), headers["Vexa-Signature"], secret,
                                          TOLERANCE_S)


async def test_each_threshold_fires_once_under_200_concurrent_charges(service: Service) -> None:
    customer = await service.create_customer(quota="100.00")
    async with receiving() as receiver:
        endpoint = await _endpoint(service, customer, receiver.url)
        results = await asyncio.gather(*(
            service.post_event(customer, service.event(customer, amount="0.50"))
            for _ in range(200)
        ))
        assert [status for status, _, _ in results] == [202] * 200
        assert (await service.balance(customer))["entitlements"][0]["used"] == "100.00"

        async def three_delivered() -> bool:
            return len(receiver.posts) >= 3
        assert await wait_until(three_delivered, timeout_s=10)
        await asyncio.sleep(1.0)  # time enough for any extra delivery to show up
        events = receiver.events()
        assert sorted(e["data"]["object"]["threshold_pct"] for e in events) == [50, 80, 100]
        assert len({e["id"] for e in events}) == 3
        for body, headers in receiver.posts:
            _verify(body, headers, endpoint["secret"])
        receipts = {r["receipt_id"]: r for r in await service.receipts(customer)}
        for event in events:
            alert = event["data"]["object"]
            pct, used = alert["threshold_pct"], alert["used_minor"]
            # Set off by the charge that took usage to the threshold, no other.
            assert used >= pct * 100 > used - 50
            assert receipts[alert["receipt_id"]]["quota_remaining_minor"] == 10_000 - used

    listed = await _events(service, customer)
    assert listed["object"] == "list" and not listed["has_more"]
    assert [e["data"]["object"]["threshold_pct"] for e in listed["data"]] == [100, 80, 50]
    assert {e["delivery"]["status"] for e in listed["data"]} == {"delivered"}
    assert {e["delivery"]["attempts"] for e in listed["data"]} == {1}
    # Paging, as Stripe pages: newest first, starting_after goes to older ones.
    first = await _events(service, customer, limit=2)
    assert first["has_more"] and len(first["data"]) == 2
    rest = await _events(service, customer, limit=2, starting_after=first["data"][-1]["id"])
    assert [e["id"] for e in first["data"] + rest["data"]] == [e["id"] for e in listed["data"]]
    assert not rest["has_more"]
    back = await _events(service, customer, ending_before=rest["data"][0]["id"])
    assert [e["id"] for e in back["data"]] == [e["id"] for e in first["data"]]


async def test_a_failed_delivery_is_retried_until_it_lands_as_one_event(
    service: Service,
) -> None:
    customer = await service.create_customer(quota="1.00")
    async with receiving() as receiver:
        receiver.failures_left = 2
        endpoint = await _endpoint(service, customer, receiver.url)
        await _charge(service, customer, "0.60")

        async def landed() -> bool:
            return bool(receiver.delivered_ids())
        assert await wait_until(landed, timeout_s=15)
        await asyncio.sleep(1.0)
        assert len(receiver.posts) == 3  # 500, 500, 200
        bodies = {body for body, _ in receiver.posts}
        assert len(bodies) == 1  # the same event, byte for byte, every time
        for body, headers in receiver.posts:
            _verify(body, headers, endpoint["secret"])
    (event,) = (await _events(service, customer))["data"]
    assert event["id"] == orjson.loads(bodies.pop())["id"]
    assert event["delivery"]["status"] == "delivered"
    assert event["delivery"]["attempts"] == 3


async def test_a_restart_loses_and_doubles_nothing(tmp_path: Path, signing_key_file: Path) -> None:
    settings = base_settings(tmp_path / "data", signing_key_file)
    async with receiving() as receiver:
        receiver.failures_left = 10_000  # down until the restart
        async with serve(settings) as service:
            customer = await service.create_customer(quota="10.00")
            await _endpoint(service, customer, receiver.url)
            first = await _charge(service, customer, "6.00")  # 50%
            await _charge(service, customer, "2.50")  # 80%

            async def tried() -> bool:
                return len(receiver.posts) >= 2  # the 80% one waits behind the 50% one
            assert await wait_until(tried, timeout_s=10)
            before = (await _events(service, customer))["data"]
            assert [e["data"]["object"]["threshold_pct"] for e in before] == [80, 50]
            assert {e["delivery"]["status"] for e in before} == {"pending"}
        receiver.failures_left = 0
        async with serve(settings) as service:
            # Back under 50% and up again: the 50% alert already fired this period.
            async with service.session.post(
                f"/v1/receipts/{first['receipt_id']}/reversals", json={"reason": "test"},
                headers={**service.admin, "Idempotency-Key": "r1"},
            ) as response:
                assert response.status == 202, await response.text()
            await _charge(service, customer, "6.00")
            await _charge(service, customer, "1.50")  # 100%

            async def all_delivered() -> bool:
                listed = (await _events(service, customer))["data"]
                return len(listed) == 3 and {e["delivery"]["status"] for e in listed} == {
                    "delivered"}
            assert await wait_until(all_delivered, timeout_s=15)
            await asyncio.sleep(1.0)
            after = (await _events(service, customer))["data"]
    assert [e["data"]["object"]["threshold_pct"] for e in after] == [100, 80, 50]
    assert [e["id"] for e in after[1:]] == [e["id"] for e in before]
    assert sorted(receiver.delivered_ids()) == sorted(e["id"] for e in after)  # each exactly once


async def test_a_rotated_secret_signs_with_both_until_it_expires(service: Service) -> None:
    customer = await service.create_customer(quota="1.00")
    async with service.session.post(
        f"/v1/entitlements/{customer.entitlement_id}/alert_thresholds",
        json={"thresholds_pct": [10, 20]}, headers=customer.auth,
    ) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["thresholds_pct"] == [10, 20]
    async with receiving() as receiver:
        endpoint = await _endpoint(service, customer, receiver.url)
        async with service.session.post(
            f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", json={},
            headers=customer.auth,
        ) as response:
            assert response.status == 200, await response.text()
            rotated = await response.json()
        assert rotated["secret"] != endpoint["secret"]
        await _charge(service, customer, "0.15")  # 10%

        def got(count: int) -> Any:
            async def check() -> bool:
                return len(receiver.posts) >= count
            return check
        assert await wait_until(got(1), timeout_s=10)
        body, headers = receiver.posts[0]
        assert headers["Vexa-Signature"].count("v1=") == 2
        _verify(body, headers, rotated["secret"])
        _verify(body, headers, endpoint["secret"])  # receivers not updated yet

        async with service.session.post(
            f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret",
            json={"previous_secret_expires_in_s": 0}, headers=customer.auth,
        ) as response:
            again = await response.json()
        await _charge(service, customer, "0.10")  # 20%
        assert await wait_until(got(2), timeout_s=10)
        body, headers = receiver.posts[1]
        _verify(body, headers, again["secret"])
        with pytest.raises(stripe.SignatureVerificationError):
            _verify(body, headers, rotated["secret"])


async def test_endpoints_are_the_customers_own(service: Service) -> None:
    alice = await service.create_customer()
    bob = await service.create_customer()
    async with service.session.post("/v1/webhook_endpoints",
                                    json={"url": "http://example.com/hooks"},
                                    headers=alice.auth) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_url"
    endpoint = await _endpoint(service, alice, "https://example.com/hooks")
    assert endpoint["secret"].startswith("whsec_")
    async with service.session.get("/v1/webhook_endpoints", headers=alice.auth) as response:
        listed = await response.json()
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
    assert "secret" not in listed["data"][0]
    async with service.session.get("/v1/webhook_endpoints", headers=bob.auth) as response:
        assert (await response.json())["data"] == []
    for who, status in ((bob, 404), (alice, 200), (alice, 404)):
        async with service.session.delete(f"/v1/webhook_endpoints/{endpoint['id']}",
                                          headers=who.auth) as response:
            assert response.status == status, await response.text()
