"""A small RFC 9162 log for the store contract tests: real leaf hashes, real
C2SP tile contents and a real root, computed the slow, obvious way from the
full list of leaves (the service's incremental Merkle code lives in crypto/;
the store only checks the append rules, it never recomputes hashes).

`race_appends` is the two-gateway race, shared by the contract suite (two
threads on one adapter) and the Spanner suite (two adapters, one database).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ledger.errors import LogConflict
from ledger.model import LogAppend, LogCheckpoint, StoredReceipt
from ledger.ports import LedgerStore, LogReader, ReceiptWrite
from tests.contract._chain import Chain, ts

TILE_WIDTH = 256
TileKey = tuple[int, int]


class LogStore(LedgerStore, LogReader, Protocol):
    """A ledger store with its receipt log's read side (every adapter)."""


def leaf_hash(receipt: StoredReceipt) -> bytes:
    digest = bytes.fromhex(receipt.receipt_hash.removeprefix("sha256:"))
    return hashlib.sha256(b"\x00" + digest).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 MTH over already-hashed nodes (leaf hashes, or the subtree
    roots a higher tile level holds)."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    split = 1 << ((len(hashes) - 1).bit_length() - 1)  # largest power of 2 < n
    return _node(root(hashes[:split]), root(hashes[split:]))


def all_tiles(leaves: Sequence[bytes]) -> dict[TileKey, bytes]:
    """Every tile of the tree: level L holds the roots of its complete
    subtrees of 256**L leaves, 256 a tile, the last tile partial."""
    tiles: dict[TileKey, bytes] = {}
    hashes, level = list(leaves), 0
    while hashes:
        for start in range(0, len(hashes), TILE_WIDTH):
            tiles[(level, start // TILE_WIDTH)] = b"".join(hashes[start : start + TILE_WIDTH])
        full = len(hashes) // TILE_WIDTH * TILE_WIDTH
        hashes = [root(hashes[i : i + TILE_WIDTH]) for i in range(0, full, TILE_WIDTH)]
        level += 1
    return tiles


def checkpoint(leaves: Sequence[bytes]) -> LogCheckpoint:
    size = len(leaves)
    # The store indexes the JWS, it never verifies it: any compact JWS shape.
    return LogCheckpoint(size, root(leaves), ts(size % 3600), f"e30.size-{size}.c2ln")


@dataclass
class LogWriter:
    """One writer's view of the log: the leaves it believes are stored."""

    leaves: list[bytes] = field(default_factory=list)

    @classmethod
    def reload(cls, store: LogReader) -> LogWriter:
        """The stored right edge, as a writer reloads it after a LogConflict."""
        head = store.log_head()
        size = 0 if head is None else head.tree_size
        keys = [(0, index) for index in range(-(-size // TILE_WIDTH))]
        tiles = store.read_tiles(keys)
        hashes = b"".join(tiles[key] for key in keys)
        leaves = [hashes[i : i + 32] for i in range(0, len(hashes), 32)][:size]
        assert len(leaves) == size, "the stored level-0 tiles lack leaves of the head"
        return cls(leaves)

    def append(
        self, writes: Sequence[ReceiptWrite], *, old_size: int | None = None
    ) -> tuple[list[ReceiptWrite], LogAppend]:
        """The batch as leaves `old_size...` (default: this writer's size) and
        the LogAppend that goes with it: changed tiles and the checkpoint."""
        start = len(self.leaves) if old_size is None else old_size
        indexed = [
            ReceiptWrite(dataclasses.replace(w.receipt, log_index=start + i))
            for i, w in enumerate(writes)
        ]
        before = self.leaves[:start]
        after = before + [leaf_hash(w.receipt) for w in writes]
        old_tiles = all_tiles(before)
        changed = {k: v for k, v in all_tiles(after).items() if old_tiles.get(k) != v}
        return indexed, LogAppend(start, changed, checkpoint(after))

    def landed(self, writes: Sequence[ReceiptWrite]) -> None:
        self.leaves.extend(leaf_hash(w.receipt) for w in writes)


def level0(leaves: Sequence[bytes], index: int = 0) -> Mapping[TileKey, bytes]:
    return {(0, index): b"".join(leaves[index * TILE_WIDTH : (index + 1) * TILE_WIDTH])}


@dataclass
class RaceResult:
    landed: list[list[StoredReceipt]] = field(default_factory=list)  # per commit
    sizes: list[int] = field(default_factory=list)  # tree_size each landed commit made
    conflicts: int = 0
    errors: list[BaseException] = field(default_factory=list)


def race_appends(
    stores: Sequence[LogStore], chains: Sequence[Chain], commits: int, batch: int
) -> RaceResult:
    """Writer i appends `commits` batches of `batch` receipts of `chains[i]`
    through `stores[i]`, all writers at once; a LogConflict reloads the right
    edge and retries the same receipts at the new size."""
    result = RaceResult()
    lock = threading.Lock()
    start = threading.Barrier(len(stores), timeout=60)

    def run(store: LogStore, chain: Chain) -> None:
        try:
            start.wait()
            for _ in range(commits):
                writes = [chain.next(amount_minor=1) for _ in range(batch)]
                for _attempt in range(200):
                    indexed, append = LogWriter.reload(store).append(writes)
                    try:
                        store.commit_batch(indexed, [], append)
                    except LogConflict:
                        with lock:
                            result.conflicts += 1
                        continue
                    with lock:
                        result.landed.append([w.receipt for w in indexed])
                        result.sizes.append(append.checkpoint.tree_size)
                    break
                else:
                    raise AssertionError("a writer never got its batch into the log")
        except BaseException as error:
            with lock:
                result.errors.append(error)

    threads = [
        threading.Thread(target=run, args=(store, chain), name=f"log-writer-{i}")
        for i, (store, chain) in enumerate(zip(stores, chains, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a log writer hung"
    return result


def assert_one_log(store: LogStore, result: RaceResult) -> None:
    """Every landed receipt is in the log exactly once, at the index it was
    committed with, under a stored checkpoint whose root matches the leaves."""
    assert result.errors == []
    landed = sorted((r for batch in result.landed for r in batch), key=lambda r: r.log_index or 0)
    stored = store.receipts_by_log_index(0, len(landed) + 10)
    assert stored == landed
    assert [r.log_index for r in stored] == list(range(len(landed)))
    assert len({r.receipt_id for r in stored}) == len(stored)
    leaves = [leaf_hash(r) for r in stored]
    head = store.log_head()
    assert head is not None and head.tree_size == len(leaves)
    assert head.root_hash == root(leaves)
    sizes = [c.tree_size for c in store.log_checkpoints(0, len(result.sizes) + 10)]
    assert sizes == sorted(result.sizes)
    for size in sizes:
        stored_checkpoint = store.log_checkpoint(size)
        assert stored_checkpoint is not None
        assert stored_checkpoint.root_hash == root(leaves[:size])
