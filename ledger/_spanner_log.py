"""The receipt log on Cloud Spanner: tiles, checkpoints and the log head row.

Written only inside `SpannerLedger.commit_batch`, in the read-write
transaction that writes the batch's receipts: the transaction reads the head
row and the stored tiles it is about to replace (under its locks, so a second
gateway appending at the same time aborts one of the two), lets
`ledger.log_rules` decide, then writes tiles, checkpoint and head together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ledger._spanner_codec import KeySet, decode_bytes, encode_bytes, read_key, request_timeout_s
from ledger.errors import check_invariant
from ledger.log_rules import check_log_append, merged_tiles, signed_checkpoints, tile_keys
from ledger.model import LogAppend, LogCheckpoint, OutboxMessage, StoredReceipt

__all__ = [
    "CHECKPOINT_SELECT",
    "HEAD_SELECT",
    "TileKey",
    "check_log",
    "checkpoint_from_row",
    "read_tiles",
    "write_log",
]

TileKey = tuple[int, int]

# The log head is one row: every appending writer reads and rewrites it.
_HEAD_ID: Final = 0
_HEAD_COLS: Final = ("head_id", "tree_size")
_TILE_COLS: Final = ("level", "tile_index", "hashes")
_CHECKPOINT_COLS: Final = ("tree_size", "root_hash", "timestamp", "jws")
CHECKPOINT_SELECT: Final = f"SELECT {', '.join(_CHECKPOINT_COLS)} FROM LogCheckpoints"
# The head row with its checkpoint; a head without one is a broken invariant.
HEAD_SELECT: Final = (
    "SELECT h.tree_size, c.root_hash, c.timestamp, c.jws FROM LogHead h "
    f"LEFT JOIN LogCheckpoints c ON c.tree_size = h.tree_size WHERE h.head_id = {_HEAD_ID}"
)


def checkpoint_from_row(row: Sequence[Any]) -> LogCheckpoint:
    tree_size, root_hash, timestamp, jws = decode_bytes(row)
    check_invariant(root_hash is not None, f"the log head {tree_size} has no checkpoint")
    return LogCheckpoint(int(tree_size), bytes(root_hash), str(timestamp), str(jws))


def read_tiles(reader: Any, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
    """Stored tiles at `keys` in one read (a transaction or a snapshot)."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    found: dict[TileKey, bytes] = {}
    for level, index, hashes in reader.read(
        "LogTiles",
        _TILE_COLS,
        KeySet(keys=[[level, index] for level, index in unique]),
        timeout=request_timeout_s,
    ):
        found[(int(level), int(index))] = decode_bytes([hashes])[0]
    return found


def check_log(txn: Any, receipts: Sequence[StoredReceipt], log: LogAppend | None) -> None:
    """Read the head and the tiles the append replaces under `txn`'s locks,
    then apply the shared append rules (LogConflict, InvariantViolation)."""
    if log is None:
        check_log_append(0, {}, receipts, None)
        return
    head = read_key(txn, "LogHead", ("tree_size",), _HEAD_ID)
    stored_size = int(head[0][0]) if head else 0
    check_log_append(stored_size, read_tiles(txn, tile_keys(log)), receipts, log)


def write_log(txn: Any, log: LogAppend) -> Sequence[OutboxMessage]:
    """Buffer the tiles, every merged append's checkpoint and the new head
    (the last) in `txn`, waiting for late signatures; returns the messages
    that publish the checkpoints."""
    tiles = merged_tiles(log)
    if tiles:
        txn.insert_or_update(
            "LogTiles",
            _TILE_COLS,
            [encode_bytes((level, index, hashes)) for (level, index), hashes in tiles.items()],
        )
    checkpoints, outbox = signed_checkpoints(log)
    txn.insert(
        "LogCheckpoints",
        _CHECKPOINT_COLS,
        [encode_bytes((c.tree_size, c.root_hash, c.timestamp, c.jws)) for c in checkpoints],
    )
    txn.insert_or_update("LogHead", _HEAD_COLS, [(_HEAD_ID, checkpoints[-1].tree_size)])
    return outbox
