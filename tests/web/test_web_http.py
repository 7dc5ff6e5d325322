"""The web app over plain HTTP, as a browser without JavaScript sees it:
sign-in, content negotiation of receipt URLs, CSRF, cookie flags, one
customer never seeing another's data, share links that stop when revoked."""

from __future__ import annotations

import csv
import io
import json

import aiohttp
import pytest

from tests.integration.conftest import Service
from tests.web.conftest import csrf_of, hidden_fields, http_sign_in

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def _charge(service: Service, customer, **overrides) -> dict:  # type: ignore[no-untyped-def]
    status, body, _ = await service.post_event(customer, service.event(customer, **overrides))
    assert status == 202, body
    return body


async def test_a_receipt_url_answers_json_to_api_clients_and_a_page_to_browsers(
    web_service: Service,
) -> None:
    customer = await web_service.create_customer()
    receipt = await _charge(web_service, customer)
    path = f"/v1/receipts/{receipt['id']}"
    async with web_service.session.get(path, headers=customer.auth) as api:
        assert api.content_type == "application/json"
        assert (await api.json())["receipt_hash"] == receipt["receipt_hash"]
    async with web_service.session.get(path, headers=HTML, allow_redirects=False) as anonymous:
        assert anonymous.status == 303
        assert anonymous.headers["Location"] == f"/signin?next={path}"
    client = await http_sign_in(web_service, f"{customer.customer_id}@example.com")
    async with client, client.get(path, headers=HTML) as page:
        text = await page.text()
        assert page.content_type == "text/html"
        assert receipt["receipt_hash"] in text and 'src="/static/verify.js"' in text
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert page.headers["Referrer-Policy"] == "no-referrer"


