"""Embedded adapter: a file archive.

`FileArchive` stands in for Cloud Storage
(7-year retention): one append-only JSON-lines file per customer, and the
receipt log's signed checkpoints in `log/`.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import operator
import os
import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import structlog

from ledger._locks import locked
from ledger.checkpoint_codec import decode_log_checkpoint, encode_log_checkpoint
from ledger.errors import StoreUnavailable, check_invariant
from ledger.limits import (
    archive_checkpoint_files_remembered_max,
    archive_customers_cached_max,
    archive_files_per_sync_max,
)
from ledger.model import LogCheckpoint, StoredReceipt

__all__ = ["CHECKPOINT_DIR", "FileArchive"]

log = structlog.get_logger(__name__)

# Checkpoints live in a folder: every customer file is a *.jsonl FILE in the
# root, so no customer id can name it.
CHECKPOINT_DIR: Final = "log"
# One checkpoint file per this many tree sizes: the ids remembered for
# idempotency are those of the newest files only, however old the log grows
# (one checkpoint per commit: millions a year).
_TREE_SIZES_PER_FILE: Final = 1 << 16
_CHECKPOINT_FILE_RE: Final = re.compile(r"checkpoints-([0-9]{12})\.jsonl")

_CheckpointKey = tuple[int, bytes]
_T = TypeVar("_T")


class FileArchive:
    """ReceiptArchive as files: `<root>/<customer>.jsonl`, one receipt per line.

    Append-only and fsync'd before `append` returns. Idempotent on receipt_id:
    the ids already in a customer's file are remembered (loaded on first use),
    so delivering the same receipts twice (the outbox is at-least-once) keeps
    one copy. One process per root directory. Those ids are kept for the
    `archive_customers_cached_max` customers archived most recently: kept
    for every customer ever archived, they grew the service by ~0.5 KiB per
    customer touched; a customer dropped has its file read again on its
    next append.
    """

    def __init__(self, root_dir: Path) -> None:
        self._root = Path(root_dir)
        self._lock = threading.Lock()
        # Least recently archived first; a customer's file name and ids together.
        self._known_ids: OrderedDict[str, set[str]] = OrderedDict()
        self._file_names: dict[str, str] = {}
        self._unsynced: set[str] = set()  # customers whose last sync failed
        # Checkpoint file number -> (tree_size, root_hash) in it, newest last.
        self._checkpoint_keys: dict[int, set[_CheckpointKey]] = {}
        self._unsynced_checkpoint_files: set[int] = set()
        self._closed = False

    @property
    def root(self) -> Path:
        return self._root

    def append(self, receipts: Sequence[StoredReceipt]) -> None:
        """Durable on return: every touched file is written, then synced.

        A pass touches one file per customer in it (hundreds under load); an
        fsync per file cost ~0.4 ms each and gave up the GIL hundreds of times
        a second, so where Linux offers syncfs(2) one call syncs a chunk of
        files, at most archive_files_per_sync_max of them open at once."""
        by_customer: dict[str, list[StoredReceipt]] = {}
        for receipt in receipts:
            by_customer.setdefault(receipt.customer_id, []).append(receipt)
        with locked(self._lock, "archive"):
            if self._closed:
                raise StoreUnavailable("archive is closed")
            self._root.mkdir(parents=True, exist_ok=True)
            customers = list(by_customer.items())
            for start in range(0, len(customers), archive_files_per_sync_max):
                self._append_synced(customers[start : start + archive_files_per_sync_max])

    def _append_synced(self, customers: list[tuple[str, list[StoredReceipt]]]) -> None:
        # Plain file descriptors and cached names: a pass opens hundreds of
        # files, and pathlib plus a buffered file object per open were over
        # a third of this thread's time under load (py-spy).
        touched: list[str] = []
        fds: list[int] = []
        try:
            try:
                for customer_id, batch in customers:
                    touched.append(customer_id)
                    data = self._new_lines(customer_id, batch)
                    # A file written by a pass whose sync failed is synced
                    # again even with nothing new: its lines may be in memory
                    # only, and re-reading them says nothing of the disk.
                    if data or customer_id in self._unsynced:
                        fds.append(os.open(self._file_name(customer_id), _APPEND_FLAGS, 0o644))
                        _write_all(fds[-1], data)
                if fds:
                    _sync(self._root, fds)
            finally:
                for fd in fds:
                    os.close(fd)
        except OSError as exc:
            # Forget what we think is there: the next append re-reads the files.
            for customer_id in touched:
                self._known_ids.pop(customer_id, None)
            self._unsynced.update(touched)
            raise StoreUnavailable(f"archive write failed: {exc}") from exc
        self._unsynced.difference_update(touched)

    def _new_lines(self, customer_id: str, batch: list[StoredReceipt]) -> bytes:
        """The lines of the receipts not yet in the customer's file (noted as
        written: a failed write forgets them, see _append_synced)."""
        known = self._known_ids.get(customer_id)
        if known is None:
            path = self._file(customer_id)
            known = {receipt.receipt_id for receipt in _read_file(path, repair=True)}
            self._known_ids[customer_id] = known
            while len(self._known_ids) > archive_customers_cached_max:
                dropped, _ = self._known_ids.popitem(last=False)
                self._file_names.pop(dropped, None)
        else:
            self._known_ids.move_to_end(customer_id)
        lines: list[bytes] = []
        for receipt in batch:
            if receipt.receipt_id not in known:
                known.add(receipt.receipt_id)
                lines.append(_encode(receipt))
        return b"".join(lines)

    def read_customer(
        self, customer_id: str, known: Sequence[StoredReceipt] = ()
    ) -> list[StoredReceipt]:
        """The customer's archived receipts in seq order, one per receipt_id.
        A line equal to one of the `known` receipts (the ledger's, for the
        audit) is answered with it, not decoded: the audit reads every
        archived receipt every pass, and a decode was ~6 us of CPU each."""
        by_id = {receipt.receipt_id: receipt for receipt in known}
        with locked(self._lock, "archive"):
            lines = _lines(self._file(customer_id), repair=False)
        receipts = [_decode(line, by_id) for line in lines]
        unique = {receipt.receipt_id: receipt for receipt in receipts}
        return sorted(unique.values(), key=lambda receipt: receipt.seq)

    def customer_ids(self) -> list[str]:
        try:
            names = os.listdir(self._root)
        except FileNotFoundError:
            return []
        suffix = ".jsonl"
        return sorted(
            urllib.parse.unquote(name[: -len(suffix)])
            for name in names
            if name.endswith(suffix) and os.path.isfile(os.path.join(self._root, name))
        )

    def iter_customer(self, customer_id: str) -> Iterator[StoredReceipt]:
        """Complete lines in file order, read a chunk at a time with no file
        held open between chunks: a restore streams every customer at once."""
        path = self._file_name(customer_id)
        offset = 0
        while True:
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(_STREAM_CHUNK_BYTES)
            except FileNotFoundError:
                return
            complete, newline, _ = chunk.rpartition(b"\n")
            if not newline:
                # No whole line in the chunk: the end (a torn last line is
                # dropped, as _decoded does), or a line longer than a chunk.
                if len(chunk) < _STREAM_CHUNK_BYTES:
                    return
                raise StoreUnavailable(f"archive line in {path} longer than a read chunk")
            offset += len(complete) + 1
            for line in complete.split(b"\n"):
                if line:
                    yield _decode(line)

    def close(self) -> None:
        with locked(self._lock, "archive"):
            self._closed = True
            self._known_ids.clear()
            self._file_names.clear()
            self._checkpoint_keys.clear()

    # -- the receipt log's checkpoints ------------------------------------------
    def append_checkpoints(self, checkpoints: Sequence[LogCheckpoint]) -> None:
        """Durable on return, one line per (tree_size, root_hash)."""
        by_file: dict[int, list[LogCheckpoint]] = {}
        for checkpoint in checkpoints:
            by_file.setdefault(checkpoint.tree_size // _TREE_SIZES_PER_FILE, []).append(checkpoint)
        with locked(self._lock, "archive"):
            if self._closed:
                raise StoreUnavailable("archive is closed")
            for number, batch in sorted(by_file.items()):
                self._append_checkpoint_file(number, batch)

    def _append_checkpoint_file(self, number: int, batch: list[LogCheckpoint]) -> None:
        path = self._checkpoint_file(number)
        known = self._checkpoint_keys.pop(number, None)
        if known is None:
            known = {_key(c) for c in _decoded(path, decode_log_checkpoint, repair=True)}
        self._checkpoint_keys[number] = known  # newest last
        while len(self._checkpoint_keys) > archive_checkpoint_files_remembered_max:
            del self._checkpoint_keys[next(iter(self._checkpoint_keys))]
        lines: list[bytes] = []
        for checkpoint in batch:
            if _key(checkpoint) not in known:
                known.add(_key(checkpoint))
                lines.append(encode_log_checkpoint(checkpoint) + b"\n")
        if not lines and number not in self._unsynced_checkpoint_files:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, _APPEND_FLAGS, 0o644)
            try:
                _write_all(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(path.parent)
        except OSError as exc:
            # As for receipts: re-read the file next time, and sync it again.
            self._checkpoint_keys.pop(number, None)
            self._unsynced_checkpoint_files.add(number)
            raise StoreUnavailable(f"archive write failed: {exc}") from exc
        self._unsynced_checkpoint_files.discard(number)

    def read_checkpoints(self, after_size: int, limit: int) -> list[LogCheckpoint]:
        first_number = (after_size + 1) // _TREE_SIZES_PER_FILE
        found: list[LogCheckpoint] = []
        with locked(self._lock, "archive"):
            for number in self._checkpoint_file_numbers():
                if number < first_number:
                    continue
                in_file = _decoded(self._checkpoint_file(number), decode_log_checkpoint)
                unique = {_key(c): c for c in in_file if c.tree_size > after_size}
                found.extend(unique[key] for key in sorted(unique))
                if len(found) >= limit:
                    break
        return found[:limit]

    def _checkpoint_file(self, number: int) -> Path:
        return self._root / CHECKPOINT_DIR / f"checkpoints-{number:012d}.jsonl"

    def _checkpoint_file_numbers(self) -> list[int]:
        try:
            names = os.listdir(self._root / CHECKPOINT_DIR)
        except FileNotFoundError:
            return []
        matches = (_CHECKPOINT_FILE_RE.fullmatch(name) for name in names)
        return sorted(int(match.group(1)) for match in matches if match)

    def _file(self, customer_id: str) -> Path:
        return Path(self._file_name(customer_id))

    def _file_name(self, customer_id: str) -> str:
        name = self._file_names.get(customer_id)
        if name is None:
            # Percent-encoding keeps any customer id a single, reversible file name.
            quoted = urllib.parse.quote(customer_id, safe="") + ".jsonl"
            name = self._file_names[customer_id] = os.path.join(self._root, quoted)
        return name


# A restore streams every customer at once: 1,000 customers hold 64 MB.
_STREAM_CHUNK_BYTES: Final = 64 * 1024

_APPEND_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _encode(receipt: StoredReceipt) -> bytes:
    record: dict[str, Any] = {
        field: getattr(receipt, field) for field in StoredReceipt.__slots__
    }
    # Base64 keeps the signed receipt byte-exact, whatever it contains.
    record["receipt_json"] = _base64(receipt.receipt_json)
    # orjson: the same compact, key-sorted line as json.dumps for ASCII, 3.5x
    # faster (non-ASCII is written as UTF-8 instead of \u escapes: same JSON).
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


def _base64(data: bytes) -> str:
    """How a line holds the signed receipt (= base64.b64encode): one function
    for _encode and _known, so that a line matches only what _encode writes."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _decode(line: bytes, known: Mapping[str, StoredReceipt] | None = None) -> StoredReceipt:
    # orjson: the background audit reads every archived receipt once a pass;
    # json.loads was a third of that comparison's CPU (written by orjson: UTF-8).
    record = orjson.loads(line)
    check_invariant(isinstance(record, dict), "archive line is not a JSON object")
    if known:
        same = _known(record, known)
        if same is not None:
            return same
    record["receipt_json"] = base64.b64decode(record["receipt_json"])
    for field in _INT_FIELDS:
        check_invariant(type(record[field]) is int, f"archive: {field} is not an integer")
    return StoredReceipt(**record)


