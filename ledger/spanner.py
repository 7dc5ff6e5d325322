"""Cloud Spanner ledger of record (the LedgerStore port).

Several gateway instances share one database, so every chain advance is a
compare-and-set on the account's `seq` inside a read-write transaction, and a
whole group-commit batch is ONE transaction: Spanner (and, more so, its
emulator, which runs one read-write transaction at a time) rewards few large
transactions over many small ones.

Thread-safe: the google client's Database pools sessions across threads.
Every RPC carries a timeout; a transaction retries on ABORTED until
`_spanner_base.transaction_timeout_s`, then the store is reported
unavailable. Integrity halts, dispute submissions and the web app's tables
are in `_spanner_halts`, `_spanner_disputes` and `_spanner_web`; request
records for dispute evidence are written by `commit_batch` with their receipts.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import structlog
from google.api_core import exceptions as gexc
from google.cloud import spanner
from google.cloud.spanner_v1 import COMMIT_TIMESTAMP, param_types

from crypto.receipt import GENESIS_HASH
from ledger import limits
from ledger._gcp_client import release_quietly
from ledger._gcp_receipts import RECEIPT_FIELDS, receipt_from_row, receipt_row
from ledger._refusal_rules import find_answers
from ledger._spanner_base import (
    API_KEY_COLS,
    INT,
    STR,
    api_key_from_row,
    one,
    page_limit,
)
from ledger._spanner_codec import KeySet, decode_bytes, encode_bytes, read_key, request_timeout_s
from ledger._spanner_disputes import SpannerDisputes
from ledger._spanner_halts import SpannerHalts
from ledger._spanner_log import (
    CHECKPOINT_SELECT,
    HEAD_SELECT,
    check_log,
    checkpoint_from_row,
    read_tiles,
    write_log,
)
from ledger._spanner_refusals import SpannerRefusals, refused_keys
from ledger._spanner_web import SpannerWeb
from ledger.errors import (
    AlreadyExists,
    ChainConflict,
    InvariantViolation,
    NotFound,
    StoreUnavailable,
    check_invariant,
)
from ledger.gcp_urls import SpannerUrl, parse_spanner_url
from ledger.limits import commit_batch_receipts_max, receipts_page_max
from ledger.log_rules import log_indexes_of
from ledger.model import (
    AccountState,
    ApiKey,
    Customer,
    Entitlement,
    LogAppend,
    LogCheckpoint,
    OutboxMessage,
    RequestRecord,
    SigningKeyRecord,
    StoredAnswer,
    StoredReceipt,
    WebhookEvent,
)
from ledger.ports import ReceiptWrite
from ledger.spanner_schema import apply_migrations, ensure_database, pending_versions

__all__ = ["SpannerLedger"]

log = structlog.get_logger(__name__)

# Outbox rows one query of `pending_outbox` reads; a call pages on until it has
# its `limit` of due messages or the topic ends.
outbox_scan_page_rows: Final = receipts_page_max

_CUSTOMER_COLS: Final = ("customer_id", "email", "currency", "created_at", "stripe_customer_id")
_ACCOUNT_COLS: Final = ("customer_id", "seq", "last_receipt_hash", "balance_minor")
_ENTITLEMENT_COLS: Final = (
    "customer_id",
    "entitlement_id",
    "quota_minor",
    "policy",
    "status",
    "updated_at",
    "plan",
    "max_bots",
    "period_start",
    "period_end",
    "trial_end",
    "cancel_at_period_end",
    "used_minor",
)
# The receipt's id, then RequestRecord's fields in order.
_REQUEST_COLS: Final = (
    "receipt_id",
    *(field.name for field in dataclasses.fields(RequestRecord)),
)
_SIGNING_KEY_COLS: Final = ("kid", "alg", "public_jwk_json", "created_at")
_WEBHOOK_COLS: Final = (
    "event_id",
    "event_type",
    "payload",
    "received_at",
    "processed_at",
    "attempts",
    "next_attempt_at",
    "last_error",
)
_OUTBOX_COLS: Final = (
    "message_id",
    "topic",
    "ordering_key",
    "payload",
    "created_at",
    "attempts",
    "next_attempt_at",
    "last_error",
)
_RECEIPT_SELECT: Final = ", ".join(RECEIPT_FIELDS)
_TIMESTAMP: Final = param_types.TIMESTAMP
_STR_ARRAY: Final = param_types.Array(STR)  # type: ignore[no-untyped-call]
# Commit order, with the primary key last so that the order is total and a
# page can start strictly after the previous one's last row.
_OUTBOX_PAGE_SELECT: Final = (
    f"SELECT {', '.join(_OUTBOX_COLS)}, committed_at, position "
    "FROM Outbox@{FORCE_INDEX=OutboxByTopic} WHERE topic = @topic"
)
_OUTBOX_PAGE_AFTER: Final = (
    " AND committed_at >= @c AND (committed_at > @c OR position > @p "
    "OR (position = @p AND message_id > @m))"
)
_OUTBOX_PAGE_ORDER: Final = " ORDER BY committed_at, position, message_id LIMIT @n"


def _customer(row: Sequence[Any]) -> Customer:
    return Customer(*row)


def _entitlement(row: Sequence[Any]) -> Entitlement:
    values = dict(zip(_ENTITLEMENT_COLS, row, strict=True))
    check_invariant(values["policy"] in ("hard", "soft"), "unknown quota policy stored")
    return Entitlement(**values)


def _entitlement_row(entitlement: Entitlement, used_minor: int) -> tuple[Any, ...]:
    return tuple(
        used_minor if name == "used_minor" else getattr(entitlement, name)
        for name in _ENTITLEMENT_COLS
    )


def _request_row(receipt: StoredReceipt, request: RequestRecord) -> tuple[Any, ...]:
    return (receipt.receipt_id, *dataclasses.astuple(request))


def _webhook(row: Sequence[Any]) -> WebhookEvent:
    return WebhookEvent(*decode_bytes(row))


def _outbox(row: Sequence[Any]) -> OutboxMessage:
    return OutboxMessage(*decode_bytes(row))


class _Chains:
    """The batch's customers' chain heads, used keys and entitlement usage as
    read under the transaction's locks, advanced receipt by receipt."""

    def __init__(
        self,
        heads: dict[str, tuple[int, str, int]],
        used_keys: set[tuple[str, str]],
        usage: dict[tuple[str, str], int],
    ) -> None:
        self.heads = heads
        self.used_keys = used_keys
        self.usage = usage

    def _conflict(self, receipt: StoredReceipt) -> str | None:
        head = self.heads.get(receipt.customer_id)
        if head is None:
            return "unknown_account"
        if (receipt.customer_id, receipt.idempotency_key) in self.used_keys:
            return "idempotency_key_exists"
        if head[0] != receipt.seq - 1:
            return "stale_seq"
        if head[1] != receipt.previous_receipt_hash:
            # Same seq, other chain: a stale in-flight receipt of a chain
            # that failed must not land on its replacement.
            return "stale_previous_hash"
        return None

    def advance(self, receipts: Sequence[StoredReceipt]) -> None:
        """Extend every chain by its receipts, or raise ChainConflict naming
        every customer whose compare-and-set fails."""
        conflicts: dict[str, str] = {}
        for receipt in receipts:
            cid = receipt.customer_id
            if cid in conflicts:
                continue
            reason = self._conflict(receipt)
            if reason is not None:
                conflicts[cid] = reason
                continue
            self.heads[cid] = (receipt.seq, receipt.receipt_hash, receipt.balance_after_minor)
            self.used_keys.add((cid, receipt.idempotency_key))
            if (cid, receipt.entitlement_id) in self.usage:
                self.usage[(cid, receipt.entitlement_id)] += receipt.amount_minor
        if conflicts:
            raise ChainConflict(conflicts, conflicts)


