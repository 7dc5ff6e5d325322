"""Keys are generated at test time; chains are built the way the charge path builds them."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from crypto import (
    GENESIS_HASH,
    Checkpoint,
    KeyRing,
    SigningKey,
    receipt_hash,
    receipt_leaf,
    seal_receipt,
    sign_checkpoint,
)
from tests.crypto import tlog_reference as ref

T0 = "2025-03-01T12:00:00Z"


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


class LoggedChain(NamedTuple):
    """A customer's chain in checkpoint form, and the log it was proved in."""

    receipts: list[dict[str, object]]
    jwks: dict[str, object]
    leaves: list[bytes]  # the log's leaf hashes: the chain's at even indexes
    key: SigningKey


def logged_chain(count: int) -> LoggedChain:
    """`count` receipts, every other leaf of one signed log, each proved against its head."""
    key = session_key("RS256")
    receipts, leaves, previous = [], [], GENESIS_HASH
    for seq in range(1, count + 1):
        core = make_core(seq, previous)
        previous = receipt_hash(core)
        receipts.append({**core, "receipt_hash": previous})
        leaves += [receipt_leaf(previous), ref.rfc_leaf(b"another customer %d" % seq)]
    jws = checkpoint_jws(leaves, key)
    for position, receipt in enumerate(receipts):
        receipt["log"] = log_block(leaves, 2 * position, jws)
    return LoggedChain(receipts, dict(KeyRing(key).jwks()), leaves, key)


def checkpoint_jws(leaves: list[bytes], key: SigningKey) -> str:
    return sign_checkpoint(Checkpoint("test.example/log", len(leaves), ref.mth(leaves), T0), key)


def log_block(leaves: list[bytes], index: int, jws: str) -> dict[str, object]:
    """A receipt's `log` block: leaf `index` proved in the tree of `leaves` (signed as `jws`)."""
    path = [node.hex() for node in ref.path(index, leaves)]
    return {"index": index, "tree_size": len(leaves), "inclusion": path, "checkpoint": jws}
