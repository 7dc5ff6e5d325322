"""A real service for integration tests: the composition root's runtime on a
real SQLite file, served by aiohttp on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.compose import Runtime, build_runtime
from gateway.settings import Settings

ADMIN_TOKEN = "adm_integration_test_token"
REPO_ROOT = Path(__file__).resolve().parents[2]


async def run_billing_cli(*argv: str) -> tuple[int, str, str]:
    """`billing ARGV...` in its own process, as an operator runs it (over
    HTTP to the service): (exit status, stdout, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return int(process.returncode or 0), out.decode(), err.decode()


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Customer:
    customer_id: str
    api_key: str
    key_id: str
    entitlement_id: str
    currency: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class Service:
    url: str
    session: aiohttp.ClientSession
    runtime: Runtime

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def create_customer(
        self,
        *,
        currency: str = "USD",
        quota: str | None = None,
        policy: str = "hard",
        status: str = "active",
        entitlement_id: str = "api_calls",
    ) -> Customer:
        customer_id = "cus_" + uuid.uuid4().hex[:12]
        async with self.session.post(
            "/v1/customers",
            json={
                "customer_id": customer_id,
                "email": f"{customer_id}@example.com",
                "currency": currency,
            },
            headers=self.admin,
        ) as response:
            assert response.status == 201, await response.text()
        async with self.session.post(
            f"/v1/customers/{customer_id}/api-keys", headers=self.admin
        ) as response:
            assert response.status == 201, await response.text()
            key = await response.json()
        async with self.session.put(
            f"/v1/customers/{customer_id}/entitlements/{entitlement_id}",
            json={"quota": quota, "policy": policy, "status": status},
            headers=self.admin,
        ) as response:
            assert response.status == 200, await response.text()
        return Customer(customer_id, key["api_key"], key["key_id"], entitlement_id, currency)

    def event(self, customer: Customer, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "idempotent_key": "key-" + uuid.uuid4().hex,
            "customer_id": customer.customer_id,
            "entitlement_id": customer.entitlement_id,
            "amount": "0.25",
            "currency": customer.currency,
            "usage_description": "one API call",
            "timestamp": now_rfc3339(),
        }
        body.update(overrides)
        return body

    async def post_event(
        self, customer: Customer, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with self.session.post("/v1/events", json=body, headers=customer.auth) as response:
            return response.status, await response.json(), dict(response.headers)

    async def receipts(self, customer: Customer) -> list[dict[str, Any]]:
        """The customer's whole chain, following pagination."""
        chain: list[dict[str, Any]] = []
        after = 0
        while True:
            async with self.session.get(
                "/v1/receipts", params={"after_seq": after, "limit": 1000}, headers=customer.auth
            ) as response:
                assert response.status == 200, await response.text()
                page = await response.json()
            chain.extend(page["data"])
            if not page["has_more"]:
                return chain
            after = page["next_after_seq"]

    async def balance(self, customer: Customer) -> dict[str, Any]:
        async with self.session.get("/v1/balance", headers=customer.auth) as response:
            assert response.status == 200, await response.text()
            return dict(await response.json())

    async def jwks(self) -> dict[str, Any]:
        async with self.session.get("/.well-known/jwks.json") as response:
            assert response.status == 200
            return dict(await response.json())


def base_settings(data_dir: Path, key_file: Path, **overrides: Any) -> Settings:
    settings = Settings(
        data_dir=data_dir,
        admin_token=ADMIN_TOKEN,
        signing_key_path=key_file,
        fault_injection=True,
        dev=True,  # test keys (sk_test_); a test wanting production sets dev=False
        signer_workers=2,
        drain_timeout_s=5.0,
        # The test client shares the server's event loop here, so loop lag
        # would measure the client too: shedding on it is unit-tested instead.
        loop_lag_max_ms=60_000.0,
    )
    return replace(settings, **overrides).validate()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Tests override settings by redefining this fixture or parametrizing it."""
    return {}


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Service]:
    """The service on these settings, on a loopback port, until the block ends:
    for tests that stop it, touch its files, and start it again."""
    loop = asyncio.get_running_loop()
    runtime = await loop.run_in_executor(None, build_runtime, settings)
    # Served as `billing serve` serves it (AppRunner, no handler cancellation
    # on disconnect), not with the test server's different defaults.
    runner = web.AppRunner(runtime.make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    connector = aiohttp.TCPConnector(limit=200)
    session = aiohttp.ClientSession(base_url=url, connector=connector)
    try:
        yield Service(url=url, session=session, runtime=runtime)
    finally:
        await session.close()
        await runner.cleanup()
        await loop.run_in_executor(None, runtime.stop)


@pytest.fixture
async def service(
    tmp_path: Path, signing_key_file: Path, settings_overrides: dict[str, Any]
) -> AsyncIterator[Service]:
    settings = base_settings(tmp_path / "data", signing_key_file, **settings_overrides)
    async with serve(settings) as running:
        yield running