def _read_chains(txn: Any, receipts: Sequence[StoredReceipt]) -> _Chains:
    """Accounts, used idempotency keys and usage of the batch: one read each."""
    customers = list(dict.fromkeys(r.customer_id for r in receipts))
    usage_keys = list(dict.fromkeys((r.customer_id, r.entitlement_id) for r in receipts))
    chains = _Chains({}, set(), {})
    if not receipts:
        return chains
    for cid, seq, head_hash, balance in txn.read(
        "Accounts", _ACCOUNT_COLS, KeySet(keys=[[c] for c in customers]), timeout=request_timeout_s
    ):
        chains.heads[cid] = (int(seq), str(head_hash), int(balance))
    for cid, key in txn.read(
        "Receipts",
        ("customer_id", "idempotency_key"),
        KeySet(keys=[[r.customer_id, r.idempotency_key] for r in receipts]),
        index="ReceiptsByKey",
        timeout=request_timeout_s,
    ):
        chains.used_keys.add((str(cid), str(key)))
    chains.used_keys |= refused_keys(txn, [(r.customer_id, r.idempotency_key) for r in receipts])
    for cid, eid, used in txn.read(
        "Entitlements",
        ("customer_id", "entitlement_id", "used_minor"),
        KeySet(keys=[list(k) for k in usage_keys]),
        timeout=request_timeout_s,
    ):
        chains.usage[(str(cid), str(eid))] = int(used)
    return chains


