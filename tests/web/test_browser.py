"""The web app in a real headless Chromium (Debian's `chromium`, driven by
Playwright for Python): sign in through the local OIDC provider, manage API
keys, see receipts verify in the browser (checkpoint and receipt modes), see
an altered receipt fail with its reason, open a shared link signed out.
Screenshots of every page at desktop and phone widths go to screenshots/."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import Customer, Service
from tests.web.conftest import screenshots, sign_in

VERDICT_TIMEOUT_MS = 15_000


async def charge(service: Service, customer: Customer, **overrides: Any) -> dict[str, Any]:
    status, body, _ = await service.post_event(customer, service.event(customer, **overrides))
    assert status == 202, body
    return body


async def verdict(page: Any) -> tuple[str, str]:
    done = "#verdict[data-verdict='verified'], #verdict[data-verdict='failed']"
    await page.wait_for_selector(done, timeout=VERDICT_TIMEOUT_MS)
    return (await page.get_attribute("#verdict", "data-verdict"),
            await page.inner_text("#verdict"))


async def test_sign_in_then_create_and_revoke_an_api_key(
    web_service: Service, browser: Any
) -> None:
    customer = await web_service.create_customer()
    for n in range(3):
        await charge(web_service, customer, usage_description=f"call {n}")
    page = await browser.new_page()
    await page.goto(web_service.url + "/pricing")
    await screenshots(page, "pricing")
    await sign_in(page, web_service, f"{customer.customer_id}@example.com", shoot=True)
    assert await page.locator("svg.chart rect").count() >= 1  # today's usage, drawn
    await screenshots(page, "dashboard")
    await page.click("#create-key")
    secret = await page.input_value("#new-key")
    assert secret.startswith("sk_test_")
    await screenshots(page, "dashboard-new-key")
    async with web_service.session.get("/v1/balance",
                                       headers={"Authorization": f"Bearer {secret}"}) as ok:
        assert ok.status == 200
    row = page.locator("tr[data-key-id]", has_text="active").first
    key_id = await row.get_attribute("data-key-id")
    await row.locator("button", has_text="Revoke").click()
    await page.wait_for_url("**/dashboard#keys")
    assert "revoked" in await page.inner_text(f"tr[data-key-id='{key_id}']")
    await page.click("text=Sign out")
    await page.goto(web_service.url + "/dashboard")
    assert "/signin" in page.url


@pytest.mark.parametrize(
    "settings_overrides", [{}, {"receipt_signing": "receipt"}], ids=["checkpoint", "receipt"]
)
async def test_a_receipt_page_verifies_in_the_browser(
    web_service: Service, browser: Any, settings_overrides: dict[str, Any]
) -> None:
    customer = await web_service.create_customer()
    await charge(web_service, customer)
    receipt = await charge(web_service, customer, usage_description="the second call")
    assert ("signature" in (await web_service.receipts(customer))[-1]) == bool(settings_overrides)
    page = await browser.new_page()
    await sign_in(page, web_service, f"{customer.customer_id}@example.com")
    await page.goto(receipt["receipt_url"])
    state, text = await verdict(page)
    assert state == "verified", text
    assert "links to receipt 1" in text
    assert ("signature verifies" in text) == bool(settings_overrides)
    assert "leaf" in text  # both modes log every receipt
    mode = "receipt-mode" if settings_overrides else "checkpoint-mode"
    await screenshots(page, f"receipt-{mode}")


def _altered(field: str, change: Any) -> Any:
    async def handle(route: Any) -> None:
        response = await route.fetch()
        document = await response.json()
        change(document)
        await route.fulfill(response=response, body=json.dumps(document),
                            content_type="application/json")
    return handle


@pytest.mark.parametrize(
    ("what", "change", "reason"),
    [
        ("amount", lambda d: d.update(amount_minor=d["amount_minor"] + 1), "hash_mismatch"),
        ("usage", lambda d: d.update(usage_description=d["usage_description"][:-1] + "X"),
         "hash_mismatch"),
        ("path", lambda d: d["log"].update(inclusion=[
            ("0" if n[0] != "0" else "1") + n[1:] for n in d["log"]["inclusion"]]), "not_in_log"),
        ("checkpoint", lambda d: d["log"].update(checkpoint=d["log"]["checkpoint"][:-4]
                                                 + ("AAAA" if not d["log"]["checkpoint"].endswith(
                                                     "AAAA") else "BBBB")), "bad_signature"),
    ],
)
async def test_an_altered_receipt_fails_and_the_page_says_why(
    web_service: Service, browser: Any, what: str, change: Any, reason: str
) -> None:
    customer = await web_service.create_customer()
    await charge(web_service, customer)
    await charge(web_service, customer)  # two leaves: the path is not empty
    receipt = await charge(web_service, customer, usage_description="a call to alter")
    page = await browser.new_page()
    await sign_in(page, web_service, f"{customer.customer_id}@example.com")
    await page.route(f"**/dashboard/receipts/{receipt['id']}/document",
                     _altered(what, change))
    await page.goto(receipt["receipt_url"])
    state, text = await verdict(page)
    assert state == "failed", text
    assert reason in text, text
    if what == "amount":
        await screenshots(page, "receipt-altered")


async def share_the_last_of(service: Service, browser: Any, *, receipts: int
                            ) -> tuple[Any, str]:
    """A new customer charged `receipts` times shares the last receipt from
    its page: (the owner's page, the share URL)."""
    customer = await service.create_customer()
    for _ in range(receipts):
        receipt = await charge(service, customer)
    owner = await browser.new_page()
    await sign_in(owner, service, f"{customer.customer_id}@example.com")
    await owner.goto(receipt["receipt_url"])
    await owner.click("text=Share with an auditor")
    return owner, await owner.input_value("#share-url")


async def test_a_shared_link_verifies_signed_out_and_stops_when_revoked(
    web_service: Service, browser: Any
) -> None:
    owner, url = await share_the_last_of(web_service, browser, receipts=2)
    await screenshots(owner, "share-created")
    auditor = await (await browser.new_context()).new_page()  # no cookies: signed out
    await auditor.goto(url)
    state, text = await verdict(auditor)
    assert state == "verified", text
    # The link to receipt 1 is checked too, through the log, without its contents.
    assert "links to receipt 1, whose hash is leaf 0 of the signed log" in text, text
    await screenshots(auditor, "shared-receipt")
    await owner.goto(web_service.url + "/dashboard#shares")
    await owner.locator("tr[data-link-id] button", has_text="Revoke").click()
    await owner.wait_for_url("**/dashboard#shares")
    response = await auditor.goto(url)
    assert response.status == 404
    assert "revoked" in await auditor.inner_text("main")
    await screenshots(auditor, "error-revoked-share")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(receipt_hash="sha256:" + "ab" * 32), "chain_broken"),
        (lambda d: d["log"].update(index=d["log"]["index"] + 1), "not_in_log"),
    ],
    ids=["other-hash", "other-leaf"],
)
async def test_a_shared_page_fails_when_the_link_to_the_previous_receipt_does_not_hold(
    web_service: Service, browser: Any, change: Any, reason: str
) -> None:
    _, url = await share_the_last_of(web_service, browser, receipts=3)
    auditor = await (await browser.new_context()).new_page()
    await auditor.route("**/share/*/previous", _altered("previous", change))
    await auditor.goto(url)
    state, text = await verdict(auditor)
    assert state == "failed", text
    assert reason in text, text
