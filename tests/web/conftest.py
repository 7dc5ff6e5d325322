"""The service with its web app signing in through a local OIDC provider,
and helpers to sign in over plain HTTP (a cookie jar) or in Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.compose import build_runtime
from tests.fakes import FakeStripe
from tests.fakes.oidc_provider import CLIENT_ID, CLIENT_SECRET, FakeOidcProvider
from tests.fakes.stripe_pages import WebhookTarget
from tests.integration.conftest import Service, base_settings, settings_overrides
from tests.stripe.conftest import PLANS, Prices

__all__ = ["settings_overrides"]  # the fixture, shared with tests/integration

SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
# The browser the tests drive: Debian's chromium, or the path in this variable
# (the Makefile's browser-check reads the same one).
CHROMIUM_ENV = "VEXA_TEST_CHROMIUM"
CHROMIUM_DEFAULT = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture(scope="session")
def oidc() -> Iterator[FakeOidcProvider]:
    provider = FakeOidcProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def web_environ() -> dict[str, str]:
    """More environment for the service (a test module overrides it: Stripe)."""
    return {}


@pytest.fixture
async def web_service(
    tmp_path: Path, signing_key_file: Path, oidc: FakeOidcProvider,
    settings_overrides: dict[str, Any], web_environ: dict[str, str],
) -> AsyncIterator[Service]:
    settings = base_settings(tmp_path / "data", signing_key_file, **settings_overrides)
    environ = {"BILLING_OIDC_ISSUER": oidc.issuer, "BILLING_OIDC_CLIENT_ID": CLIENT_ID,
               "BILLING_OIDC_CLIENT_SECRET": CLIENT_SECRET, "BILLING_OIDC_NAME": "Test IdP",
               **web_environ}
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


@dataclass
class StripeStandIn:
    """The fake Stripe serving its own Checkout and portal pages, its prices,
    and the environment that points the service at it."""

    fake: FakeStripe
    prices: Prices
    webhook_secret: str

    def environ(self) -> dict[str, str]:
        return {"STRIPE_SECRET_KEY": self.fake.api_key,
                "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
                "STRIPE_API_BASE": self.fake.url, "STRIPE_PLANS": json.dumps(PLANS),
                "STRIPE_TRIAL_PRICE_ID": self.prices.trial["id"],
                "STRIPE_CHECKOUT_PRICE_ID": self.prices.pro["id"]}

    def send_webhooks_to(self, service: Service) -> None:
        self.fake.webhook_target = WebhookTarget(service.url + "/v1/stripe/webhook",
                                                 self.webhook_secret)


@pytest.fixture
def stripe_stand_in() -> Iterator[StripeStandIn]:
    fake = FakeStripe(serve_pages=True).start()
    prices = Prices(
        pro=fake.add_price(lookup_key="pro_monthly", unit_amount=2900),
        team_yearly=fake.add_price(lookup_key="team_yearly", unit_amount=120000,
                                   interval="year"),
        trial=fake.add_price(lookup_key="trial", unit_amount=0),
    )
    yield StripeStandIn(fake, prices, "whsec_" + secrets.token_hex(16))
    fake.stop()



def chromium_missing(environ: dict[str, str]) -> str | None:
    """The one-line instruction when the browser is not there, else None."""
    path = Path(environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT)
    if path.is_file() and os.access(path, os.X_OK):
        return None
    return (f"Chromium is missing at {path}: run `apt-get install -y chromium` "
            "(or `make system-deps` as root) and retry")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    missing = chromium_missing(dict(os.environ))
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    from playwright.async_api import async_playwright

    path = os.environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


# What every page must hold at every width: one h1, a name for every control
# and image, and nothing wider than the screen (a phone scrolls only down).
_PAGE_PROBLEMS = """() => {
  const problems = [];
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    const labelled = el.getAttribute("aria-label") || (el.id && document.querySelector(
      `label[for="${el.id}"]`)) || el.closest("label");
    if (!labelled) problems.push("unlabelled " + (el.id || el.name || el.tagName));
  }
  const unnamed = "img:not([alt]), svg[role=img]:not([aria-labelledby])";
  for (const img of document.querySelectorAll(unnamed)) {
    problems.push("image without text " + img.outerHTML.slice(0, 60));
  }
  if (document.documentElement.scrollWidth > window.innerWidth) {
    problems.push("wider than the screen: " + document.documentElement.scrollWidth + "px");
  }
  return problems;
}"""


async def screenshots(page: Any, name: str) -> None:
    """The current page at every width, checked for the basics of access."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for width_name, (width, height) in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": height})
        await page.screenshot(path=str(SCREENSHOTS / f"{name}-{width_name}.png"), full_page=True)
        problems = await page.evaluate(_PAGE_PROBLEMS)
        assert not problems, f"{name} at {width_name} width: {problems}"
    await page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})


async def sign_in(page: Any, service: Service, email: str, *, shoot: bool = False) -> None:
    await page.goto(service.url + "/signin")
    if shoot:
        await screenshots(page, "signin")
    await page.click("#signin-oidc")
    await page.fill("#login_email", email)
    await page.click("#login")
    await page.wait_for_url(service.url + "/dashboard")
