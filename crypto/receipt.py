"""The receipt core: its fields and the genesis link of every chain."""

from __future__ import annotations

from typing import Final

# previous_receipt_hash of a customer's first receipt.
GENESIS_HASH: Final = "sha256:" + "0" * 64

# The signed, hashed part of a receipt, in documentation order (JCS sorts keys,
# so this order is for people, not for the bytes).
RECEIPT_CORE_FIELDS: Final = (
    "receipt_id",
    "customer_id",
    "seq",
    "idempotency_key",
    "entitlement_id",
    "amount_minor",
    "currency",
    "usage_description",
    "event_timestamp",
    "recorded_at",
    "balance_after_minor",
    "quota_remaining_minor",
    "previous_receipt_hash",
)