class SpannerLedger(SpannerHalts, SpannerDisputes, SpannerWeb, SpannerRefusals):
    """LedgerStore on Cloud Spanner; also its IntegrityHalts, ChargeRequests,
    DisputeSubmissions, kept refusals and WebAppStore (each part lives in its
    module).

    Build with `SpannerLedger.open("spanner://projects/P/instances/I/databases/D")`,
    or wrap an existing `google.cloud.spanner_v1.Database`.
    """

    @classmethod
    def open(cls, url: str, *, create: bool = False, migrate: bool = False) -> SpannerLedger:
        """Connect to the url's database. The schema must be current unless
        `migrate` (then it is brought up to date); `create` makes a missing
        instance (emulator only) and database."""
        parsed: SpannerUrl = parse_spanner_url(url)
        client = spanner.Client(project=parsed.project)
        database = ensure_database(client, parsed, create=create)
        try:
            if migrate:
                apply_migrations(database)
            else:
                pending = pending_versions(database)
                if pending:
                    raise StoreUnavailable(
                        f"{parsed}: schema migrations {pending} not applied; run `billing migrate`"
                    )
        except gexc.GoogleAPICallError as error:
            raise StoreUnavailable(f"{parsed}: {error}") from error
        log.info("spanner.opened", database=parsed.database_path)
        return cls(database, client=client)

    # -- lifecycle --------------------------------------------------------------
    def close(self) -> None:
        if self._life.close(self._release_in_background, "spanner.close_failed"):
            log.info("spanner.closed")

    def _release_in_background(self) -> None:
        # Database.close() joins the client's session-maintenance thread with
        # no timeout, and that thread sleeps 10 minutes between polls: waiting
        # is pointless, so a daemon thread finishes the close on its own.
        threading.Thread(
            target=release_quietly,
            args=(self._database.close, "spanner.close_failed"),
            name="spanner-close",
            daemon=True,
        ).start()

    def check_writable(self) -> None:
        rows = self._query("SELECT COUNT(*) FROM Accounts WHERE customer_id = ''")
        check_invariant(len(rows) == 1, "health query returned no row")

    # -- the charge path -----------------------------------------------------------
    def commit_batch(
        self,
        writes: Sequence[ReceiptWrite],
        outbox: Sequence[OutboxMessage],
        log_append: LogAppend | None = None,
    ) -> None:
        if not writes and not outbox:
            return
        check_invariant(
            len(writes) <= commit_batch_receipts_max,
            f"batch of {len(writes)} receipts exceeds {commit_batch_receipts_max}",
        )
        check_invariant(len(outbox) <= limits.spanner_outbox_messages_max, "outbox batch too large")
        receipts = [write.receipt for write in writes]
        log_indexes_of(receipts, log_append)  # the append's own shape, before any I/O
        requests = [_request_row(w.receipt, w.request) for w in writes if w.request is not None]

        def work(txn: Any) -> None:
            # One read per table for the whole batch, all under the transaction's
            # locks: a concurrent writer of the same rows aborts one of us.
            # The log's compare-and-set first, as in every adapter.
            check_log(txn, receipts, log_append)
            chains = _read_chains(txn, receipts)
            chains.advance(receipts)
            if receipts:
                txn.insert(
                    "Receipts", RECEIPT_FIELDS, [encode_bytes(receipt_row(r)) for r in receipts]
                )
                txn.update(
                    "Accounts", _ACCOUNT_COLS, [(cid, *head) for cid, head in chains.heads.items()]
                )
            if chains.usage:
                txn.update(
                    "Entitlements",
                    ("customer_id", "entitlement_id", "used_minor"),
                    [(cid, eid, used) for (cid, eid), used in chains.usage.items()],
                )
            if requests:
                txn.insert("ChargeRequests", _REQUEST_COLS, requests)
            if outbox:
                _insert_outbox(txn, outbox)
            if log_append is not None:
                published = write_log(txn, log_append)  # may wait for its signature
                if published:
                    _insert_outbox(txn, published, first_position=len(outbox))

        try:
            self._transact(work)
        except gexc.AlreadyExists as error:
            # Keys, seqs and the log size were checked under lock, so only a
            # receipt_id collision is left: a bug upstream, never retryable.
            raise InvariantViolation(f"receipt row already exists: {error}") from error
        log.debug(
            "spanner.batch_committed",
            receipts=len(receipts),
            outbox=len(outbox),
            log_size=None if log_append is None else log_append.checkpoint.tree_size,
        )

    def load_account(self, customer_id: str) -> AccountState | None:
        def run() -> AccountState | None:
            with self._database.snapshot(multi_use=True) as snapshot:
                customer_rows = read_key(snapshot, "Customers", _CUSTOMER_COLS, customer_id)
                account_rows = read_key(snapshot, "Accounts", _ACCOUNT_COLS, customer_id)
                entitlement_rows = list(
                    snapshot.execute_sql(
                        f"SELECT {', '.join(_ENTITLEMENT_COLS)} FROM Entitlements "
                        "WHERE customer_id = @c",
                        params={"c": customer_id},
                        param_types={"c": STR},
                        timeout=request_timeout_s,
                    )
                )
            customer = one(customer_rows)
            account = one(account_rows)
            if customer is None or account is None:
                return None
            entitlements = {row[1]: _entitlement(row) for row in entitlement_rows}
            return AccountState(
                customer=_customer(customer),
                seq=int(account[1]),
                last_receipt_hash=str(account[2]),
                balance_minor=int(account[3]),
                entitlements=entitlements,
            )

        return self._call(run)

    def get_account_head(self, customer_id: str) -> tuple[int, str, int] | None:
        def run() -> list[Any]:
            with self._database.snapshot() as snapshot:
                return read_key(snapshot, "Accounts", _ACCOUNT_COLS, customer_id)

        row = one(self._call(run))
        return None if row is None else (int(row[1]), str(row[2]), int(row[3]))

    def stats_receipts_by_currency_day(self) -> list[tuple[str, str, int, int]]:
        # recorded_at is the fixed RFC 3339 format: its first 10 chars are the UTC day.
        rows = self._query(
            "SELECT currency, SUBSTR(recorded_at, 1, 10) AS day, COUNT(*), SUM(amount_minor) "
            "FROM Receipts GROUP BY currency, day ORDER BY day, currency"
        )
        return [(str(c), str(day), int(n), int(total)) for c, day, n, total in rows]

    def _receipt_query(
        self, where: str, params: dict[str, Any], suffix: str = ""
    ) -> list[StoredReceipt]:
        types = {name: (INT if isinstance(v, int) else STR) for name, v in params.items()}
        rows = self._query(f"SELECT {_RECEIPT_SELECT} FROM {where}{suffix}", params, types)
        return [receipt_from_row(decode_bytes(row)) for row in rows]

    def find_receipt_by_key(self, customer_id: str, idempotency_key: str) -> StoredReceipt | None:
        return self.find_receipts_by_keys(customer_id, [idempotency_key]).get(idempotency_key)

    def find_receipts_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredReceipt]:
        keys = list(dict.fromkeys(idempotency_keys))
        if not keys:
            return {}
        rows = self._query(
            f"SELECT {_RECEIPT_SELECT} FROM Receipts@{{FORCE_INDEX=ReceiptsByKey}} "
            "WHERE customer_id = @c AND idempotency_key IN UNNEST(@keys)",
            {"c": customer_id, "keys": keys},
            {"c": STR, "keys": _STR_ARRAY},
        )
        receipts = (receipt_from_row(decode_bytes(row)) for row in rows)
        return {receipt.idempotency_key: receipt for receipt in receipts}

    def find_answers_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredAnswer]:
        return find_answers(self, customer_id, idempotency_keys)

    def get_receipt(self, receipt_id: str) -> StoredReceipt | None:
        return one(
            self._receipt_query(
                "Receipts@{FORCE_INDEX=ReceiptsById} WHERE receipt_id = @r", {"r": receipt_id}
            )
        )

    def list_receipts(self, customer_id: str, after_seq: int, limit: int) -> list[StoredReceipt]:
        page = page_limit(limit)
        if page == 0:
            return []
        return self._receipt_query(
            "Receipts WHERE customer_id = @c AND seq > @after",
            {"c": customer_id, "after": int(after_seq), "n": page},
            " ORDER BY seq LIMIT @n",
        )

    def iter_receipts(self, customer_id: str) -> Iterator[StoredReceipt]:
        after = 0
        while True:
            page = self.list_receipts(customer_id, after, receipts_page_max)
            for receipt in page:
                check_invariant(receipt.seq == after + 1, f"gap in the chain of {customer_id}")
                after = receipt.seq
                yield receipt
            if len(page) < receipts_page_max:
                return

    def charge_request(self, receipt_id: str) -> RequestRecord | None:
        row = one(
            self._query(
                f"SELECT {', '.join(_REQUEST_COLS[1:])} FROM ChargeRequests "
                "WHERE receipt_id = @r",
                {"r": receipt_id},
                {"r": STR},
            )
        )
        return None if row is None else RequestRecord(*row)

    # -- the receipt log (LogReader) ---------------------------------------------------
    def log_head(self) -> LogCheckpoint | None:
        row = one(self._query(HEAD_SELECT))
        return None if row is None else checkpoint_from_row(row)

    def log_checkpoint(self, tree_size: int) -> LogCheckpoint | None:
        row = one(
            self._query(
                f"{CHECKPOINT_SELECT} WHERE tree_size = @s", {"s": int(tree_size)}, {"s": INT}
            )
        )
        return None if row is None else checkpoint_from_row(row)

    def log_checkpoints(self, after_size: int, limit: int) -> list[LogCheckpoint]:
        page = page_limit(limit)
        if page == 0:
            return []
        rows = self._query(
            f"{CHECKPOINT_SELECT} WHERE tree_size > @a ORDER BY tree_size LIMIT @n",
            {"a": int(after_size), "n": page},
            {"a": INT, "n": INT},
        )
        return [checkpoint_from_row(row) for row in rows]

    def read_tiles(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        def run() -> dict[tuple[int, int], bytes]:
            with self._database.snapshot() as snapshot:
                return read_tiles(snapshot, keys)

        return self._call(run)

    def receipts_by_log_index(self, start: int, limit: int) -> list[StoredReceipt]:
        page = page_limit(limit)
        if page == 0:
            return []
        return self._receipt_query(
            # The filter excludes NULLs, so the NULL_FILTERED index answers it;
            # the emulator cannot prove that and wants its own hint (which
            # Cloud Spanner ignores).
            "Receipts@{FORCE_INDEX=ReceiptsByLogIndex,"
            "spanner_emulator.disable_query_null_filtered_index_check=true} "
            "WHERE log_index IS NOT NULL AND log_index >= @s",
            {"s": int(start), "n": page},
            " ORDER BY log_index LIMIT @n",
        )

    # -- customers, keys, entitlements ------------------------------------------------
    def create_customer(self, customer: Customer) -> None:
        def work(txn: Any) -> None:
            txn.insert(
                "Customers", _CUSTOMER_COLS, [tuple(getattr(customer, c) for c in _CUSTOMER_COLS)]
            )
            txn.insert("Accounts", _ACCOUNT_COLS, [(customer.customer_id, 0, GENESIS_HASH, 0)])

        try:
            self._transact(work)
        except gexc.AlreadyExists as error:
            raise AlreadyExists(f"customer {customer.customer_id!r} exists") from error

    def get_customer(self, customer_id: str) -> Customer | None:
        rows = self._query(
            f"SELECT {', '.join(_CUSTOMER_COLS)} FROM Customers WHERE customer_id = @c",
            {"c": customer_id},
            {"c": STR},
        )
        row = one(rows)
        return None if row is None else _customer(row)

    def _customer_by(self, column: str, value: str) -> Customer | None:
        index = {"email": "CustomersByEmail", "stripe_customer_id": "CustomersByStripeId"}[column]
        rows = self._query(
            f"SELECT {', '.join(_CUSTOMER_COLS)} FROM Customers@{{FORCE_INDEX={index}}} "
            f"WHERE {column} = @v ORDER BY created_at, customer_id LIMIT 1",
            {"v": value},
            {"v": STR},
        )
        return _customer(rows[0]) if rows else None

    def find_customer_by_email(self, email: str) -> Customer | None:
        return self._customer_by("email", email)

    def find_customer_by_stripe_id(self, stripe_customer_id: str) -> Customer | None:
        return self._customer_by("stripe_customer_id", stripe_customer_id)

    def set_stripe_customer_id(self, customer_id: str, stripe_customer_id: str) -> None:
        count = self._update_count(
            "UPDATE Customers SET stripe_customer_id = @s WHERE customer_id = @c",
            {"s": stripe_customer_id, "c": customer_id},
            {"s": STR, "c": STR},
        )
        if count == 0:
            raise NotFound(f"customer {customer_id!r}")

    def list_customer_ids(self) -> list[str]:
        return [
            str(row[0])
            for row in self._query("SELECT customer_id FROM Customers ORDER BY customer_id")
        ]

    def create_api_key(self, api_key: ApiKey) -> None:
        def work(txn: Any) -> None:
            txn.insert(
                "ApiKeys", API_KEY_COLS, [tuple(getattr(api_key, c) for c in API_KEY_COLS)]
            )

        try:
            self._transact(work)
        except gexc.AlreadyExists as error:
            raise AlreadyExists(f"api key {api_key.key_id!r} exists") from error

    def resolve_api_key(self, key_hash: str) -> ApiKey | None:
        rows = self._query(
            f"SELECT {', '.join(API_KEY_COLS)} FROM ApiKeys@{{FORCE_INDEX=ApiKeysByHash}} "
            "WHERE key_hash = @h",
            {"h": key_hash},
            {"h": STR},
        )
        row = one(rows)
        return None if row is None else api_key_from_row(row)

    def revoke_api_key(self, customer_id: str, key_id: str, revoked_at: str) -> None:
        if self._revoke_once("ApiKeys", "key_id", key_id, customer_id, revoked_at) == 0:
            raise NotFound(f"api key {key_id!r} of customer {customer_id!r}")

    def put_entitlement(self, entitlement: Entitlement, *, reset_usage: bool = False) -> None:
        key = [entitlement.customer_id, entitlement.entitlement_id]

        def work(txn: Any) -> None:
            rows = list(
                txn.read(
                    "Entitlements",
                    ("used_minor",),
                    KeySet(keys=[key]),
                    timeout=request_timeout_s,
                )
            )
            used = 0 if reset_usage or not rows else int(rows[0][0])
            txn.insert_or_update(
                "Entitlements", _ENTITLEMENT_COLS, [_entitlement_row(entitlement, used)]
            )

        self._transact(work)

    def get_entitlements(self, customer_id: str) -> dict[str, Entitlement]:
        rows = self._query(
            f"SELECT {', '.join(_ENTITLEMENT_COLS)} FROM Entitlements WHERE customer_id = @c",
            {"c": customer_id},
            {"c": STR},
        )
        return {str(row[1]): _entitlement(row) for row in rows}

    # -- signing keys --------------------------------------------------------------
    def record_signing_key(self, key: SigningKeyRecord) -> None:
        def work(txn: Any) -> None:
            known = read_key(txn, "SigningKeys", ("kid",), key.kid)
            if not known:
                txn.insert(
                    "SigningKeys",
                    _SIGNING_KEY_COLS,
                    [tuple(getattr(key, c) for c in _SIGNING_KEY_COLS)],
                )

        self._transact(work)

    def signing_keys(self) -> list[SigningKeyRecord]:
        rows = self._query(
            f"SELECT {', '.join(_SIGNING_KEY_COLS)} FROM SigningKeys ORDER BY created_at, kid"
        )
        return [SigningKeyRecord(*row) for row in rows]

    # -- webhook events --------------------------------------------------------------
    def record_webhook_event(self, event: WebhookEvent) -> bool:
        def work(txn: Any) -> bool:
            known = read_key(txn, "WebhookEvents", ("event_id",), event.event_id)
            if known:
                return False
            txn.insert(
                "WebhookEvents",
                _WEBHOOK_COLS,
                [encode_bytes([getattr(event, c) for c in _WEBHOOK_COLS])],
            )
            return True

        return self._transact(work)

    def pending_webhook_events(self, now: str, limit: int) -> list[WebhookEvent]:
        rows = self._query(
            f"SELECT {', '.join(_WEBHOOK_COLS)} FROM WebhookEvents "
            "WHERE processed_at IS NULL AND received_at <= @now "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= @now) "
            "ORDER BY received_at, event_id LIMIT @n",
            {"now": now, "n": page_limit(limit)},
            {"now": STR, "n": INT},
        )
        return [_webhook(row) for row in rows]

    def mark_webhook_processed(self, event_id: str, processed_at: str) -> None:
        self._update_count(
            "UPDATE WebhookEvents SET processed_at = @t, next_attempt_at = NULL "
            "WHERE event_id = @e",
            {"t": processed_at, "e": event_id},
            {"t": STR, "e": STR},
        )

    def mark_webhook_failed(self, event_id: str, error: str, next_attempt_at: str) -> None:
        self._update_count(
            "UPDATE WebhookEvents SET attempts = attempts + 1, last_error = @err, "
            "next_attempt_at = @next WHERE event_id = @e",
            {"err": error, "next": next_attempt_at, "e": event_id},
            {"err": STR, "next": STR, "e": STR},
        )

    # -- outbox ------------------------------------------------------------------------
    def enqueue_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        too_many = len(messages) > limits.spanner_outbox_messages_max
        check_invariant(not too_many, "outbox batch too large")

        def work(txn: Any) -> None:
            _insert_outbox(txn, messages)

        self._transact(work)

    def pending_outbox(self, topic: str, now: str, limit: int) -> list[OutboxMessage]:
        # One pass over the topic in commit order, a page at a time, blocking
        # keys in Python: a correlated NOT EXISTS per row is quadratic on the
        # emulator and times out once a few hundred rows wait. Every page of
        # one call reads the same snapshot, so the pass sees one consistent
        # backlog. It reads on past blocked rows however many there are: a
        # bound there would starve the due messages behind them.
        wanted = page_limit(limit)
        if wanted == 0:
            return []

        def run() -> list[OutboxMessage]:
            scan = _OutboxScan(now, wanted)
            after: _OutboxCursor | None = None
            with self._database.snapshot(multi_use=True) as snapshot:
                while not scan.full():
                    rows = [list(row) for row in _outbox_page(snapshot, topic, after)]
                    scan.take(rows)
                    if len(rows) < outbox_scan_page_rows:
                        break
                    after = _cursor(rows[-1])
            return scan.due

        return self._call(run)

    def outbox_delivered(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return

        def work(txn: Any) -> None:
            # Delivered rows go: the table holds only the backlog.
            txn.delete("Outbox", KeySet(keys=[[m] for m in dict.fromkeys(message_ids)]))

        self._transact(work)

    def outbox_retry_later(self, message_id: str, error: str, next_attempt_at: str) -> None:
        self._update_count(
            "UPDATE Outbox SET attempts = attempts + 1, last_error = @err, "
            "next_attempt_at = @next WHERE message_id = @m",
            {"err": error, "next": next_attempt_at, "m": message_id},
            {"err": STR, "next": STR, "m": STR},
        )

    def outbox_backlog(self) -> dict[str, int]:
        rows = self._query("SELECT topic, COUNT(*) FROM Outbox GROUP BY topic")
        return {str(topic): int(count) for topic, count in rows}

    def outbox_oldest(self) -> dict[str, str]:
        rows = self._query("SELECT topic, MIN(created_at) FROM Outbox GROUP BY topic")
        return {str(topic): str(created_at) for topic, created_at in rows}


def _insert_outbox(txn: Any, messages: Sequence[OutboxMessage], first_position: int = 0) -> None:
    """`first_position`: after the messages this commit already inserted."""
    txn.insert(
        "Outbox",
        (*_OUTBOX_COLS, "committed_at", "position"),
        [
            (*encode_bytes([getattr(m, c) for c in _OUTBOX_COLS]), COMMIT_TIMESTAMP, position)
            for position, m in enumerate(messages, first_position)
        ],
    )


# (committed_at, position, message_id) of the last outbox row a page read.
_OutboxCursor = tuple[Any, int, str]


def _cursor(row: Sequence[Any]) -> _OutboxCursor:
    committed_at, position = row[len(_OUTBOX_COLS) :]
    return committed_at, int(position), str(row[0])


def _outbox_page(snapshot: Any, topic: str, after: _OutboxCursor | None) -> Iterator[Any]:
    """One page of a topic's outbox rows in commit order, after `after`."""
    params: dict[str, Any] = {"topic": topic, "n": outbox_scan_page_rows}
    types: dict[str, Any] = {"topic": STR, "n": INT}
    sql = _OUTBOX_PAGE_SELECT
    if after is not None:
        sql += _OUTBOX_PAGE_AFTER
        params.update(c=after[0], p=after[1], m=after[2])
        types.update(c=_TIMESTAMP, p=INT, m=STR)
    result: Iterator[Any] = snapshot.execute_sql(
        sql + _OUTBOX_PAGE_ORDER, params=params, param_types=types, timeout=request_timeout_s
    )
    return result


class _OutboxScan:
    """Picks the due messages out of a topic's rows fed in commit order.

    A row not yet due (`next_attempt_at`, else `created_at`, after `now`)
    blocks its ordering key: no later row of that key may overtake it.
    """

    def __init__(self, now: str, wanted: int) -> None:
        self._now = now
        self._wanted = wanted
        self._blocked: set[str] = set()
        self.due: list[OutboxMessage] = []

    def full(self) -> bool:
        return len(self.due) >= self._wanted

    def take(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            if self.full():
                return
            message = _outbox(row[: len(_OUTBOX_COLS)])
            key = message.ordering_key
            if (message.next_attempt_at or message.created_at) > self._now:
                self._blocked.add(key)
            elif key not in self._blocked:
                self.due.append(message)
