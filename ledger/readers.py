"""Open the ledger of record read-only from its store URL, in a process
beside the one that serves it (the background audit's own process), and
the receipt copies (archive, read model) from theirs.

SQLite: `mode=ro` connections without the serving process's file lock;
Spanner: the URL is enough (any number of processes share a database).
An archive directory is only read by a second process (`FileArchive`
appends from one); Cloud Storage and Firestore are shared by design.
"""

from __future__ import annotations

from pathlib import Path

from ledger.errors import StoreUnavailable
from ledger.ports import LedgerStore, ReceiptArchive, ReceiptReadModel

__all__ = ["open_archive", "open_read_model", "open_read_only", "sqlite_path_of"]


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


def open_archive(location: str) -> ReceiptArchive:
    """The receipt archive at `location`: gs://BUCKET[/PREFIX] (Cloud
    Storage) or a directory of archive files."""
    if location.startswith("gs://"):
        from ledger.gcs import GcsArchive

        archive: ReceiptArchive = GcsArchive.open(location)
        return archive
    if "://" in location:
        raise ValueError(f"unknown archive URL {location!r} (gs://BUCKET or a directory)")
    from ledger.local import FileArchive

    return FileArchive(Path(location))


def open_read_model(url: str) -> ReceiptReadModel:
    """The receipt read model a URL names: firestore://projects/P."""
    if url.startswith("firestore://"):
        from ledger.firestore import FirestoreReadModel

        read_model: ReceiptReadModel = FirestoreReadModel.open(url)
        return read_model
    raise ValueError(f"unknown read model URL {url!r} (firestore://projects/P)")
