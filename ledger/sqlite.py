"""The embedded ledger: one SQLite file, WAL, `synchronous=FULL`, one process.

`SqliteLedger` is both the `LedgerStore` and the `ReceiptReadModel` (the
embedded read model is the ledger itself). Thread-safe: one write connection
behind a lock (the ledger writer commits batches), and one read connection per
calling thread so reads never wait behind a commit's fsync.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from crypto.receipt import GENESIS_HASH
from ledger import limits
from ledger._sqlite_batch import BatchPlan, diagnose, plan_batch
from ledger._sqlite_conn import FileLock, Reader, connect, lock_timeout_s
from ledger._sqlite_rows import (
    API_KEY_COLUMNS,
    CUSTOMER_COLUMNS,
    ENTITLEMENT_COLUMNS,
    OUTBOX_COLUMNS,
    RECEIPT_COLUMNS,
    SIGNING_KEY_COLUMNS,
    WEBHOOK_COLUMNS,
    Row,
    api_key_from_row,
    customer_from_row,
    entitlement_from_row,
    entitlement_params,
    outbox_from_row,
    outbox_params,
    placeholders,
    receipt_from_row,
    receipt_params,
    signing_key_from_row,
    webhook_from_row,
    webhook_params,
)
from ledger._sqlite_schema import migrate
from ledger.errors import (
    AlreadyExists,
    ChainConflict,
    InvariantViolation,
    NotFound,
    StoreUnavailable,
    check_invariant,
)
from ledger.model import (
    AccountState,
    ApiKey,
    Customer,
    Entitlement,
    OutboxMessage,
    SigningKeyRecord,
    StoredReceipt,
    WebhookEvent,
)
from ledger.ports import ReceiptWrite

__all__ = ["SqliteLedger"]

log = structlog.get_logger(__name__)

_INSERT_RECEIPT: Final = (
    f"INSERT INTO receipts ({RECEIPT_COLUMNS}) VALUES ({placeholders(RECEIPT_COLUMNS)})"
)
_ACCOUNT_CAS: Final = (
    "UPDATE accounts SET seq = ?, last_receipt_hash = ?, balance_minor = ? "
    "WHERE customer_id = ? AND seq = ? AND last_receipt_hash = ? AND balance_minor = ?"
)
_ADD_USAGE: Final = (
    "UPDATE entitlements SET used_minor = used_minor + ? "
    "WHERE customer_id = ? AND entitlement_id = ?"
)
_INSERT_OUTBOX: Final = (
    f"INSERT INTO outbox ({OUTBOX_COLUMNS}, due_at) VALUES ({placeholders(OUTBOX_COLUMNS, 1)})"
)
_SELECT_RECEIPTS: Final = f"SELECT {RECEIPT_COLUMNS} FROM receipts"
# Due messages of a topic in commit order, except those behind a not-yet-due
# message of the same ordering key (a retry postponed) so each key stays in order.
_PENDING_OUTBOX: Final = f"""
    WITH blocked AS (
        SELECT ordering_key, MIN(position) AS position FROM outbox
        WHERE topic = ? AND due_at > ? GROUP BY ordering_key
    )
    SELECT {", ".join("o." + c.strip() for c in OUTBOX_COLUMNS.split(","))}
    FROM outbox AS o LEFT JOIN blocked AS b ON b.ordering_key = o.ordering_key
    WHERE o.topic = ? AND o.due_at <= ? AND (b.position IS NULL OR o.position < b.position)
    ORDER BY o.position LIMIT ?
