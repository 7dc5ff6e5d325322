"""Keys are generated at test time; chains are built the way the charge path builds them."""

from __future__ import annotations

import pytest

from crypto import GENESIS_HASH, SigningKey, seal_receipt


def make_core(
    seq: int, previous_hash: str, customer_id: str = "cus_123", description: str = "API calls"
) -> dict[str, object]:
    return {
        "receipt_id": f"rcp_{customer_id}_{seq:06d}",
        "customer_id": customer_id,
        "seq": seq,
        "idempotency_key": f"idem-{seq}",
        "entitlement_id": "ent_api_calls",
        "amount_minor": 125 * seq,
        "currency": "EUR",
        "usage_description": f"{description} batch {seq} — café ✓",
        "event_timestamp": "2025-03-01T12:00:00Z",
        "recorded_at": f"2025-03-01T12:00:{seq % 60:02d}.123456Z",
        "balance_after_minor": 1_000_000 - 125 * seq,
        "quota_remaining_minor": None if seq % 2 else 50_000 - seq,
        "previous_receipt_hash": previous_hash,
    }


def build_chain(
    key: SigningKey,
    count: int,
    customer_id: str = "cus_123",
    start_seq: int = 1,
    description: str = "API calls",
) -> list[dict[str, object]]:
    receipts: list[dict[str, object]] = []
    previous_hash = GENESIS_HASH
    for seq in range(start_seq, start_seq + count):
        receipt = seal_receipt(make_core(seq, previous_hash, customer_id, description), key)
        previous_hash = str(receipt["receipt_hash"])
        receipts.append(receipt)
    return receipts


_KEYS: dict[str, SigningKey] = {}


@pytest.fixture(params=["RS256", "ES256", "EdDSA"])
def any_key(request: pytest.FixtureRequest) -> SigningKey:
    return session_key(request.param)


def session_key(alg: str) -> SigningKey:
    """One generated key per alg per test session (RSA generation is slow)."""
    if alg not in _KEYS:
        _KEYS[alg] = SigningKey.generate(alg)
    return _KEYS[alg]


@pytest.fixture
def rs256_key() -> SigningKey:
    return session_key("RS256")
