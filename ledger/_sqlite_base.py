"""Connections, locking and lifecycle shared by the SQLite adapter's parts.

`SqliteBase` owns the one write connection (behind a lock) and a pool of
read connections; the adapter's methods live in subclasses
(`_sqlite_queues.SqliteQueues`, `sqlite.SqliteLedger`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import structlog

from ledger._locks import locked
from ledger._sqlite_conn import FileLock, ReaderPool
from ledger._sqlite_rows import Row
from ledger.errors import NotFound, StoreUnavailable

log = structlog.get_logger("ledger.sqlite")


class SqliteBase:
    """Lifecycle and connection plumbing; no ledger semantics."""

    def __init__(
        self, path: Path, lock: FileLock | None, writer: sqlite3.Connection | None
    ) -> None:
        """Private: use `SqliteLedger.open(path)` (or `open_read_only`: no
        lock, no writer, `mode=ro` readers)."""
        self._path = path
        self._lock = lock
        self._writer: sqlite3.Connection | None = writer
        self._read_only = writer is None
        self._write_lock = threading.Lock()
        self._readers = ReaderPool(path, read_only=self._read_only)
        self._closed = False

    @property
    def path(self) -> Path:
        return self._path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle ---------------------------------------------------------
    def close(self) -> None:
        """Close every connection and release the file lock. Idempotent."""
        with locked(self._write_lock, "ledger writer"):
            if self._closed:
                return
            self._closed = True
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.close()
        self._readers.close()
        if self._lock is not None:
            self._lock.release()
        log.info("ledger.sqlite.closed", path=str(self._path))

    def check_writable(self) -> None:
        with self._writing() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

    # -- plumbing -------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The write connection, exclusively, outside any transaction."""
        with locked(self._write_lock, "ledger writer"):
            conn = self._writer
            if conn is None:
                state = "read-only" if self._read_only and not self._closed else "closed"
                raise StoreUnavailable(f"ledger store {self._path} is {state}")
            try:
                yield conn
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"ledger write failed: {exc}") from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read connection, this caller's alone until the block ends."""
        with self._readers.connection() as conn:
            try:
                yield conn
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"ledger read failed: {exc}") from exc

    def _one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Row]:
        # fetchall() so the statement is reset and no read snapshot lingers.
        with self._reading() as conn:
            return conn.execute(sql, params).fetchall()

    def _update_one(self, sql: str, params: tuple[Any, ...], what: str) -> None:
        with self._writing() as conn, transaction(conn):
            if conn.execute(sql, params).rowcount != 1:
                raise NotFound(f"{what} not found")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception, including a
    failed COMMIT (e.g. an fsync error): never leave the writer mid-transaction,
    and never report success for a commit that did not happen."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: several SELECTs see the same commit."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")
