"""The embedded ledger: one SQLite file, WAL, `synchronous=FULL`, one process.

`SqliteLedger` is both the `LedgerStore` and the `ReceiptReadModel` (the
embedded read model is the ledger itself). Thread-safe: one write connection
behind a lock (the ledger writer commits batches), and one read connection per
calling thread so reads never wait behind a commit's fsync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import structlog

from crypto.receipt import GENESIS_HASH
from ledger import limits
from ledger._refusal_rules import find_answers
from ledger._sqlite_base import snapshot, transaction
from ledger._sqlite_batch import BatchPlan, diagnose, plan_batch
from ledger._sqlite_conn import FileLock, connect
from ledger._sqlite_disputes import SqliteDisputes
from ledger._sqlite_halts import SqliteHalts
from ledger._sqlite_log import SqliteLog, check_stored_log, write_log
from ledger._sqlite_queues import INSERT_OUTBOX, SqliteQueues
from ledger._sqlite_refusals import SqliteRefusals, refused_keys
from ledger._sqlite_rows import (
    API_KEY_COLUMNS,
    CUSTOMER_COLUMNS,
    ENTITLEMENT_COLUMNS,
    RECEIPT_COLUMNS,
    Row,
    api_key_from_row,
    customer_from_row,
    entitlement_from_row,
    entitlement_params,
    execute_values,
    outbox_params,
    placeholders,
    receipt_from_row,
    receipt_params,
    record_params,
)
from ledger._sqlite_schema import MIGRATIONS, migrate
from ledger._sqlite_web import SqliteWeb
from ledger._sqlite_webhooks import INSERT_EVENTS, SqliteWebhooks
from ledger.errors import (
    AlreadyExists,
    ChainConflict,
    InvariantViolation,
    StoreUnavailable,
    check_invariant,
)
from ledger.log_rules import log_indexes_of
from ledger.model import (
    AccountState,
    ApiKey,
    Customer,
    Entitlement,
    LogAppend,
    OutboxMessage,
    RequestRecord,
    StoredAnswer,
    StoredReceipt,
)
from ledger.ports import ReceiptWrite

__all__ = ["SqliteLedger"]

log = structlog.get_logger(__name__)

_INSERT_RECEIPTS: Final = f"INSERT INTO receipts ({RECEIPT_COLUMNS})"  # + VALUES
# Multi-row updates through `UPDATE ... FROM (VALUES ...)`: one statement per
# batch (see execute_values); SQLite names the VALUES columns column1, column2...
_ACCOUNT_CAS: Final = (
    "UPDATE accounts SET seq = v.column1, last_receipt_hash = v.column2, "
    "balance_minor = v.column3 FROM ("
)
_ACCOUNT_CAS_TAIL: Final = (
    ") AS v WHERE accounts.customer_id = v.column4 AND accounts.seq = v.column5 "
    "AND accounts.last_receipt_hash = v.column6 AND accounts.balance_minor = v.column7"
)
_ADD_USAGE: Final = "UPDATE entitlements SET used_minor = used_minor + v.column1 FROM ("
_ADD_USAGE_TAIL: Final = (
    ") AS v WHERE entitlements.customer_id = v.column2 "
    "AND entitlements.entitlement_id = v.column3"
)
_SELECT_RECEIPTS: Final = f"SELECT {RECEIPT_COLUMNS} FROM receipts"
_REQUEST_COLUMNS: Final = "api_key_id, client_address, user_agent, received_at, request_id"
_INSERT_REQUESTS: Final = f"INSERT INTO charge_requests (receipt_id, {_REQUEST_COLUMNS})"


class SqliteLedger(
    SqliteQueues, SqliteLog, SqliteWeb, SqliteHalts, SqliteWebhooks, SqliteDisputes,
    SqliteRefusals,
):
    """LedgerStore + ReceiptReadModel (+ IntegrityHalts, WebAppStore, WebhookStore,
    DisputeSubmissions) on one SQLite file. Build with `open()`."""

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

    @classmethod
    def open_read_only(cls, path: Path) -> SqliteLedger:
        """Read an existing ledger file beside the process that serves it
        (the background audit's own process): no file lock, no writer, every
        connection `mode=ro` (WAL: it reads the last commit). Writes raise
        StoreUnavailable. The schema must be this version's: a reader never
        migrates (the serving process did, when it opened the file)."""
        path = Path(path)
        conn = connect(path, writer=False, read_only=True)
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read ledger file {path}: {exc}") from exc
        finally:
            conn.close()
        if int(version) != len(MIGRATIONS):
            raise StoreUnavailable(
                f"ledger file {path} has schema {version}, this reader {len(MIGRATIONS)}"
            )
        log.info("ledger.sqlite.opened_read_only", path=str(path), schema_version=version)
        return cls(path, None, None)

    # -- the charge path ---------------------------------------------------
    def commit_batch(
        self,
        writes: Sequence[ReceiptWrite],
        outbox: Sequence[OutboxMessage],
        log_append: LogAppend | None = None,
    ) -> None:
        if not writes and not outbox:
            return
        plan = plan_batch(writes)
        outbox_rows = [outbox_params(message) for message in outbox]
        receipts = [write.receipt for write in writes]
        # The append's own shape first: a wrong leaf index must be named as
        # such, not surface as a unique-index failure of the receipts insert.
        log_indexes_of(receipts, log_append)
        with self._writing() as conn:
            if not plan.conflicts:
                try:
                    with transaction(conn):
                        check_stored_log(conn, receipts, log_append)
                        self._apply_batch(conn, plan, outbox_rows)
                        published = write_log(conn, log_append)  # may wait for its signature
                        if published:
                            execute_values(
                                conn, INSERT_OUTBOX, [outbox_params(m) for m in published]
                            )
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
            updated = execute_values(conn, _ACCOUNT_CAS, plan.account_cas, _ACCOUNT_CAS_TAIL)
            if updated != len(plan.account_cas):
                raise _Rollback
        try:
            execute_values(conn, _INSERT_RECEIPTS, plan.receipts)
        except sqlite3.IntegrityError:
            raise _Rollback from None
        if refused_keys(conn, plan.keys):  # a key is a receipt's or a refusal's
            raise _Rollback
        if plan.usage:
            updated = execute_values(conn, _ADD_USAGE, plan.usage, _ADD_USAGE_TAIL)
            if updated != len(plan.usage):
                # A receipt for an entitlement the ledger does not know: the
                # charge itself is valid, so commit it, but say so loudly.
                log.error("ledger.usage_without_entitlement", usage=plan.usage)
        if outbox_rows:
            execute_values(conn, INSERT_OUTBOX, outbox_rows)
        if plan.requests:
            execute_values(conn, _INSERT_REQUESTS, plan.requests)
        if plan.events:
            try:
                execute_values(conn, INSERT_EVENTS, plan.events)
            except sqlite3.IntegrityError:  # fired already: see ReceiptWrite.events
                raise _Rollback from None

    def load_account(self, customer_id: str) -> AccountState | None:
        with self._reading() as conn, snapshot(conn):
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
        return self.find_receipts_by_keys(customer_id, [idempotency_key]).get(idempotency_key)

    def find_receipts_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredReceipt]:
        keys = list(dict.fromkeys(idempotency_keys))
        found: dict[str, StoredReceipt] = {}
        # Chunked: SQLite caps the number of parameters in one statement.
        for start in range(0, len(keys), limits.sqlite_receipt_keys_per_query_max):
            chunk = keys[start : start + limits.sqlite_receipt_keys_per_query_max]
            marks = ",".join("?" * len(chunk))
            rows = self._all(
                f"{_SELECT_RECEIPTS} WHERE customer_id = ? AND idempotency_key IN ({marks})",
                (customer_id, *chunk),
            )
            for row in rows:
                receipt = receipt_from_row(row)
                found[receipt.idempotency_key] = receipt
        return found

    def find_answers_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredAnswer]:
        return find_answers(self, customer_id, idempotency_keys)

    # -- commit feed (CommitFeed): the rowid is the commit order ---------------
    # Receipts are only ever inserted, by one writer, so rowids grow in commit
    # order and a read snapshot holds a prefix of them.
    def receipts_after(self, position: int, limit: int) -> list[tuple[int, StoredReceipt]]:
        rows = self._all(
            f"SELECT rowid, {RECEIPT_COLUMNS} FROM receipts WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (position, limit),
        )
        return [(row[0], receipt_from_row(row[1:])) for row in rows]

    def receipt_id_at(self, position: int) -> str | None:
        row = self._one("SELECT receipt_id FROM receipts WHERE rowid = ?", (position,))
        return None if row is None else str(row[0])

    def feed_backlog(self, position: int) -> tuple[int, str | None]:
        row = self._one(
            "SELECT COUNT(*), (SELECT recorded_at FROM receipts WHERE rowid > ?1 "
            "ORDER BY rowid LIMIT 1) FROM receipts WHERE rowid > ?1",
            (position,),
        )
        return (0, None) if row is None else (int(row[0]), row[1])

    def charge_request(self, receipt_id: str) -> RequestRecord | None:
        row = self._one(
            f"SELECT {_REQUEST_COLUMNS} FROM charge_requests WHERE receipt_id = ?", (receipt_id,)
        )
        return None if row is None else RequestRecord(*row)

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
        with self._writing() as conn, transaction(conn):
            execute_values(
                conn,
                _INSERT_RECEIPTS,
                [receipt_params(receipt) for receipt in receipts],
                "ON CONFLICT DO NOTHING",
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
        with self._writing() as conn, transaction(conn):
            _insert_new(conn, "customers", CUSTOMER_COLUMNS, customer, customer.customer_id)
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
        with self._writing() as conn, transaction(conn):
            _insert_new(conn, "api_keys", API_KEY_COLUMNS, api_key, api_key.key_id)

    def resolve_api_key(self, key_hash: str) -> ApiKey | None:
        row = self._one(f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
        return None if row is None else api_key_from_row(row)

    def revoke_api_key(self, customer_id: str, key_id: str, revoked_at: str) -> None:
        self._update_one(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) "
            "WHERE key_id = ? AND customer_id = ?",
            (revoked_at, key_id, customer_id),
            f"api key {key_id} of customer {customer_id}",
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
        with self._writing() as conn, transaction(conn):
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


class _Rollback(Exception):
    """Abandon the batch transaction; the caller diagnoses why."""


def _insert_new(
    conn: sqlite3.Connection, table: str, columns: str, record: object, key: str
) -> None:
    """Insert `record` (fields in column order) or raise AlreadyExists."""
    try:
        conn.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders(columns)})",
            record_params(record),
        )
    except sqlite3.IntegrityError:
        raise AlreadyExists(f"{table}: {key} exists") from None