# A line's keys in the order _encode writes them, and where its values are.
_FIELDS: Final = tuple(sorted(StoredReceipt.__slots__))
_INT_FIELDS: Final = ("seq", "amount_minor", "balance_after_minor")
_SEQ_AT, _AMOUNT_AT, _BALANCE_AT = (_FIELDS.index(field) for field in _INT_FIELDS)
_ID_AT: Final = _FIELDS.index("receipt_id")
_JSON_AT: Final = _FIELDS.index("receipt_json")
_values_of: Final = operator.attrgetter(*_FIELDS)


def _known(record: dict[str, Any], known: Mapping[str, StoredReceipt]) -> StoredReceipt | None:
    """The known receipt equal to what `_decode` builds of `record`, or None
    whenever in doubt (keys in another order, an int of another type, base64
    written otherwise than by _encode): the full decode then decides.
    Building a StoredReceipt was most of a decode's CPU."""
    if tuple(record) != _FIELDS:
        return None
    values = tuple(record.values())
    receipt_id = values[_ID_AT]
    receipt = known.get(receipt_id) if type(receipt_id) is str else None
    if (
        receipt is None
        or type(values[_SEQ_AT]) is not int
        or type(values[_AMOUNT_AT]) is not int
        or type(values[_BALANCE_AT]) is not int
    ):
        return None
    expected, after = _values_of(receipt), _JSON_AT + 1
    if values[:_JSON_AT] != expected[:_JSON_AT] or values[after:] != expected[after:]:
        return None
    return receipt if values[_JSON_AT] == _base64(receipt.receipt_json) else None


