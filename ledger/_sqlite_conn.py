"""SQLite connections and the one-process file lock for the SQLite adapter.

One write connection, used only under the adapter's write lock; a pool of
read connections, so reads see the last commit (WAL snapshots) without
waiting behind a commit's fsync.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import structlog

from ledger.errors import StoreLocked, StoreUnavailable
from ledger.limits import reader_idle_max, wal_autocheckpoint_pages_max, writer_cache_kib_max

log = structlog.get_logger(__name__)

# How long a statement waits for SQLite's own file lock (only another
# connection of this process can hold it: the OS lock keeps others out).
busy_timeout_s: Final = 5.0


def lock_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class FileLock:
    """An exclusive `flock` on a sibling lock file, held until `release()`.

    flock locks belong to the open file description, so the lock also excludes
    a second open of the same store in this process, and the OS drops it when
    the process dies (no stale lock after a crash).
    """

    def __init__(self, store_path: Path) -> None:
        self.path = lock_path_for(store_path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreLocked(
                f"ledger file {store_path} is already open in another process"
                f"{holder} (lock file {self.path}); the SQLite store serves one process "
                "only: stop the other one or point this one at another file"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Who holds it, for the message above; informational only.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def connect(path: Path, *, writer: bool, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit BEGINs.

    check_same_thread=False: the write connection is used under the write
    lock and read connections by one borrower at a time, from any thread.
    `read_only`: opened `mode=ro` (the file must exist; SQLite refuses every
    write), for a reader in another process than the one serving the file.
    """
    target: str | Path = path
    if read_only:
        target = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(
            target,
            uri=read_only,
            timeout=busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open ledger file {path}: {exc}") from exc
    try:
        if writer:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"ledger file {path}: WAL mode refused ({mode})")
            # FULL: the WAL is fsync'd at every commit, so a returned commit
            # survives power loss. Nothing is acknowledged before that.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA cache_size=-{writer_cache_kib_max:d}")
            conn.execute(f"PRAGMA wal_autocheckpoint={wal_autocheckpoint_pages_max:d}")
        else:
            conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA foreign_keys=OFF")
    except BaseException:
        conn.close()
        raise
    return conn


class ReaderPool:
    """Read connections lent per call, not owned per thread.

    A thousand account-actor threads each read a little; a connection per
    thread meant opening one for every actor started and scanning every
    reader for dead threads on each open (15% of the GIL's time under load
    while accounts warmed up). Idle connections are kept for reuse, at most
    `idle_max` of them; a connection is only ever used by one caller at a time.
    """

    def __init__(
        self, path: Path, idle_max: int = reader_idle_max, *, read_only: bool = False
    ) -> None:
        self._path = path
        self._read_only = read_only
        self._idle_max = idle_max
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"ledger store {self._path} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self._path, writer=False, read_only=self._read_only)
        try:
            yield conn
        except BaseException:
            # A failed read may leave a statement or snapshot open: not reused.
            _close_quietly(conn)
            raise
        with self._lock:
            if not self._closed and len(self._idle) < self._idle_max:
                self._idle.append(conn)
                return
        _close_quietly(conn)

    def close(self) -> None:
        """Close the idle connections; ones lent out close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:
        log.warning("ledger.sqlite.reader_close_failed", error=str(exc))
