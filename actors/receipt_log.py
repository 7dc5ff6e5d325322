"""The ledger writer's side of the receipt log: one signed checkpoint per commit.

The writer is the log's only appender in this process. It keeps the log's
right edge in memory (O(log n) hashes plus the partial tiles), so appending a
batch costs O(batch + log n) hashes and no reads, and every inclusion proof
of the batch comes out of the same computation. The new edge is adopted only
after the store committed the batch. When a commit fails, or another writer
on the same store appended first (LogConflict), the edge is reloaded from
the stored tiles and the batch re-signed.

Pipelined: a checkpoint signs only (origin, tree_size, root_hash,
timestamp), and the root is known once the batch's leaves are on the edge,
before any I/O. So the writer begins a batch (root computed, signature
started) on top of batches still signing or committing, and the store waits
for the signature only after writing the batch's rows (`LogAppend.signed`).
A signature of a batch that did not commit is dropped, never stored or
published: it states a root no stored tree has, so a checkpoint served from
it would be a fork every auditor and witness must report (two checkpoints
of one size with different roots), and a receipt proved against it would
vanish from the log.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
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
from ledger import (
    LogAppend,
    LogCheckpoint,
    LogReader,
    OutboxMessage,
    SignedCheckpoint,
    StoredReceipt,
    StoreUnavailable,
    limits,
)

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
    what the store writes, the inclusion paths against the new checkpoint,
    the edge it makes and the edge it extends, and its checkpoint's
    signature (under way when `log_append.signed` is set)."""

    receipts: list[StoredReceipt]
    log_append: LogAppend
    paths: list[list[bytes]]
    edge: RightEdge
    base: RightEdge
    signature: Future[str]
    parts: tuple[PreparedAppend, ...] = ()  # merged ones (`merged`), in order

    def proofs(self) -> list[LogProof]:
        """Each receipt's proof; only once the batch committed (its
        checkpoint was signed by then: the store waited for it). A merged
        receipt is proved against its own part's checkpoint."""
        if self.parts:
            return [proof for part in self.parts for proof in part.proofs()]
        jws = self.signature.result(timeout=0)
        start = self.log_append.old_size
        size = self.log_append.checkpoint.tree_size
        return [
            LogProof(start + offset, size, tuple(path), jws)
            for offset, path in enumerate(self.paths)
        ]


def merged(parts: Sequence[PreparedAppend]) -> PreparedAppend:
    """Consecutive appends (each begun on the edge the one before made) as
    one commit: every part's checkpoint is stored (`LogAppend.earlier`), each
    receipt keeps its proof against its own part's checkpoint, and the last
    part's edge and checkpoint are the log's after it."""
    if len(parts) == 1:
        return parts[0]
    for before, after in itertools.pairwise(parts):
        if after.base is not before.edge or before.parts or after.parts:
            raise ValueError("merged appends must be consecutive, each begun on the one before")
    last = parts[-1]
    return PreparedAppend(
        receipts=[receipt for part in parts for receipt in part.receipts],
        log_append=dataclasses.replace(
            last.log_append, earlier=tuple(part.log_append for part in parts[:-1])
        ),
        paths=[path for part in parts for path in part.paths],
        edge=last.edge,
        base=parts[0].base,
        signature=last.signature,
        parts=tuple(parts),
    )


CheckpointOutbox = Callable[[LogCheckpoint], Sequence[OutboxMessage]]


