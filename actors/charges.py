"""What a charge asks for and how it ends: plain data passed between threads.

The gateway builds a `ChargeCommand` from a validated request; the account
actor answers through the command's `reply` exactly once with a
`ChargeOutcome`. Outcomes carry domain codes, not HTTP statuses: the gateway
maps them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from ledger import StoredReceipt

# Refusal codes (stable API error codes) and whether a retry may succeed.
QUOTA_EXCEEDED: Final = "quota_exceeded"
IDEMPOTENCY_KEY_REUSE: Final = "idempotency_key_reuse"
ENTITLEMENT_NOT_FOUND: Final = "entitlement_not_found"
ENTITLEMENT_INACTIVE: Final = "entitlement_inactive"
CURRENCY_MISMATCH: Final = "currency_mismatch"
CUSTOMER_NOT_FOUND: Final = "customer_not_found"
BALANCE_LIMIT: Final = "balance_limit_reached"
# Retry-safe failures: nothing was charged.
ACCOUNT_UNAVAILABLE: Final = "account_unavailable"
STORE_UNAVAILABLE: Final = "store_unavailable"
OVERLOADED: Final = "overloaded"
INTERNAL: Final = "internal_error"

RETRY_SAFE_CODES: Final = frozenset({ACCOUNT_UNAVAILABLE, STORE_UNAVAILABLE, OVERLOADED})

OutcomeKind = Literal["committed", "replayed", "refused"]


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    kind: OutcomeKind
    receipt: StoredReceipt | None = None
    code: str | None = None
    message: str = ""
    param: str | None = None

    @property
    def retry_safe(self) -> bool:
        return self.kind == "refused" and self.code in RETRY_SAFE_CODES


Reply = Callable[[ChargeOutcome], None]


@dataclass(frozen=True, slots=True)
class ChargeCommand:
    """A validated charge request. Amounts are minor units; timestamps RFC 3339."""

    customer_id: str
    idempotency_key: str
    entitlement_id: str
    amount_minor: int
    currency: str
    usage_description: str
    event_timestamp: str
    reply: Reply

    @property
    def fingerprint(self) -> str:
        """Identifies the request behind an idempotency key (not the key itself),
        so a retry is told apart from a different request under the same key."""
        material = "\x1f".join(
            (
                self.customer_id,
                self.entitlement_id,
                str(self.amount_minor),
                self.currency,
                self.usage_description,
                self.event_timestamp,
            )
        )
        return "sha256:" + hashlib.sha256(material.encode("utf-8")).hexdigest()


def refused(code: str, message: str, param: str | None = None) -> ChargeOutcome:
    return ChargeOutcome(kind="refused", code=code, message=message, param=param)
