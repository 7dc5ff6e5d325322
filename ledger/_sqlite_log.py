"""The receipt log on SQLite: tiles, checkpoints, and leaves in log order.

Written only inside `SqliteLedger.commit_batch` (with the receipts of the
same batch, in one transaction); read by proofs, audits and the log routes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Final

from ledger._sqlite_base import SqliteBase
from ledger._sqlite_rows import RECEIPT_COLUMNS, Row, execute_values, receipt_from_row
from ledger.limits import sqlite_tile_keys_per_query_max
from ledger.log_rules import check_log_append, merged_tiles, signed_checkpoints, tile_keys
from ledger.model import LogAppend, LogCheckpoint, OutboxMessage, StoredReceipt

_CHECKPOINT_COLUMNS: Final = "tree_size, root_hash, timestamp, jws"


def _checkpoint(row: Row) -> LogCheckpoint:
    return LogCheckpoint(int(row[0]), bytes(row[1]), str(row[2]), str(row[3]))


def stored_log_size(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(tree_size) FROM log_checkpoints").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


TileKey = tuple[int, int]


def _tiles(conn: sqlite3.Connection, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
    found: dict[tuple[int, int], bytes] = {}
    for start in range(0, len(keys), sqlite_tile_keys_per_query_max):
        chunk = keys[start : start + sqlite_tile_keys_per_query_max]
        where = " OR ".join(["(level = ? AND tile_index = ?)"] * len(chunk))
        params = [value for key in chunk for value in key]
        for level, index, hashes in conn.execute(
            f"SELECT level, tile_index, hashes FROM log_tiles WHERE {where}", params
        ):
            found[(int(level), int(index))] = bytes(hashes)
    return found


def check_stored_log(
    conn: sqlite3.Connection, receipts: Sequence[StoredReceipt], log: LogAppend | None
) -> None:
    """Check the append rules against what is stored, inside the caller's
    transaction and BEFORE the receipts are inserted: a stale size would
    otherwise surface as a clash on the unique leaf index, not a LogConflict."""
    stored_tiles = _tiles(conn, tile_keys(log)) if log is not None else {}
    check_log_append(
        stored_log_size(conn) if log is not None else 0, stored_tiles, receipts, log
    )


def write_log(conn: sqlite3.Connection, log: LogAppend | None) -> Sequence[OutboxMessage]:
    """Write the checked append's tiles, then its checkpoints (every merged
    append's, the last the new head), waiting for late signatures in
    between; returns the messages that publish them, for the caller's
    transaction."""
    if log is None:
        return ()
    execute_values(
        conn,
        "INSERT OR REPLACE INTO log_tiles (level, tile_index, hashes)",
        [(level, index, contents) for (level, index), contents in merged_tiles(log).items()],
    )
    checkpoints, outbox = signed_checkpoints(log)
    execute_values(
        conn,
        f"INSERT INTO log_checkpoints ({_CHECKPOINT_COLUMNS})",
        [(c.tree_size, c.root_hash, c.timestamp, c.jws) for c in checkpoints],
    )
    return outbox


class SqliteLog(SqliteBase):
    """Read side of the receipt log (the LogReader port)."""

    def log_head(self) -> LogCheckpoint | None:
        row = self._one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1",
            (),
        )
        return None if row is None else _checkpoint(row)

    def log_checkpoint(self, tree_size: int) -> LogCheckpoint | None:
        row = self._one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM log_checkpoints WHERE tree_size = ?",
            (tree_size,),
        )
        return None if row is None else _checkpoint(row)

    def log_checkpoints(self, after_size: int, limit: int) -> list[LogCheckpoint]:
        rows = self._all(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM log_checkpoints WHERE tree_size > ? "
            "ORDER BY tree_size LIMIT ?",
            (after_size, limit),
        )
        return [_checkpoint(row) for row in rows]

    def read_tiles(self, keys: Sequence[tuple[int, int]]) -> Mapping[tuple[int, int], bytes]:
        with self._reading() as conn:
            return _tiles(conn, list(dict.fromkeys(keys)))

    def receipts_by_log_index(self, start: int, limit: int) -> list[StoredReceipt]:
        """Receipts with log_index >= start in log order, at most `limit`."""
        rows = self._all(
            f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE log_index >= ? "
            "ORDER BY log_index LIMIT ?",
            (start, limit),
        )
        return [receipt_from_row(row) for row in rows]