"""


class SqliteLedger:
    """LedgerStore + ReceiptReadModel on one SQLite file. Build with `open()`."""

    def __init__(self, path: Path, lock: FileLock, writer: sqlite3.Connection) -> None:
        """Private: use `SqliteLedger.open(path)`."""
        self._path = path
        self._lock = lock
        self._writer: sqlite3.Connection | None = writer
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: dict[int, Reader] = {}
        self._local = threading.local()
        self._closed = False

    @classmethod
    def open(cls, path: Path) -> SqliteLedger:
        """Open (creating if needed) the ledger file and bring its schema up to date.

        Raises StoreLocked if another process (or another open store in this
        process) has the file; the lock is held until `close()`.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path)
        try:
            writer = connect(path, writer=True)
            try:
                version = migrate(writer)
            except BaseException:
                writer.close()
                raise
        except sqlite3.Error as exc:
            lock.release()
            raise StoreUnavailable(f"cannot open ledger file {path}: {exc}") from exc
        except BaseException:
            lock.release()
            raise
        log.info("ledger.sqlite.opened", path=str(path), schema_version=version)
        return cls(path, lock, writer)

    @property
    def path(self) -> Path:
        return self._path

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle ---------------------------------------------------------
    def close(self) -> None:
        """Close every connection and release the file lock. Idempotent."""
        with self._locked(self._write_lock, "writer"):
            if self._closed:
                return
            self._closed = True
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
        with self._locked(self._readers_lock, "readers"):
            readers = list(self._readers.values())
            self._readers.clear()
        for reader in readers:
            reader.close()
        self._lock.release()
        log.info("ledger.sqlite.closed", path=str(self._path))

    def check_writable(self) -> None:
        with self._writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

    # -- the charge path ---------------------------------------------------
    def commit_batch(
        self, writes: Sequence[ReceiptWrite], outbox: Sequence[OutboxMessage]
    ) -> None:
        if not writes and not outbox:
            return
        plan = plan_batch(writes)
        outbox_rows = [outbox_params(message) for message in outbox]
        with self._writing() as conn:
            if not plan.conflicts:
                try:
                    with _transaction(conn):
                        self._apply_batch(conn, plan, outbox_rows)
                    return
                except _Rollback:
                    pass
            reasons = diagnose(conn, plan)
        if not reasons:
            raise InvariantViolation("commit_batch failed but no customer is in conflict")
        log.info("ledger.chain_conflict", customers=sorted(reasons), reasons=reasons)
        raise ChainConflict(reasons, reasons)

    @staticmethod
    def _apply_batch(conn: sqlite3.Connection, plan: BatchPlan, outbox_rows: list[Row]) -> None:
        if plan.account_cas:
            updated = conn.executemany(_ACCOUNT_CAS, plan.account_cas).rowcount
            if updated != len(plan.account_cas):
                raise _Rollback
        try:
            conn.executemany(_INSERT_RECEIPT, plan.receipts)
        except sqlite3.IntegrityError:
            raise _Rollback from None
        if plan.usage:
            updated = conn.executemany(_ADD_USAGE, plan.usage).rowcount
            if updated != len(plan.usage):
                # A receipt for an entitlement the ledger does not know: the
                # charge itself is valid, so commit it, but say so loudly.
                log.error("ledger.usage_without_entitlement", usage=plan.usage)
        if outbox_rows:
            conn.executemany(_INSERT_OUTBOX, outbox_rows)

    def load_account(self, customer_id: str) -> AccountState | None:
        with self._reading() as conn, _snapshot(conn):
            customer_rows = conn.execute(
                f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE customer_id = ?", (customer_id,)
            ).fetchall()
            account_rows = conn.execute(
                "SELECT seq, last_receipt_hash, balance_minor FROM accounts WHERE customer_id = ?",
                (customer_id,),
            ).fetchall()
            entitlement_rows = conn.execute(
                f"SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE customer_id = ?",
                (customer_id,),
            ).fetchall()
        if not customer_rows:
            return None
        check_invariant(bool(account_rows), f"customer {customer_id} has no account row")
        seq, last_hash, balance = account_rows[0]
        entitlements = [entitlement_from_row(row) for row in entitlement_rows]
        return AccountState(
            customer=customer_from_row(customer_rows[0]),
            seq=seq,
            last_receipt_hash=last_hash,
            balance_minor=balance,
            entitlements={e.entitlement_id: e for e in entitlements},
        )

    def get_account_head(self, customer_id: str) -> tuple[int, str, int] | None:
        row = self._one(
            "SELECT seq, last_receipt_hash, balance_minor FROM accounts WHERE customer_id = ?",
            (customer_id,),
        )
        return None if row is None else (row[0], row[1], row[2])

    def find_receipt_by_key(
        self, customer_id: str, idempotency_key: str
    ) -> StoredReceipt | None:
        row = self._one(
            f"{_SELECT_RECEIPTS} WHERE customer_id = ? AND idempotency_key = ?",
            (customer_id, idempotency_key),
        )
        return None if row is None else receipt_from_row(row)

    def get_receipt(self, receipt_id: str) -> StoredReceipt | None:
        row = self._one(f"{_SELECT_RECEIPTS} WHERE receipt_id = ?", (receipt_id,))
        return None if row is None else receipt_from_row(row)

    def list_receipts(self, customer_id: str, after_seq: int, limit: int) -> list[StoredReceipt]:
        """Receipts with seq > after_seq, in seq order, at most
        min(limit, receipts_page_max)."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        rows = self._all(
            f"{_SELECT_RECEIPTS} WHERE customer_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (customer_id, after_seq, min(limit, limits.receipts_page_max)),
        )
        return [receipt_from_row(row) for row in rows]

    def iter_receipts(self, customer_id: str) -> Iterator[StoredReceipt]:
        # Page by seq: no read transaction stays open while the caller works.
        after_seq = 0
        while True:
            page = self.list_receipts(customer_id, after_seq, limits.receipts_page_max)
            yield from page
            if len(page) < limits.receipts_page_max:
                return
            after_seq = page[-1].seq

    def stats_receipts_by_currency_day(self) -> list[tuple[str, str, int, int]]:
        """(currency, UTC day `YYYY-MM-DD`, receipt count, sum of amount_minor)."""
        rows = self._all(
            "SELECT currency, substr(recorded_at, 1, 10) AS day, COUNT(*), SUM(amount_minor) "
            "FROM receipts GROUP BY currency, day ORDER BY day, currency",
            (),
        )
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    # -- ReceiptReadModel --------------------------------------------------
    def upsert_receipts(self, receipts: Sequence[StoredReceipt]) -> None:
        """Idempotent by receipt_id. Receipts committed through commit_batch
        are already here (the embedded read model is the ledger), so this only
        fills in missing ones; a different receipt under a known id or
        (customer, seq) is refused."""
        if not receipts:
            return
        with self._writing() as conn, _transaction(conn):
            conn.executemany(
                f"{_INSERT_RECEIPT} ON CONFLICT DO NOTHING",
                [receipt_params(receipt) for receipt in receipts],
            )
            for receipt in receipts:
                rows = conn.execute(
                    "SELECT customer_id, seq, receipt_hash FROM receipts WHERE receipt_id = ?",
                    (receipt.receipt_id,),
                ).fetchall()
                check_invariant(
                    bool(rows)
                    and tuple(rows[0])
                    == (receipt.customer_id, receipt.seq, receipt.receipt_hash),
                    f"read model: receipt {receipt.receipt_id} conflicts with a stored one",
                )

    # -- customers, keys, entitlements -------------------------------------
    def create_customer(self, customer: Customer) -> None:
        with self._writing() as conn, _transaction(conn):
            try:
                conn.execute(
                    f"INSERT INTO customers ({CUSTOMER_COLUMNS}) "
                    f"VALUES ({placeholders(CUSTOMER_COLUMNS)})",
                    (
                        customer.customer_id,
                        customer.email,
                        customer.currency,
                        customer.created_at,
                        customer.stripe_customer_id,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"customer {customer.customer_id} exists") from None
            conn.execute(
                "INSERT INTO accounts (customer_id, seq, last_receipt_hash, balance_minor) "
                "VALUES (?, 0, ?, 0)",
                (customer.customer_id, GENESIS_HASH),
            )

    def get_customer(self, customer_id: str) -> Customer | None:
        return self._customer_where("customer_id = ?", customer_id)

    def find_customer_by_email(self, email: str) -> Customer | None:
        return self._customer_where("email = ?", email)

    def find_customer_by_stripe_id(self, stripe_customer_id: str) -> Customer | None:
        return self._customer_where("stripe_customer_id = ?", stripe_customer_id)

    def _customer_where(self, condition: str, value: str) -> Customer | None:
        # Oldest first if several match (emails are not unique).
        row = self._one(
            f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE {condition} "
            "ORDER BY created_at, customer_id LIMIT 1",
            (value,),
        )
        return None if row is None else customer_from_row(row)

    def set_stripe_customer_id(self, customer_id: str, stripe_customer_id: str) -> None:
        self._update_one(
            "UPDATE customers SET stripe_customer_id = ? WHERE customer_id = ?",
            (stripe_customer_id, customer_id),
            f"customer {customer_id}",
        )

    def list_customer_ids(self) -> list[str]:
        return [row[0] for row in self._all("SELECT customer_id FROM customers ORDER BY 1", ())]

    def create_api_key(self, api_key: ApiKey) -> None:
        with self._writing() as conn, _transaction(conn):
            try:
                conn.execute(
                    f"INSERT INTO api_keys ({API_KEY_COLUMNS}) "
                    f"VALUES ({placeholders(API_KEY_COLUMNS)})",
                    (
                        api_key.key_id,
                        api_key.key_hash,
                        api_key.customer_id,
                        api_key.created_at,
                        api_key.revoked_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"api key {api_key.key_id} exists") from None

    def resolve_api_key(self, key_hash: str) -> ApiKey | None:
        row = self._one(f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
        return None if row is None else api_key_from_row(row)

    def revoke_api_key(self, key_id: str, revoked_at: str) -> None:
        """Revoke; revoking again keeps the first revocation time."""
        self._update_one(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ?",
            (revoked_at, key_id),
            f"api key {key_id}",
        )

    def put_entitlement(self, entitlement: Entitlement, *, reset_usage: bool = False) -> None:
        """Insert or update. A new entitlement starts at `entitlement.used_minor`
        (normally 0); an existing one keeps its usage unless `reset_usage`,
        which sets it to 0."""
        updates = ", ".join(
            f"{c} = excluded.{c}"
            for c in (c.strip() for c in ENTITLEMENT_COLUMNS.split(","))
            if c not in ("customer_id", "entitlement_id", "used_minor")
        )
        usage = "0" if reset_usage else "entitlements.used_minor"
        with self._writing() as conn, _transaction(conn):
            conn.execute(
                f"INSERT INTO entitlements ({ENTITLEMENT_COLUMNS}) "
                f"VALUES ({placeholders(ENTITLEMENT_COLUMNS)}) "
                f"ON CONFLICT (customer_id, entitlement_id) DO UPDATE SET {updates}, "
                f"used_minor = {usage}",
                entitlement_params(entitlement, entitlement.used_minor),
            )

    def get_entitlements(self, customer_id: str) -> dict[str, Entitlement]:
        rows = self._all(
            f"SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE customer_id = ?",
            (customer_id,),
        )
        return {row[1]: entitlement_from_row(row) for row in rows}

    # -- signing keys -------------------------------------------------------
    def record_signing_key(self, key: SigningKeyRecord) -> None:
        with self._writing() as conn, _transaction(conn):
            conn.execute(
                f"INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) "
                f"VALUES ({placeholders(SIGNING_KEY_COLUMNS)}) ON CONFLICT (kid) DO NOTHING",
                (key.kid, key.alg, key.public_jwk_json, key.created_at),
            )

    def signing_keys(self) -> list[SigningKeyRecord]:
        rows = self._all(
            f"SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid", ()
        )
        return [signing_key_from_row(row) for row in rows]

    # -- webhook events -----------------------------------------------------
    def record_webhook_event(self, event: WebhookEvent) -> bool:
        with self._writing() as conn, _transaction(conn):
            cursor = conn.execute(
                f"INSERT INTO webhook_events ({WEBHOOK_COLUMNS}, due_at) "
                f"VALUES ({placeholders(WEBHOOK_COLUMNS, 1)}) ON CONFLICT (event_id) DO NOTHING",
                webhook_params(event),
            )
            return cursor.rowcount == 1

    def pending_webhook_events(self, now: str, limit: int) -> list[WebhookEvent]:
        rows = self._all(
            f"SELECT {WEBHOOK_COLUMNS} FROM webhook_events "
            "WHERE processed_at IS NULL AND due_at <= ? ORDER BY due_at, position LIMIT ?",
            (now, limit),
        )
        return [webhook_from_row(row) for row in rows]

    def mark_webhook_processed(self, event_id: str, processed_at: str) -> None:
        self._update_one(
            "UPDATE webhook_events SET processed_at = coalesce(processed_at, ?) "
            "WHERE event_id = ?",
            (processed_at, event_id),
            f"webhook event {event_id}",
        )

    def mark_webhook_failed(self, event_id: str, error: str, next_attempt_at: str) -> None:
        self._update_one(
            "UPDATE webhook_events SET attempts = attempts + 1, last_error = ?, "
            "next_attempt_at = ?, due_at = ? WHERE event_id = ?",
            (error, next_attempt_at, next_attempt_at, event_id),
            f"webhook event {event_id}",
        )

    # -- outbox ---------------------------------------------------------------
    def enqueue_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        with self._writing() as conn, _transaction(conn):
            conn.executemany(_INSERT_OUTBOX, [outbox_params(m) for m in messages])

    def pending_outbox(self, topic: str, now: str, limit: int) -> list[OutboxMessage]:
        rows = self._all(_PENDING_OUTBOX, (topic, now, topic, now, limit))
        return [outbox_from_row(row) for row in rows]

    def outbox_delivered(self, message_ids: Sequence[str]) -> None:
        """Forget delivered messages; unknown ids are ignored (at-least-once)."""
        if not message_ids:
            return
        with self._writing() as conn, _transaction(conn):
            conn.executemany(
                "DELETE FROM outbox WHERE message_id = ?", [(mid,) for mid in message_ids]
            )

    def outbox_retry_later(self, message_id: str, error: str, next_attempt_at: str) -> None:
        """Postpone a message (and, by ordering, the ones after it on its key).
        A message already delivered is ignored."""
        with self._writing() as conn, _transaction(conn):
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = ?, due_at = ? WHERE message_id = ?",
                (error, next_attempt_at, next_attempt_at, message_id),
            )

    def outbox_backlog(self) -> dict[str, int]:
        rows = self._all("SELECT topic, COUNT(*) FROM outbox GROUP BY topic", ())
        return {row[0]: row[1] for row in rows}

    # -- plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, lock: threading.Lock, what: str) -> Iterator[None]:
        if not lock.acquire(timeout=lock_timeout_s):
            raise StoreUnavailable(f"ledger {what} busy for more than {lock_timeout_s}s")
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The write connection, exclusively, outside any transaction."""
        with self._locked(self._write_lock, "writer"):
            conn = self._writer
            if conn is None:
                raise StoreUnavailable(f"ledger store {self._path} is closed")
            try:
                yield conn
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"ledger write failed: {exc}") from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection."""
        reader: Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._new_reader()
        with self._locked(reader.lock, "reader"):
            if self._closed:
                raise StoreUnavailable(f"ledger store {self._path} is closed")
            try:
                yield reader.conn
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"ledger read failed: {exc}") from exc

    def _new_reader(self) -> Reader:
        thread = threading.current_thread()
        with self._locked(self._readers_lock, "readers"):
            if self._closed:
                raise StoreUnavailable(f"ledger store {self._path} is closed")
            # Threads come and go (passivated actors): drop the connections of
            # dead ones so open connections stay bounded by live threads.
            dead = [ident for ident, r in self._readers.items() if not r.thread.is_alive()]
            stale = [self._readers.pop(ident) for ident in dead]
            previous = self._readers.pop(threading.get_ident(), None)
            reader = Reader(connect(self._path, writer=False), thread)
            self._readers[threading.get_ident()] = reader
        for old in stale + ([previous] if previous is not None else []):
            old.close()
        self._local.reader = reader
        return reader

    def _one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        # fetchall() so the statement is reset and no read snapshot lingers.
        with self._reading() as conn:
            return conn.execute(sql, params).fetchall()

    def _update_one(self, sql: str, params: tuple[Any, ...], what: str) -> None:
        with self._writing() as conn, _transaction(conn):
            if conn.execute(sql, params).rowcount != 1:
                raise NotFound(f"{what} not found")


class _Rollback(Exception):
    """Abandon the batch transaction; the caller diagnoses why."""


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: several SELECTs see the same commit."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")
