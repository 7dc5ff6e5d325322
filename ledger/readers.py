"""Open the ledger of record read-only from its store URL, in a process
beside the one that serves it (the background audit's own process).

SQLite: `mode=ro` connections without the serving process's file lock;
Spanner: the URL is enough (any number of processes share a database).
"""

from __future__ import annotations

from pathlib import Path

from ledger.errors import StoreUnavailable
from ledger.ports import LedgerStore

__all__ = ["open_read_only", "sqlite_path_of"]


def sqlite_path_of(url: str) -> Path:
    """The file a `sqlite:PATH` URL names (ValueError without a path)."""
    path = url.removeprefix("sqlite:").removeprefix("//")
    if not path:
        raise ValueError("sqlite store URL needs a path: sqlite:PATH")
    return Path(path)


def open_read_only(url: str) -> LedgerStore:
    """A reader of the ledger at `url` that never writes and takes no lock
    the serving process needs. Raises StoreUnavailable if it cannot."""
    if url.startswith("sqlite:"):
        from ledger.sqlite import SqliteLedger

        return SqliteLedger.open_read_only(sqlite_path_of(url))
    if url.startswith("spanner://"):
        from ledger.spanner import SpannerLedger

        return SpannerLedger.open(url)
    raise StoreUnavailable(f"no read-only reader for store URL {url!r}")
