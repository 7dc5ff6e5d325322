"""SQLite connections and the one-process file lock for the SQLite adapter.

One write connection, used only under the adapter's write lock; one read
connection per thread, so reads see the last commit (WAL snapshots) without
waiting behind a commit's fsync.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from pathlib import Path
from typing import Final

import structlog

from ledger._locks import lock_timeout_s
from ledger.errors import StoreLocked, StoreUnavailable

log = structlog.get_logger(__name__)

# How long a statement waits for SQLite's own file lock (only another
# connection of this process can hold it: the OS lock keeps others out).
busy_timeout_s: Final = 5.0
# The writer's page cache. Random receipt ids and idempotency keys dirty about
# one index leaf per receipt; keeping the indexes' hot pages cached avoids
# re-reading them for every batch (measured ~2x receipts/s over the 2 MiB default).
writer_cache_kib_max: Final = 128 * 1024
# Checkpoint every 64 MiB of WAL rather than SQLite's 4 MiB: with ~3-6 MiB of
# WAL per 512-receipt batch the default checkpoints (and fsyncs the main file)
# on almost every commit; a larger WAL lets a hot index page be copied once per
# checkpoint instead of once per batch. Also the bound on the WAL's size.
wal_autocheckpoint_pages_max: Final = 16_384


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


def connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit BEGINs.

    check_same_thread=False: every connection is used under a lock (the write
    lock, or its reader's own lock), and close() runs on another thread.
    """
    try:
        conn = sqlite3.connect(
            path,
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


class Reader:
    """One thread's read connection and the lock that guards it against close()."""

    __slots__ = ("conn", "lock", "thread")

    def __init__(self, conn: sqlite3.Connection, thread: threading.Thread) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.thread = thread

    def close(self) -> None:
        acquired = self.lock.acquire(timeout=lock_timeout_s)
        try:
            self.conn.close()
        except sqlite3.Error as exc:
            log.warning("ledger.sqlite.reader_close_failed", error=str(exc))
        finally:
            if acquired:
                self.lock.release()
