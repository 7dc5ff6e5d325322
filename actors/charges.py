"""What a charge asks for and how it ends: plain data passed between threads.

The gateway builds a `ChargeCommand` from each validated request and sends
them to the account actor as a `ChargeBatch` (of one, for a single event);
each command is answered by settling its `ticket` with a `ChargeOutcome`
(actors.tickets). Outcomes carry domain codes, not HTTP statuses: the gateway
maps them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from crypto import LogProof
from ledger import RequestRecord, StoredAnswer, StoredReceipt, StoredRefusal

if TYPE_CHECKING:  # actors.tickets builds on this module
    from actors.tickets import Ticket

# Refusal codes (stable API error codes) and whether a retry may succeed.
QUOTA_EXCEEDED: Final = "quota_exceeded"
IDEMPOTENCY_KEY_REUSE: Final = "idempotency_key_reuse"
ENTITLEMENT_NOT_FOUND: Final = "entitlement_not_found"
ENTITLEMENT_INACTIVE: Final = "entitlement_inactive"
PAYMENT_REQUIRED: Final = "payment_required"
RECEIPT_NOT_FOUND: Final = "receipt_not_found"
REVERSAL_EXCEEDS_RECEIPT: Final = "reversal_exceeds_receipt"
REVERSAL_NOT_ALLOWED: Final = "reversal_not_allowed"

# A reversal is a receipt with a negative amount whose idempotency key is
# REVERSAL_KEY_PREFIX + the original's receipt id + ":" + the operator's key.
# Why the key and not a new core field: the core is what every verifier
# hashes (RECEIPT_CORE_FIELDS, fixed); an optional field would give reversal
# receipts a hash that verifiers already in customers' hands cannot compute.
# The key is in the signed core, so the link to the original is signed too,
# and a customer's own keys may not take this prefix (gateway.validation).
REVERSAL_KEY_PREFIX: Final = "reversal:"


def reversal_key(original_receipt_id: str, operator_key: str) -> str:
    return f"{REVERSAL_KEY_PREFIX}{original_receipt_id}:{operator_key}"


def reversed_receipt_id(idempotency_key: str, amount_minor: int) -> str | None:
    """The receipt a reversal names, or None if the receipt is no reversal."""
    if amount_minor >= 0 or not idempotency_key.startswith(REVERSAL_KEY_PREFIX):
        return None
    original, sep, _ = idempotency_key[len(REVERSAL_KEY_PREFIX):].partition(":")
    return original if sep and original else None
CURRENCY_MISMATCH: Final = "currency_mismatch"
CUSTOMER_NOT_FOUND: Final = "customer_not_found"
BALANCE_LIMIT: Final = "balance_limit_reached"
# Retry-safe failures: nothing was charged.
ACCOUNT_UNAVAILABLE: Final = "account_unavailable"
STORE_UNAVAILABLE: Final = "store_unavailable"
OVERLOADED: Final = "overloaded"
INTERNAL: Final = "internal_error"

RETRY_SAFE_CODES: Final = frozenset({ACCOUNT_UNAVAILABLE, STORE_UNAVAILABLE, OVERLOADED})
# Final refusals of a well-formed charge, decided by its account: kept under
# the idempotency key and replayed to a retry, as Stripe keeps a first answer
# (ledger.model.StoredRefusal). Not kept: retry-safe failures, a malformed
# request (refused before any account sees it), an unknown customer (no
# account to keep it in), and a key reused for another request.
KEPT_REFUSAL_CODES: Final = frozenset({
    QUOTA_EXCEEDED, ENTITLEMENT_NOT_FOUND, ENTITLEMENT_INACTIVE, PAYMENT_REQUIRED,
    CURRENCY_MISMATCH, BALANCE_LIMIT, RECEIPT_NOT_FOUND, REVERSAL_EXCEEDS_RECEIPT,
    REVERSAL_NOT_ALLOWED,
})

OutcomeKind = Literal["committed", "replayed", "refused"]


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """How a charge ended. `replayed`: the first answer under its key again,
    a receipt (`receipt` set) or a kept refusal (`receipt` None, `code` set)."""

    kind: OutcomeKind
    receipt: StoredReceipt | None = None
    code: str | None = None
    message: str = ""
    param: str | None = None
    # committed: the receipt's leaf and inclusion proof against the signed
    # checkpoint of its commit.
    log: LogProof | None = None

    @property
    def retry_safe(self) -> bool:
        return self.kind == "refused" and self.code in RETRY_SAFE_CODES


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
    ticket: Ticket  # settled with this command's answer
    # A reversal: the receipt it reverses (amount_minor is then negative).
    reverses: str | None = None
    # Who asked (dispute evidence), committed with the receipt; not signed.
    request: RequestRecord | None = None

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


@dataclass(frozen=True, slots=True)
class ChargeBatch:
    """One customer's charges, handled in order as one actor message: a
    batch of 100 events costs one hop into the actor, not 100."""

    commands: tuple[ChargeCommand, ...]


def refused(code: str, message: str, param: str | None = None) -> ChargeOutcome:
    return ChargeOutcome(kind="refused", code=code, message=message, param=param)


def key_reuse_refused() -> ChargeOutcome:
    """The answer to a known idempotency key sent with a different request."""
    return refused(
        IDEMPOTENCY_KEY_REUSE,
        "this idempotency key was already used with a different request",
        "idempotent_key",
    )


def answer_from_stored(answer: StoredAnswer, fingerprint: str) -> ChargeOutcome:
    """The answer to a key the store already holds: a replay of its receipt
    or of its refusal, or a refusal when the request under the key differs."""
    if answer.request_fingerprint != fingerprint:
        return key_reuse_refused()
    if isinstance(answer, StoredRefusal):
        return ChargeOutcome(
            kind="replayed", code=answer.code, message=answer.message, param=answer.param
        )
    return ChargeOutcome(kind="replayed", receipt=answer)


def as_replay(outcome: ChargeOutcome) -> ChargeOutcome:
    """The answer a later request under the same key gets: a receipt or a
    kept refusal again, marked replayed; anything else as it was."""
    if outcome.kind == "committed":
        return ChargeOutcome(kind="replayed", receipt=outcome.receipt)
    if outcome.kind == "refused" and outcome.code in KEPT_REFUSAL_CODES:
        return dataclasses.replace(outcome, kind="replayed")
    return outcome
