"""Storage ports. Every adapter implements one of these Protocols and passes the
one contract suite for its port (`tests/contract/`).

Adapters are synchronous and thread-safe: they are called from actor and
worker threads, never from the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ledger.model import (
    AccountState,
    ApiKey,
    Customer,
    DisputeSubmission,
    Entitlement,
    HaltIncident,
    LogAppend,
    LogCheckpoint,
    OutboxMessage,
    RequestRecord,
    SigningKeyRecord,
    StoredAnswer,
    StoredReceipt,
    StoredRefusal,
    WebhookEvent,
)
from ledger.webhook_store import OutboundEvent


@dataclass(frozen=True, slots=True)
class ReceiptWrite:
    """One receipt to commit, with the account row it advances.

    The adapter writes the receipt, sets the account to (`receipt.seq`,
    `receipt.receipt_hash`, `receipt.balance_after_minor`) only if the stored
    account is still at seq `receipt.seq - 1` AND its last receipt hash is
    `receipt.previous_receipt_hash` (compare-and-set on both: after a failed
    commit, a later in-flight receipt of the old chain must not land on a new
    receipt with the same seq), and adds `receipt.amount_minor` to the
    entitlement's `used_minor`.
    """

    receipt: StoredReceipt
    # Who asked for it, committed with it (adapters that keep request
    # records; see ChargeRequests). None for receipts not from a request.
    request: RequestRecord | None = None
    # Events this receipt set off (threshold alerts), committed with it by
    # adapters that implement WebhookStore; at most one per (customer,
    # entitlement, period, threshold): a second one fails the commit as a
    # ChainConflict of its customer, who reloads what already fired.
    events: tuple[OutboundEvent, ...] = ()


@runtime_checkable
class ChargeRequests(Protocol):
    """The request records committed with receipts (dispute evidence)."""

    def charge_request(self, receipt_id: str) -> RequestRecord | None: ...


class DisputeSubmissions(Protocol):
    """Our answers to Stripe disputes, kept with the ledger of record so that
    a replayed webhook, a retry or a restart never submits evidence twice."""

    def dispute_submission(self, dispute_id: str) -> DisputeSubmission | None: ...

    def record_dispute_file(self, submission: DisputeSubmission) -> DisputeSubmission:
        """Store `submission` (its evidence file uploaded, not submitted yet)
        unless one is stored for the dispute already; returns the stored one
        (the first writer's file is the one every retry submits)."""
        ...

    def mark_dispute_submitted(
        self, dispute_id: str, submitted_at: str, dispute_status: str
    ) -> DisputeSubmission:
        """Record that Stripe took the evidence; a second call changes
        nothing and returns the stored record. NotFound if none is stored."""
        ...


class LogReader(Protocol):
    """The receipt log as stored with the ledger of record: checkpoints (the
    newest is the head), C2SP tiles, and receipts by leaf index."""

    def log_head(self) -> LogCheckpoint | None: ...
    def log_checkpoint(self, tree_size: int) -> LogCheckpoint | None: ...
    def log_checkpoints(self, after_size: int, limit: int) -> list[LogCheckpoint]:
        """Checkpoints with tree_size > after_size, oldest first, at most `limit`."""
        ...

    def read_tiles(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        """Stored tiles by (level, index); absent keys are left out."""
        ...

    def receipts_by_log_index(self, start: int, limit: int) -> list[StoredReceipt]:
        """Receipts with log_index >= start, in log order, at most `limit`."""
        ...


class LedgerStore(LogReader, Protocol):
    """The ledger of record: accounts, receipts, keys, entitlements, webhook
    events and the outbox. SQLite embedded; Cloud Spanner in production."""

    # -- lifecycle ---------------------------------------------------------
    def close(self) -> None: ...
    def check_writable(self) -> None:
        """Raise StoreUnavailable unless a write would succeed now."""
        ...

    # -- the charge path ---------------------------------------------------
    def commit_batch(
        self,
        writes: Sequence[ReceiptWrite],
        outbox: Sequence[OutboxMessage],
        log_append: LogAppend | None = None,
    ) -> None:
        """Atomically commit receipts (in the given order; one customer's are in
        chain order), their account and usage updates, outbox messages, and
        the receipt log's append (tiles and the signed checkpoint; see
        `ledger.log_rules`; a signature still being made, `LogAppend.signed`,
        is waited for after the other rows are written, in the same
        transaction). Durable when it returns. Raises ChainConflict
        naming every customer whose compare-and-set (seq and previous hash)
        failed or whose idempotency key exists (a receipt's or a refusal's),
        or LogConflict when another
        writer appended to the log first (its leaf indexes then clash with
        stored ones: still a LogConflict); then nothing was written."""
        ...

    def load_account(self, customer_id: str) -> AccountState | None:
        """The customer's chain head, balance and entitlements; None if unknown."""
        ...

    def get_account_head(self, customer_id: str) -> tuple[int, str, int] | None:
        """(seq, last_receipt_hash, balance_minor) of the account, or None if
        unknown: the cheap read the gateway and reconciler need."""
        ...

    def find_receipt_by_key(
        self, customer_id: str, idempotency_key: str
    ) -> StoredReceipt | None: ...
    def find_receipts_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredReceipt]:
        """The customer's receipts for any of these keys, by key: one read for a
        whole batch of events instead of one per event."""
        ...

    def commit_refusals(self, refusals: Sequence[StoredRefusal]) -> None:
        """Atomically keep these refusals under their idempotency keys.
        Durable when it returns. Raises ChainConflict naming every customer
        with a refusal whose key the customer already used (for a receipt or
        a refusal, stored or earlier in `refusals`); then nothing was written."""
        ...

    def find_answers_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredAnswer]:
        """The customer's receipts and refusals for any of these keys, by key:
        what the account actor replays for a key it has answered before."""
        ...

    def get_receipt(self, receipt_id: str) -> StoredReceipt | None: ...
    def list_receipts(
        self, customer_id: str, after_seq: int, limit: int
    ) -> list[StoredReceipt]: ...
    def iter_receipts(self, customer_id: str) -> Iterator[StoredReceipt]:
        """All of a customer's receipts in seq order (for audits)."""
        ...

    def stats_receipts_by_currency_day(self) -> list[tuple[str, str, int, int]]:
        """(currency, UTC day "YYYY-MM-DD" of recorded_at, receipt count, sum of
        amount_minor), ordered by day then currency."""
        ...

    # -- customers, keys, entitlements -------------------------------------
    def create_customer(self, customer: Customer) -> None:
        """Create the customer and its empty account; AlreadyExists if taken."""
        ...

    def get_customer(self, customer_id: str) -> Customer | None: ...
    def find_customer_by_email(self, email: str) -> Customer | None: ...
    def find_customer_by_stripe_id(self, stripe_customer_id: str) -> Customer | None: ...
    def set_stripe_customer_id(self, customer_id: str, stripe_customer_id: str) -> None: ...
    def list_customer_ids(self) -> list[str]: ...

    def create_api_key(self, api_key: ApiKey) -> None: ...
    def resolve_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not (callers check revoked_at)."""
        ...

    def revoke_api_key(self, customer_id: str, key_id: str, revoked_at: str) -> None:
        """Revoke the customer's key; NotFound if this customer has no such key
        (another customer's key id changes nothing). Revoking again keeps the
        first revocation time."""
        ...

    def put_entitlement(self, entitlement: Entitlement, *, reset_usage: bool = False) -> None:
        """Insert or update; keeps `used_minor` unless `reset_usage`."""
        ...

    def get_entitlements(self, customer_id: str) -> dict[str, Entitlement]: ...

    # -- signing keys -------------------------------------------------------
    def record_signing_key(self, key: SigningKeyRecord) -> None:
        """Idempotent: recording a known kid again changes nothing."""
        ...

    def signing_keys(self) -> list[SigningKeyRecord]: ...

    # -- webhook events (recorded durably, processed later) ---------------
    def record_webhook_event(self, event: WebhookEvent) -> bool:
        """Store the event unless its id is known; True if it was new."""
        ...

    def pending_webhook_events(self, now: str, limit: int) -> list[WebhookEvent]: ...
    def mark_webhook_processed(self, event_id: str, processed_at: str) -> None: ...
    def mark_webhook_failed(self, event_id: str, error: str, next_attempt_at: str) -> None: ...

    # -- outbox ---------------------------------------------------------------
    def enqueue_outbox(self, messages: Sequence[OutboxMessage]) -> None: ...
    def pending_outbox(self, topic: str, now: str, limit: int) -> list[OutboxMessage]:
        """Due messages of a topic, oldest first, in order per ordering key.

        Due = `next_attempt_at` (or `created_at`) <= `now`, compared as strings
        in the `ledger.clock` format. A message postponed by
        `outbox_retry_later` holds back the later messages of its ordering key
        until it is due again, so no message overtakes an earlier one."""
        ...

    def outbox_delivered(self, message_ids: Sequence[str]) -> None:
        """Remove from the backlog; unknown ids are ignored (at-least-once)."""
        ...

    def outbox_retry_later(self, message_id: str, error: str, next_attempt_at: str) -> None: ...
    def outbox_backlog(self) -> dict[str, int]:
        """Undelivered message count per topic."""
        ...

    def outbox_oldest(self) -> dict[str, str]:
        """`created_at` of the oldest undelivered message per topic (topics
        with no backlog are absent): how far delivery lags behind commits."""
        ...


class IntegrityHalts(Protocol):
    """Integrity halts recorded with the ledger of record, so that every
    gateway on the store sees them and a restart does not forget them."""

    def record_halt(self, incident: HaltIncident) -> HaltIncident:
        """Store `incident` unless an open incident with the same reason,
        customer and receipt exists (an audit repeated while the damage is
        there must not open a new incident each round); returns the open
        incident that is stored."""
        ...

    def open_halts(self) -> list[HaltIncident]:
        """The incidents not cleared yet, oldest first (the cheap read each
        gateway makes every second)."""
        ...

    def recent_halts(self, limit: int) -> list[HaltIncident]:
        """The newest `limit` incidents, open or cleared, newest first."""
        ...

    def clear_halt(self, incident_id: str, reason: str, cleared_at: str) -> HaltIncident:
        """Clear an open incident with the operator's reason; clearing a
        cleared one changes nothing and returns it. NotFound if unknown."""
        ...


class ReceiptReadModel(Protocol):
    """Customer-facing copy of receipts: same SQLite embedded; Firestore in
    production. Upserts are idempotent (keyed by receipt_id)."""

    def upsert_receipts(self, receipts: Sequence[StoredReceipt]) -> None: ...
    def get_receipt(self, receipt_id: str) -> StoredReceipt | None: ...
    def list_receipts(
        self, customer_id: str, after_seq: int, limit: int
    ) -> list[StoredReceipt]: ...
    def close(self) -> None: ...


class ReceiptBroadcast(Protocol):
    """Announces committed receipts and the log's signed checkpoints: Pub/Sub
    in production, with the customer as ordering key for receipts and one
    key for the log's checkpoints (a follower sees them in tree order)."""

    def publish(self, receipts: Sequence[StoredReceipt]) -> None: ...
    def publish_checkpoints(self, checkpoints: Sequence[LogCheckpoint]) -> None:
        """At least once, in the given order, told apart from receipts."""
        ...

    def close(self) -> None: ...


class ReceiptArchive(Protocol):
    """Append-only long-term copy (7-year retention) of receipts and the
    log's signed checkpoints: files embedded; Cloud Storage in production.
    Appending the same receipt or checkpoint twice keeps one copy."""

    def append(self, receipts: Sequence[StoredReceipt]) -> None: ...
    def read_customer(
        self, customer_id: str, known: Sequence[StoredReceipt] = ()
    ) -> list[StoredReceipt]:
        """The customer's receipts in seq order, one per receipt_id. An
        archived receipt equal to one of `known` (receipts the caller holds)
        may be answered with that object: the same list, built with less CPU."""
        ...

    def customer_ids(self) -> list[str]:
        """Every customer with archived receipts, sorted: what a restore walks."""
        ...

    def iter_customer(self, customer_id: str) -> Iterator[StoredReceipt]:
        """The customer's archived receipts, streamed in archive order with
        bounded memory (a restore holds one stream per customer): seq order,
        except that a receipt the reconciler filled in later may come late
        (and, after a crash, twice); `read_customer` sorts and dedups."""
        ...

    def append_checkpoints(self, checkpoints: Sequence[LogCheckpoint]) -> None:
        """Durable on return. One copy per (tree_size, root_hash): two
        checkpoints of one size with different roots (a fork) are both kept."""
        ...

    def read_checkpoints(self, after_size: int, limit: int) -> list[LogCheckpoint]:
        """Archived checkpoints with tree_size > after_size, by (tree_size,
        root_hash), at most `limit`: what a restore or an auditor pages through."""
        ...

    def close(self) -> None: ...


class CommitFeed(Protocol):
    """Committed receipts in commit order, by position: lets an in-process
    copy (the embedded archive) follow the ledger itself, with no outbox row
    written, read back and deleted per receipt. Positions only grow while
    the store is open; a position may name another receipt after an offline
    rebuild (SQLite VACUUM), which `receipt_id_at` lets a follower detect."""

    def receipts_after(self, position: int, limit: int) -> list[tuple[int, StoredReceipt]]: ...
    def receipt_id_at(self, position: int) -> str | None: ...
    def feed_backlog(self, position: int) -> tuple[int, str | None]:
        """How many receipts are past `position`, and the `recorded_at` of the
        first of them (None when there are none)."""
        ...
