"""API keys: issued once in the clear, stored only as a SHA-256 hash.

A key is 32 random bytes, so a plain SHA-256 is enough (no slow KDF needed:
there is nothing to brute-force). The `sk_test_` / `sk_live_` prefix follows
Stripe's convention so a leaked key is recognisable by secret scanners.
"""

from __future__ import annotations

import hashlib
import secrets

from ledger.model import ApiKey
from ledger.ports import LedgerStore

KEY_PREFIX_TEST = "sk_test_"
KEY_PREFIX_LIVE = "sk_live_"


def hash_api_key(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def issue_api_key(
    store: LedgerStore, customer_id: str, created_at: str, *, live: bool = False
) -> tuple[ApiKey, str]:
    """Create and store a new key; returns (stored record, secret shown once).

    `live`: a production service issues `sk_live_` keys; development (`--dev`)
    and tests issue `sk_test_`, so a leaked key says which it can spend."""
    prefix = KEY_PREFIX_LIVE if live else KEY_PREFIX_TEST
    secret = prefix + secrets.token_urlsafe(32)
    record = ApiKey(
        key_id="key_" + secrets.token_hex(8),
        key_hash=hash_api_key(secret),
        customer_id=customer_id,
        created_at=created_at,
    )
    store.create_api_key(record)
    return record, secret
