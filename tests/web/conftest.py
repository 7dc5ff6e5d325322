"""The service with its web app signing in through a local OIDC provider,
and helpers to sign in over plain HTTP (a cookie jar) or in Chromium."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.compose import build_runtime
from tests.fakes.oidc_provider import CLIENT_ID, CLIENT_SECRET, FakeOidcProvider
from tests.integration.conftest import Service, base_settings, settings_overrides

__all__ = ["settings_overrides"]  # the fixture, shared with tests/integration

SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture(scope="session")
def oidc() -> Iterator[FakeOidcProvider]:
    provider = FakeOidcProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
async def web_service(
    tmp_path: Path, signing_key_file: Path, oidc: FakeOidcProvider,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[Service]:
    settings = base_settings(tmp_path / "data", signing_key_file, **settings_overrides)
    environ = {"BILLING_OIDC_ISSUER": oidc.issuer, "BILLING_OIDC_CLIENT_ID": CLIENT_ID,
               "BILLING_OIDC_CLIENT_SECRET": CLIENT_SECRET, "BILLING_OIDC_NAME": "Test IdP"}
    loop = asyncio.get_running_loop()
    runtime = await loop.run_in_executor(None, build_runtime, settings, environ)
    runner = web.AppRunner(runtime.make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    session = aiohttp.ClientSession(base_url=url)
    try:
        yield Service(url=url, session=session, runtime=runtime)
    finally:
        await session.close()
        await runner.cleanup()
        await loop.run_in_executor(None, runtime.stop)


def hidden_fields(page: str) -> dict[str, str]:
    return dict(_HIDDEN.findall(page))


async def http_sign_in(service: Service, email: str) -> aiohttp.ClientSession:
    """A browser-like client (cookie jar, no JS) signed in through the OIDC flow."""
    client = aiohttp.ClientSession(base_url=service.url,
                                   cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client.get("/signin/oidc", allow_redirects=False) as start:
        assert start.status == 303, await start.text()
        authorize = start.headers["Location"]
    async with client.get(authorize) as form_page:
        fields = hidden_fields(await form_page.text())
    fields["login_email"] = email
    provider = authorize.split("/authorize")[0]
    async with client.post(f"{provider}/authorize", data=fields) as signed:
        assert signed.status == 200, await signed.text()
        assert str(signed.url).endswith("/dashboard"), signed.url
    return client


async def csrf_of(client: aiohttp.ClientSession, path: str = "/dashboard") -> str:
    async with client.get(path) as response:
        return hidden_fields(await response.text())["csrf_token"]
