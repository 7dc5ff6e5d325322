"""The ledger writer's side of the receipt log: one signed checkpoint per commit.

The writer is the log's only appender in this process. It keeps the log's
right edge in memory (O(log n) hashes plus the partial tiles), so appending a
batch costs O(batch + log n) hashes and no reads, and every inclusion proof
of the batch comes out of the same computation. The new edge is adopted only
after the store committed the batch: a failed commit leaves the edge as it
was. When another writer on the same store appended first (LogConflict),
the edge is reloaded from the stored tiles and the batch re-signed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import structlog

from crypto import (
    Checkpoint,
    LogError,
    LogProof,
    RightEdge,
    Signer,
    TileHashReader,
    receipt_leaf,
    sign_checkpoint,
)
from ledger import LogAppend, LogCheckpoint, LogReader, StoredReceipt

log = structlog.get_logger(__name__)


class LogDamaged(Exception):
    """The stored tiles do not give the root the head checkpoint states (or
    are missing): no receipt can be appended to this log. An integrity halt,
    not a crash: restarting the writer would find the same damage."""


def rebuild_edge(store: LogReader) -> RightEdge:
    """The log's right edge from the stored tiles, checked against the head
    checkpoint; raises LogDamaged when they disagree."""
    head = store.log_head()
    if head is None or head.tree_size == 0:
        return RightEdge.empty()
    size = head.tree_size
    try:
        edge = RightEdge(size, TileHashReader(size, store.read_tiles))
    except LogError as error:
        raise LogDamaged(
            f"the stored tiles cannot rebuild the log of {size} leaves: {error}"
        ) from None
    if edge.root != head.root_hash:
        raise LogDamaged(
            f"the stored tiles give a root for {size} leaves that the head checkpoint "
            "does not state: the log is damaged"
        )
    return edge


class PreparedAppend(NamedTuple):
    """A batch made ready for its commit: receipts with their leaf indexes,
    what the store writes, and each receipt's proof against the new checkpoint."""

    receipts: list[StoredReceipt]
    log_append: LogAppend
    proofs: list[LogProof]
    edge: RightEdge


class LogAppender:
    def __init__(
        self,
        store: LogReader,
        key: Callable[[], Signer],
        origin: str,
        now_rfc3339: Callable[[], str],
    ) -> None:
        self._store = store
        self._key = key  # the active key at signing time (rotation)
        self._origin = origin
        self._now = now_rfc3339
        self._edge: RightEdge | None = None

    @property
    def size(self) -> int:
        return 0 if self._edge is None else self._edge.size

    def load(self) -> None:
        """Read the log head and rebuild the right edge from the stored tiles
        (LogDamaged if they disagree)."""
        self._edge = rebuild_edge(self._store)
        log.info("receipt_log.loaded", tree_size=self._edge.size)

    def prepare(self, receipts: Sequence[StoredReceipt]) -> PreparedAppend:
        """Leaves, tiles, checkpoint and proofs for `receipts`, without
        changing the edge (see `adopt`)."""
        if self._edge is None:
            self.load()
        edge = self._edge
        assert edge is not None  # loaded just above
        appended = edge.appended([receipt_leaf(r.receipt_hash) for r in receipts])
        key = self._key()
        checkpoint = Checkpoint(
            origin=self._origin,
            tree_size=appended.size,
            root_hash=appended.root,
            timestamp=self._now(),
        )
        jws = sign_checkpoint(checkpoint, key)
        indexed = [
            receipt.at_log_index(appended.start + offset) for offset, receipt in enumerate(receipts)
        ]
        proofs = [
            LogProof(appended.start + offset, appended.size, tuple(path), jws)
            for offset, path in enumerate(appended.proofs)
        ]
        log_append = LogAppend(
            old_size=edge.size,
            tiles=appended.tiles,
            checkpoint=LogCheckpoint(
                tree_size=appended.size,
                root_hash=appended.root,
                timestamp=checkpoint.timestamp,
                jws=jws,
            ),
        )
        return PreparedAppend(indexed, log_append, proofs, appended.edge)

    def adopt(self, prepared: PreparedAppend) -> None:
        """The batch is durable: its edge is the log's edge now."""
        self._edge = prepared.edge

    def forget(self) -> None:
        """Another writer appended: reload the edge before the next batch."""
        self._edge = None