def _key(checkpoint: LogCheckpoint) -> _CheckpointKey:
    return (checkpoint.tree_size, checkpoint.root_hash)


def _read_file(path: Path, *, repair: bool) -> list[StoredReceipt]:
    return _decoded(path, _decode, repair=repair)


def _decoded(path: Path, decode: Callable[[bytes], _T], *, repair: bool = False) -> list[_T]:
    return [decode(line) for line in _lines(path, repair=repair)]


def _lines(path: Path, *, repair: bool) -> list[bytes]:
    """The file's complete lines (none if there is no file)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    complete, _, torn = data.rpartition(b"\n")
    if torn:
        # A crash mid-append leaves a partial last line: it was never
        # acknowledged, so drop it (and cut it off before appending again).
        log.warning("ledger.archive.torn_line", path=str(path), bytes=len(torn))
        if repair:
            with path.open("r+b") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
                os.fsync(handle.fileno())
    return [line for line in complete.split(b"\n") if line]




def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):  # not Linux, or a libc without syncfs
        return None
    return syncfs


_syncfs = _load_syncfs()


def _sync(root: Path, fds: list[int]) -> None:
    """Make the written files, and the directory entries of new ones, durable."""
    if _syncfs is not None:
        if _syncfs(fds[0]) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"syncfs: {os.strerror(error)}")
        return
    for fd in fds:
        os.fsync(fd)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
