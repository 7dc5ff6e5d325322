"""Authentication: admin/service tokens and customer API keys.

API keys are looked up by hash and cached for a short time so the hot path
does not read the store on every request; revoking a key through this
process drops it from the cache at once (other processes within `ttl_s`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import time

from aiohttp import web

from gateway.errors import ApiError
from ledger import ApiKey, LedgerStore
from ledger.api_keys import hash_api_key
from ledger.limits import api_key_cache_entries_max

# Long enough that a customer sending a request every few seconds hits the
# cache: at 5 s, a third of the requests over 1,000 customers went to the
# store via a thread hop. Revocation through this process is immediate.
API_KEY_CACHE_TTL_S = 30.0


def _presented_bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def bearer_token(request: web.Request) -> str:
    token = _presented_bearer(request)
    if token is None:
        raise ApiError(401, "missing_api_key", "send Authorization: Bearer <key>")
    return token


def require_token(request: web.Request, expected: str, what: str) -> None:
    token = bearer_token(request)
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "invalid_token", f"the {what} token is not valid")


def require_service_token(request: web.Request, expected: str | None) -> None:
    """The web app's service token: 503 while this server has none (an
    operator's omission, not the caller's), one 401 code for absent or wrong."""
    if not expected:
        raise ApiError(503, "service_token_not_configured", "the service token is not configured")
    token = _presented_bearer(request) or ""
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "invalid_service_token", "a valid service token is required")


class ApiKeyCache:
    def __init__(
        self,
        store: LedgerStore,
        executor: concurrent.futures.Executor,
        ttl_s: float = API_KEY_CACHE_TTL_S,
        entries_max: int = api_key_cache_entries_max,
    ) -> None:
        self._store = store
        self._executor = executor
        self._ttl_s = ttl_s
        self._entries_max = entries_max
        # In expiry order (every entry lives ttl_s from its insertion, and a
        # refreshed one is moved to the end): expired and evicted entries are
        # both taken from the front.
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def customer_for(self, request: web.Request) -> str:
        """The customer the request's API key belongs to, or a 401."""
        return (await self.key_for(request)).customer_id

    async def key_for(self, request: web.Request) -> ApiKey:
        """The request's API key (live, not revoked), or a 401."""
        key_hash = hash_api_key(bearer_token(request))
        now = time.monotonic()
        cached = self._entries.get(key_hash)
        if cached is not None and cached[0] > now:
            record = cached[1]
        else:
            record = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._store.resolve_api_key, key_hash
            )
            self._insert(key_hash, now, record)
        if record is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid")
        if record.revoked_at is not None:
            raise ApiError(401, "api_key_revoked", "the API key was revoked")
        return record

    def _insert(self, key_hash: str, now: float, record: ApiKey | None) -> None:
        """Drop what expired, then the soonest to expire while full: the cache
        held every key seen (~700 B each, 100,000 keys ~70 MiB) until it was
        cleared whole at its bound."""
        entries = self._entries
        entries.pop(key_hash, None)
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][0] > now and len(entries) < self._entries_max:
                break
            del entries[oldest]
        entries[key_hash] = (now + self._ttl_s, record)

    def forget_key_id(self, key_id: str) -> None:
        for key_hash, (_, record) in list(self._entries.items()):
            if record is not None and record.key_id == key_id:
                del self._entries[key_hash]