class LogAppender:
    """Thread-safe: one thread begins batches while another commits them.

    State: the committed edge (`None`: reload from the store) and the tip,
    the edge of the last batch begun and not known to be lost (`None`: the
    committed edge). A batch is begun on the tip, so several can be signing
    at once; it can commit only while the edge it extends is the committed
    one (`is_current`): after a lost commit, batches begun on it are rebuilt.
    """

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
        self._lock = threading.Lock()
        self._edge: RightEdge | None = None
        self._tip: RightEdge | None = None

    @property
    def size(self) -> int:
        edge = self._edge
        return 0 if edge is None else edge.size

    def load(self) -> None:
        """Read the log head and rebuild the right edge from the stored tiles
        (LogDamaged if they disagree)."""
        with self._lock:
            self._load()

    def _load(self) -> RightEdge:
        edge = self._edge = rebuild_edge(self._store)
        self._tip = None
        log.info("receipt_log.loaded", tree_size=edge.size)
        return edge

    def prepare(self, receipts: Sequence[StoredReceipt]) -> PreparedAppend:
        """Leaves, tiles, signed checkpoint and proofs for `receipts` on the
        committed edge, signed here, without changing the edge (see `adopt`)."""
        with self._lock:
            base = self._edge if self._edge is not None else self._load()
        prepared, checkpoint = self._append(base, receipts)
        signature: Future[str] = Future()
        signature.set_result(sign_checkpoint(checkpoint, self._key()))
        cp = prepared.log_append.checkpoint
        signed = LogAppend(
            prepared.log_append.old_size,
            prepared.log_append.tiles,
            LogCheckpoint(cp.tree_size, cp.root_hash, cp.timestamp, signature.result()),
        )
        return prepared._replace(log_append=signed, signature=signature)

    def begin(
        self,
        receipts: Sequence[StoredReceipt],
        signing: Executor,
        outbox_for: CheckpointOutbox,
    ) -> PreparedAppend:
        """`receipts` appended on top of the last batch begun, their
        checkpoint's signature started on `signing`; the store waits for it
        (`LogAppend.signed`) after writing the rest of the batch."""
        with self._lock:
            base = self._tip if self._tip is not None else self._edge
            if base is None:
                base = self._load()
            prepared, checkpoint = self._append(base, receipts)
            self._tip = prepared.edge
        signature = signing.submit(sign_checkpoint, checkpoint, self._key())
        unsigned = prepared.log_append

        def signed() -> SignedCheckpoint:
            try:
                jws = signature.result(timeout=limits.checkpoint_sign_timeout_ms / 1000)
            except TimeoutError:
                raise StoreUnavailable("the checkpoint's signature took too long") from None
            cp = unsigned.checkpoint
            stored = LogCheckpoint(cp.tree_size, cp.root_hash, cp.timestamp, jws)
            return SignedCheckpoint(stored, outbox_for(stored))

        late = LogAppend(unsigned.old_size, unsigned.tiles, unsigned.checkpoint, signed)
        return prepared._replace(log_append=late, signature=signature)

    def _append(
        self, base: RightEdge, receipts: Sequence[StoredReceipt]
    ) -> tuple[PreparedAppend, Checkpoint]:
        """The append on `base`, its checkpoint not yet signed."""
        appended = base.appended([receipt_leaf(r.receipt_hash) for r in receipts])
        checkpoint = Checkpoint(
            origin=self._origin,
            tree_size=appended.size,
            root_hash=appended.root,
            timestamp=self._now(),
        )
        indexed = [
            dataclasses.replace(receipt, log_index=appended.start + offset)
            for offset, receipt in enumerate(receipts)
        ]
        log_append = LogAppend(
            old_size=base.size,
            tiles=appended.tiles,
            checkpoint=LogCheckpoint(appended.size, appended.root, checkpoint.timestamp, ""),
        )
        unsigned: Future[str] = Future()
        return PreparedAppend(
            indexed, log_append, appended.proofs, appended.edge, base, unsigned
        ), checkpoint

    def is_current(self, prepared: PreparedAppend) -> bool:
        """Does `prepared` extend exactly the committed log (may it commit)?"""
        with self._lock:
            return self._edge is not None and prepared.base is self._edge

    def adopt(self, prepared: PreparedAppend) -> None:
        """The batch is durable: its edge is the log's edge now."""
        with self._lock:
            self._edge = prepared.edge

    def restart(self) -> None:
        """Batches begun so far are lost: begin the next on the committed edge."""
        with self._lock:
            self._tip = None

    def forget(self) -> None:
        """A commit failed or another writer appended: reload the edge
        before the next batch; every batch begun so far is lost."""
        with self._lock:
            self._edge = None
            self._tip = None
