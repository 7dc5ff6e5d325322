"""The data model shared by every storage adapter: plain frozen records.

Money is integer minor units; timestamps are RFC 3339 UTC strings (what the
receipts carry), never floats or epoch nanoseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from ledger import limits
from ledger.clock import parse_rfc3339
from ledger.errors import check_invariant

QuotaPolicy = Literal["hard", "soft"]
# Entitlement statuses that allow charging; everything else refuses.
CHARGEABLE_STATUSES = frozenset({"active", "trialing"})
# A subscription whose renewal payment failed: chargeable for a grace period
# from the start of the unpaid period, then refused with payment_required.
UNPAID_STATUSES = frozenset({"past_due", "unpaid"})


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    email: str
    currency: str
    created_at: str
    stripe_customer_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: only its SHA-256, never the secret itself."""

    key_id: str
    key_hash: str
    customer_id: str
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What a customer may be charged for. `quota_minor=None` means unlimited.

    `used_minor` is owned by the ledger: `put_entitlement` never overwrites it
    unless `reset_usage` is asked for (a new billing period).
    """

    customer_id: str
    entitlement_id: str
    quota_minor: int | None
    policy: QuotaPolicy
    status: str
    updated_at: str
    plan: str | None = None
    max_bots: int | None = None
    period_start: str | None = None
    period_end: str | None = None
    trial_end: str | None = None
    cancel_at_period_end: bool = False
    used_minor: int = 0

    @property
    def chargeable(self) -> bool:
        return self.status in CHARGEABLE_STATUSES

    def in_payment_grace(self, now: datetime, grace_s: float) -> bool:
        """An unpaid entitlement still inside its grace period.

        The unpaid period starts at `period_start`: Stripe invoices a renewal
        when the period starts and the subscription turns past_due when that
        payment fails, so Stripe's own state gives the start (no clock of
        ours to store, and every reconciliation of it agrees)."""
        if self.status not in UNPAID_STATUSES or self.period_start is None or grace_s <= 0:
            return False
        started = parse_rfc3339(self.period_start)
        return now < started + timedelta(seconds=grace_s)


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything an account actor needs to continue a customer's chain."""

    customer: Customer
    seq: int
    last_receipt_hash: str
    balance_minor: int
    entitlements: dict[str, Entitlement] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """One receipt as the ledger keeps it.

    `receipt_json` is the full signed receipt (core fields, `receipt_hash`,
    `signature`) exactly as served; the other fields index it.
    `request_fingerprint` identifies the request that produced it so a reused
    idempotency key with a different request is told apart from a retry.
    """

    customer_id: str
    seq: int
    receipt_id: str
    idempotency_key: str
    request_fingerprint: str
    entitlement_id: str
    amount_minor: int
    currency: str
    receipt_hash: str
    previous_receipt_hash: str
    balance_after_minor: int
    recorded_at: str
    receipt_json: bytes
    # The receipt's leaf in the receipt log (commit order across customers);
    # None only for a receipt not yet committed.
    log_index: int | None = None


@dataclass(frozen=True, slots=True)
class StoredRefusal:
    """A charge refused for a final reason (quota, payment, entitlement,
    currency: not overload or a malformed request), kept under its
    idempotency key as Stripe keeps a first answer: a retry under the key
    gets this answer again instead of a charge once the reason is gone.
    A customer's key names a receipt or a refusal, never both."""

    customer_id: str
    idempotency_key: str
    request_fingerprint: str
    code: str
    message: str
    param: str | None
    recorded_at: str


# What an idempotency key may hold: the charge's receipt or its refusal.
StoredAnswer = StoredReceipt | StoredRefusal



@dataclass(frozen=True, slots=True)
class LogCheckpoint:
    """A signed statement of the receipt log: its size and root at one commit.

    `jws` is the compact JWS of the checkpoint (see crypto.sign_checkpoint);
    the other fields index it and must agree with its payload."""

    tree_size: int
    root_hash: bytes
    timestamp: str
    jws: str