async def test_session_cookies_are_httponly_lax_and_secure_except_on_loopback(
    web_service: Service,
) -> None:
    async with web_service.session.get("/pricing") as page:
        cookie = page.cookies["vexa_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        assert not cookie["secure"]  # served on 127.0.0.1: a browser drops Secure over http
    # Behind a proxy for a public host the same cookie is Secure.
    async with web_service.session.get("/pricing", headers={"Host": "billing.example.com"}) as pub:
        assert pub.cookies["vexa_session"]["secure"]


async def test_forms_without_a_valid_csrf_token_are_refused(web_service: Service) -> None:
    customer = await web_service.create_customer()
    client = await http_sign_in(web_service, f"{customer.customer_id}@example.com")
    async with client:
        for token in (None, "forged", await csrf_of(client) + "x"):
            data = {} if token is None else {"csrf_token": token}
            async with client.post("/dashboard/api-keys", data=data) as refused:
                assert refused.status == 403
                assert "did not come from this site" in await refused.text()
        async with client.get("/dashboard") as page:
            assert "revoked" not in await page.text()
            assert (await page.text()).count('data-key-id="') == 1  # only the fixture's key
        async with client.post("/dashboard/api-keys",
                               data={"csrf_token": await csrf_of(client)}) as created:
            text = await created.text()
            assert created.status == 200 and 'id="new-key"' in text
            secret = hidden_value(text)
        async with web_service.session.get("/v1/balance",
                                           headers={"Authorization": f"Bearer {secret}"}) as ok:
            assert ok.status == 200  # the key shown once works


def hidden_value(page: str) -> str:
    start = page.index('id="new-key"')
    return page[start:].split('value="', 1)[1].split('"', 1)[0]


async def test_no_page_or_export_shows_another_customers_data(web_service: Service) -> None:
    mine = await web_service.create_customer()
    theirs = await web_service.create_customer()
    my_receipt = await _charge(web_service, mine, usage_description="my call")
    their_receipt = await _charge(web_service, theirs, usage_description="their secret call")
    client = await http_sign_in(web_service, f"{mine.customer_id}@example.com")
    async with client:
        pages = ["/dashboard", "/dashboard/export.jsonl", "/dashboard/export.csv",
                 f"/dashboard/receipts/{my_receipt['id']}/document"]
        for path in pages:
            async with client.get(path) as page:
                text = await page.text()
                assert page.status == 200, path
                assert theirs.customer_id not in text and "their secret call" not in text, path
        async with client.get("/dashboard/export.jsonl") as export:
            lines = [json.loads(line) for line in (await export.text()).splitlines()]
            assert [r["receipt_id"] for r in lines] == [my_receipt["id"]]
        async with client.get("/dashboard/export.csv") as export:
            rows = list(csv.DictReader(io.StringIO(await export.text())))
            assert [r["receipt_id"] for r in rows] == [my_receipt["id"]]
        for path in (f"/v1/receipts/{their_receipt['id']}",
                     f"/dashboard/receipts/{their_receipt['id']}/document"):
            async with client.get(path, headers=HTML) as other:
                assert other.status == 404, path
                assert "their secret call" not in await other.text()
        csrf = await csrf_of(client)
        async with client.post(f"/dashboard/api-keys/{theirs.key_id}/revoke",
                               data={"csrf_token": csrf}) as revoke:
            assert revoke.status == 404
        async with client.post(f"/dashboard/receipts/{their_receipt['id']}/share",
                               data={"csrf_token": csrf}) as share:
            assert share.status == 404
    async with web_service.session.get("/v1/balance", headers=theirs.auth) as still:
        assert still.status == 200  # their key was not revoked


async def test_a_share_link_opens_signed_out_until_it_is_revoked(web_service: Service) -> None:
    customer = await web_service.create_customer()
    first = await _charge(web_service, customer, usage_description="the first, private call")
    receipt = await _charge(web_service, customer)
    client = await http_sign_in(web_service, f"{customer.customer_id}@example.com")
    async with client:
        csrf = await csrf_of(client)
        async with client.post(f"/dashboard/receipts/{receipt['id']}/share",
                               data={"csrf_token": csrf}) as made:
            text = await made.text()
            url = text.split('id="share-url"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
        token_path = url.removeprefix(web_service.url)
        async with aiohttp.ClientSession(base_url=web_service.url) as stranger:
            async with stranger.get(token_path) as shared:
                assert shared.status == 200 and receipt["receipt_hash"] in await shared.text()
            async with stranger.get(token_path + "/document") as document:
                assert (await document.json())["receipt_hash"] == receipt["receipt_hash"]
            async with stranger.get(token_path + "/previous") as previous:
                linked = await previous.json()  # the link's hash and proof, no contents
                assert set(linked) == {"object", "seq", "receipt_hash", "log"}
                assert linked["receipt_hash"] == first["receipt_hash"] and linked["seq"] == 1
            async with stranger.get(token_path[:-2] + "xx") as guessed:
                assert guessed.status == 404
            async with client.get("/dashboard") as dashboard:
                link_id = hidden_link_id(await dashboard.text())
            async with client.post(f"/dashboard/shares/{link_id}/revoke",
                                   data={"csrf_token": csrf}) as revoked:
                assert revoked.status == 200
            for path in (token_path, token_path + "/document", token_path + "/previous"):
                async with stranger.get(path) as gone:
                    assert gone.status == 404
                    assert receipt["receipt_hash"] not in await gone.text()


def hidden_link_id(page: str) -> str:
    return page.split('data-link-id="', 1)[1].split('"', 1)[0]


async def test_the_oidc_callback_refuses_a_state_it_did_not_issue(web_service: Service) -> None:
    client = aiohttp.ClientSession(base_url=web_service.url,
                                   cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client:
        async with client.get("/signin/oidc", allow_redirects=False):
            pass
        async with client.get("/signin/callback?code=x&state=forged") as forged:
            assert forged.status == 400
        async with client.get("/dashboard", allow_redirects=False) as dashboard:
            assert dashboard.status == 303  # still signed out
    assert hidden_fields('<input type="hidden" name="a" value="b">') == {"a": "b"}


async def _demo_sign_in(service: Service) -> tuple[int, str]:
    client = aiohttp.ClientSession(base_url=service.url, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client:
        csrf = await csrf_of(client, "/signin")
        async with client.post("/signin/demo", data={"csrf_token": csrf}) as answer:
            return answer.status, await answer.text()


async def test_development_mode_offers_a_marked_demo_sign_in(web_service: Service) -> None:
    from gateway.devmode import seed_demo

    seed_demo(web_service.runtime)
    async with web_service.session.get("/signin") as page:
        assert "Development only" in await page.text()
    status, text = await _demo_sign_in(web_service)
    assert status == 200 and "demo@example.com" in text and 'id="balance"' in text


@pytest.mark.parametrize("settings_overrides", [{"dev": False}])
async def test_outside_development_there_is_no_demo_sign_in(web_service: Service) -> None:
    async with web_service.session.get("/signin") as page:
        assert "Development only" not in await page.text()
    customer = await web_service.create_customer()
    client = await http_sign_in(web_service, f"{customer.customer_id}@example.com")
    async with client:  # a valid CSRF token, so only the mode can refuse
        csrf = await csrf_of(client)
        async with client.post("/signin/demo", data={"csrf_token": csrf}) as answer:
            assert answer.status == 404
