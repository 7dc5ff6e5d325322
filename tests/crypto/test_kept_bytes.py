"""Receipt bytes kept in memory (by an account actor, with a receipt in
flight) take about their own size, not orjson's 4 KiB output buffer."""

from __future__ import annotations

import tracemalloc

from crypto import sealed_document
from crypto.receipt import core_bytes

CORE = {
    "receipt_id": "rcpt_0123456789abcdef0123", "customer_id": "cus_0123456789ab", "seq": 1,
    "idempotency_key": "key-0123456789abcdef", "entitlement_id": "api_calls",
    "amount_minor": 25, "currency": "USD", "usage_description": "one API call",
    "event_timestamp": "2025-06-01T12:00:00.000000Z",
    "recorded_at": "2025-06-01T12:00:00.000000Z", "balance_after_minor": 25,
    "quota_remaining_minor": None, "previous_receipt_hash": "sha256:" + "0" * 64,
}


def _bytes_held_per_item(make: object) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(200)]  # type: ignore[operator]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 200
    return held / 200


def test_a_kept_receipt_document_takes_about_its_own_size() -> None:
    size = len(sealed_document(CORE, "sha256:" + "1" * 64, None))
    assert _bytes_held_per_item(lambda: sealed_document(CORE, "sha256:" + "1" * 64, None)) < (
        size + 200
    )


def test_a_kept_canonical_core_takes_about_its_own_size() -> None:
    size = len(core_bytes(CORE))
    assert _bytes_held_per_item(lambda: core_bytes(CORE)) < size + 200
