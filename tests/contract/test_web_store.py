"""Contract: WebAppStore (what the web app reads and writes beyond the
ledger: key lists, share links, usage per day). Every ledger store in
WEB_STORE_FACTORIES must pass."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import pytest

from ledger.errors import AlreadyExists, NotFound
from ledger.model import ApiKey
from ledger.ports import LedgerStore
from ledger.web_store import ShareLink, UsageDay, WebAppStore
from tests.contract._chain import T0, Chain, customer, entitlement, ts


class _Store(LedgerStore, WebAppStore, Protocol):
    pass


def _link(link_id: str, customer_id: str = "cus_a", created_at: str = T0) -> ShareLink:
    return ShareLink(
        link_id=link_id,
        token_hash=f"token-{link_id}",
        customer_id=customer_id,
        receipt_id=f"rcpt_of_{link_id}",
        created_at=created_at,
    )


def test_a_customers_keys_are_listed_newest_first_revoked_included(web_store: _Store) -> None:
    for customer_id in ("cus_a", "cus_b"):
        web_store.create_customer(customer(customer_id))
    keys = [
        ApiKey(f"key_{n}", f"hash_{n}", "cus_a", ts(n)) for n in (1, 2, 3)
    ] + [ApiKey("key_b", "hash_b", "cus_b", ts(9))]
    for key in keys:
        web_store.create_api_key(key)
    web_store.revoke_api_key("cus_a", "key_2", ts(10))

    listed = web_store.list_api_keys("cus_a")
    assert [k.key_id for k in listed] == ["key_3", "key_2", "key_1"]
    assert listed[1].revoked_at == ts(10) and listed[0].revoked_at is None
    assert web_store.list_api_keys("cus_nobody") == []


def test_a_share_link_resolves_by_its_token_until_revoked(web_store: _Store) -> None:
    link = _link("lnk_1")
    web_store.create_share_link(link)
    assert web_store.resolve_share_link("token-lnk_1") == link
    assert web_store.resolve_share_link("token-unknown") is None

    web_store.revoke_share_link("cus_a", "lnk_1", ts(10))
    web_store.revoke_share_link("cus_a", "lnk_1", ts(20))  # the first revocation counts
    assert web_store.resolve_share_link("token-lnk_1") == dataclasses.replace(
        link, revoked_at=ts(10)
    )


def test_a_share_link_is_unique_by_id_and_by_token(web_store: _Store) -> None:
    web_store.create_share_link(_link("lnk_1"))
    with pytest.raises(AlreadyExists):
        web_store.create_share_link(dataclasses.replace(_link("lnk_1"), token_hash="other"))
    with pytest.raises(AlreadyExists):
        web_store.create_share_link(dataclasses.replace(_link("lnk_2"), token_hash="token-lnk_1"))
    assert web_store.resolve_share_link("other") is None


def test_share_links_are_listed_and_revoked_only_by_their_customer(web_store: _Store) -> None:
    for n in (1, 2, 3):
        web_store.create_share_link(_link(f"lnk_{n}", created_at=ts(n)))
    web_store.create_share_link(_link("lnk_b", customer_id="cus_b"))

    assert [x.link_id for x in web_store.list_share_links("cus_a")] == ["lnk_3", "lnk_2", "lnk_1"]
    assert [x.link_id for x in web_store.list_share_links("cus_b")] == ["lnk_b"]
    with pytest.raises(NotFound):
        web_store.revoke_share_link("cus_a", "lnk_b", ts(10))  # another customer's link
    with pytest.raises(NotFound):
        web_store.revoke_share_link("cus_a", "lnk_missing", ts(10))
    untouched = web_store.resolve_share_link("token-lnk_b")
    assert untouched is not None and untouched.revoked_at is None


def _charge_on(store: _Store, chain: Chain, day: str, amount_minor: int) -> None:
    write = chain.next(amount_minor=amount_minor)
    receipt = dataclasses.replace(write.receipt, recorded_at=f"{day}T12:00:00.000000Z")
    chain.made[-1] = receipt
    store.commit_batch([dataclasses.replace(write, receipt=receipt)], [])


def test_usage_is_summed_per_day_and_entitlement_from_a_day_on(web_store: _Store) -> None:
    for customer_id in ("cus_a", "cus_b"):
        web_store.create_customer(customer(customer_id))
        for entitlement_id in ("usage", "bots"):
            web_store.put_entitlement(entitlement(customer_id, entitlement_id))
    alice, bob = Chain("cus_a"), Chain("cus_b")
    _charge_on(web_store, alice, "2026-01-01", 1)  # before the window
    _charge_on(web_store, alice, "2026-01-02", 10)
    _charge_on(web_store, alice, "2026-01-02", 20)
    alice.entitlement_id = "bots"
    _charge_on(web_store, alice, "2026-01-02", 300)
    _charge_on(web_store, alice, "2026-01-04", 400)
    _charge_on(web_store, bob, "2026-01-02", 5_000)  # another customer's

    assert web_store.usage_by_day("cus_a", "2026-01-02") == [
        UsageDay("2026-01-02", "bots", 1, 300),
        UsageDay("2026-01-02", "usage", 2, 30),
        UsageDay("2026-01-04", "bots", 1, 400),
    ]
    assert web_store.usage_by_day("cus_nobody", "2026-01-01") == []