@dataclass(frozen=True, slots=True)
class LogAppend:
    """What one commit adds to the receipt log besides its receipts' rows.

    The store writes it only if the stored log still has `old_size` leaves
    (compare-and-set on the log head): the receipts of the batch become leaves
    `old_size ...` in their order, `tiles` replace the stored tiles at their
    keys (each may only grow: a stored tile must be a prefix of its new
    contents), and `checkpoint` becomes the new head.

    With `signed` set, the checkpoint's signature is still being made (a
    remote KMS takes ~20 ms) and `checkpoint.jws` is empty: the store writes
    everything else first, then calls `signed` (see `log_rules.
    signed_checkpoint`), which waits for the signature and gives the signed
    checkpoint and its outbox messages, written in the same transaction.

    `earlier`: appends committed in the same transaction before this one
    (group commit of several signed batches, see actors.writer): each one's
    checkpoint is stored too, in order, and ends where the next begins; the
    receipts are the leaves of all of them, and this one's checkpoint is the
    new head."""

    old_size: int
    tiles: Mapping[tuple[int, int], bytes]
    checkpoint: LogCheckpoint
    signed: Callable[[], SignedCheckpoint] | None = None
    earlier: Sequence[LogAppend] = ()


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A late checkpoint once signed, with the messages that publish it."""

    checkpoint: LogCheckpoint
    outbox: Sequence[OutboxMessage] = ()


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message committed with the ledger and delivered at least once later.

    `ordering_key` (the customer) keeps one customer's messages in order.
    """

    message_id: str
    topic: str
    ordering_key: str
    payload: bytes
    created_at: str
    attempts: int = 0
    next_attempt_at: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    event_id: str
    event_type: str
    payload: bytes
    received_at: str
    processed_at: str | None = None
    attempts: int = 0
    next_attempt_at: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A public key that signed receipts; it stays published forever."""

    kid: str
    alg: str
    public_jwk_json: str
    created_at: str


@dataclass(frozen=True, slots=True)
class HaltIncident:
    """An integrity failure recorded in the ledger of record: while any
    incident is open (`cleared_at` is None), every gateway on the store
    refuses charges. Only an operator clears one, with a reason.

    `reason` is a stable code (chain_broken, log_damaged, head_mismatch...);
    `detail`, `customer_id` and `receipt_id` say where, for operators only:
    public answers carry the incident id and nothing else. `source` is what
    found it (reconciler, startup_audit, ledger_writer)."""

    incident_id: str
    opened_at: str
    reason: str
    detail: str
    source: str
    customer_id: str | None = None
    receipt_id: str | None = None
    cleared_at: str | None = None
    clear_reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None

    def as_recorded(self) -> HaltIncident:
        """What every store keeps when it records this incident: open, the
        detail cut to its limit (one rule here, not one per adapter)."""
        return replace(
            self,
            detail=self.detail[: limits.halt_detail_chars_max],
            cleared_at=None,
            clear_reason=None,
        )

    def same_failure(self, other: HaltIncident) -> bool:
        """The same damage found again: one open incident serves both."""
        return (self.reason, self.customer_id, self.receipt_id) == (
            other.reason, other.customer_id, other.receipt_id
        )

    def cleared(self, reason: str, cleared_at: str) -> HaltIncident:
        return replace(self, cleared_at=cleared_at, clear_reason=halt_clear_reason(reason))


def halt_clear_reason(reason: str) -> str:
    """An operator's reason for clearing, as every store keeps it."""
    return reason[: limits.halt_clear_reason_chars_max]


def halts_listed(limit: int) -> int:
    """How many incidents a `recent_halts(limit)` lists: 0 to halts_listed_max."""
    return max(0, min(int(limit), limits.halts_listed_max))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """Who asked for a charge, as the gateway saw the request: kept with the
    receipt (same commit) but outside its signed core, for dispute evidence.
    Never shown to another customer."""

    api_key_id: str
    client_address: str
    user_agent: str
    received_at: str
    request_id: str


@dataclass(frozen=True, slots=True)
class DisputeSubmission:
    """Our answer to one Stripe dispute, recorded in two steps so that a retry
    never answers twice: the evidence file once it is uploaded (`file_id`;
    a retry reuses it), then `submitted_at` once Stripe took the evidence.

    `invoice_id` and `customer_id` say which invoice and customer the
    evidence covered; `receipt_count` how many receipts it holds."""

    dispute_id: str
    invoice_id: str
    customer_id: str
    file_id: str
    receipt_count: int
    recorded_at: str
    submitted_at: str | None = None
    dispute_status: str | None = None

    @property
    def is_submitted(self) -> bool:
        return self.submitted_at is not None

    def check_new(self) -> None:
        """What every adapter's `record_dispute_file` asserts, in one place."""
        check_invariant(not self.is_submitted, "a new dispute record is not submitted yet")
        check_invariant(self.receipt_count >= 0, "receipt_count must not be negative")
