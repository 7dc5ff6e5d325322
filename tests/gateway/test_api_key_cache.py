"""ApiKeyCache: repeated requests with one key read the store once per TTL,
and a key revoked through this process stops working at once."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.auth import API_KEY_CACHE_TTL_S, ApiKeyCache
from gateway.errors import ApiError
from ledger import Customer
from ledger.api_keys import issue_api_key
from ledger.sqlite import SqliteLedger

NOW = "2026-01-01T00:00:00Z"


class CountingStore:
    """The real SQLite ledger, counting key lookups."""

    def __init__(self, store: SqliteLedger) -> None:
        self.store = store
        self.lookups = 0

    def resolve_api_key(self, key_hash: str) -> Any:
        self.lookups += 1
        return self.store.resolve_api_key(key_hash)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger.open(tmp_path / "ledger.sqlite3")
    store.create_customer(Customer("cus_a", "a@example.com", "USD", NOW))
    yield store
    store.close()


def _request(secret: str) -> Any:
    return make_mocked_request("POST", "/v1/events", headers={"Authorization": f"Bearer {secret}"})


async def test_one_store_read_per_ttl_and_revocation_is_immediate(ledger: SqliteLedger) -> None:
    record, secret = issue_api_key(ledger, "cus_a", NOW)
    counting = CountingStore(ledger)
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        cache = ApiKeyCache(counting, executor)  # type: ignore[arg-type]
        for _ in range(50):
            assert await cache.customer_for(_request(secret)) == "cus_a"
        assert counting.lookups == 1
        assert API_KEY_CACHE_TTL_S >= 30

        ledger.revoke_api_key("cus_a", record.key_id, NOW)
        cache.forget_key_id(record.key_id)
        with pytest.raises(ApiError) as refused:
            await cache.customer_for(_request(secret))
        assert (refused.value.status, refused.value.code) == (401, "api_key_revoked")
        assert counting.lookups == 2


async def test_an_expired_entry_is_read_again(ledger: SqliteLedger) -> None:
    _, secret = issue_api_key(ledger, "cus_a", NOW)
    counting = CountingStore(ledger)
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        cache = ApiKeyCache(counting, executor, ttl_s=0.0)  # type: ignore[arg-type]
        await cache.customer_for(_request(secret))
        await cache.customer_for(_request(secret))
    assert counting.lookups == 2


async def test_the_cache_never_holds_more_than_its_bound_and_drops_expired_keys(
    ledger: SqliteLedger,
) -> None:
    secrets = [issue_api_key(ledger, "cus_a", NOW)[1] for _ in range(12)]
    counting = CountingStore(ledger)
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        cache = ApiKeyCache(counting, executor, entries_max=5)  # type: ignore[arg-type]
        for secret in secrets:
            assert await cache.customer_for(_request(secret)) == "cus_a"
            assert len(cache) <= 5
        # The most recent keys are still cached; the oldest were read again.
        lookups = counting.lookups
        for secret in secrets[-5:]:
            await cache.customer_for(_request(secret))
        assert counting.lookups == lookups
        await cache.customer_for(_request(secrets[0]))
        assert counting.lookups == lookups + 1

        expiring = ApiKeyCache(counting, executor, ttl_s=0.0)  # type: ignore[arg-type]
        for secret in secrets:
            await expiring.customer_for(_request(secret))
        assert len(expiring) == 1  # each insert dropped the expired ones
