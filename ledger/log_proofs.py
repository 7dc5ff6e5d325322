"""Proofs from the stored receipt log: inclusion and consistency, O(log n) tiles each.

Full tiles never change once written (the log only grows), so they are
cached; partial tiles at the right edge are read again each time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from crypto import LogProof, TileHashReader, consistency_proof, inclusion_proof
from ledger import limits
from ledger.log_rules import C2SP_TILE_HASHES_MAX, HASH_BYTES
from ledger.model import LogCheckpoint
from ledger.ports import LogReader

TileKey = tuple[int, int]
_FULL_TILE_BYTES = C2SP_TILE_HASHES_MAX * HASH_BYTES


class LogProofs:
    def __init__(self, reader: LogReader, cache_max: int = limits.log_tile_cache_max) -> None:
        self._reader = reader
        self._cache: OrderedDict[TileKey, bytes] = OrderedDict()
        self._cache_max = cache_max
        self._lock = threading.Lock()

    def head(self) -> LogCheckpoint | None:
        return self._reader.log_head()

    def checkpoint(self, tree_size: int) -> LogCheckpoint | None:
        return self._reader.log_checkpoint(tree_size)

    def checkpoints(self, after_size: int, limit: int) -> list[LogCheckpoint]:
        return self._reader.log_checkpoints(after_size, limit)

    def read_tiles(self, keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        found: dict[TileKey, bytes] = {}
        missing: list[TileKey] = []
        with self._lock:
            for key in keys:
                tile = self._cache.get(key)
                if tile is None:
                    missing.append(key)
                else:
                    self._cache.move_to_end(key)
                    found[key] = tile
        if not missing:
            return found
        read = self._reader.read_tiles(missing)
        found.update(read)
        with self._lock:
            for key, tile in read.items():
                if len(tile) == _FULL_TILE_BYTES:
                    self._cache[key] = tile
            while len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return found

    def leaf(self, index: int) -> bytes | None:
        """The stored leaf hash at `index`, or None if the log has no such leaf."""
        level0_index, offset = divmod(index, C2SP_TILE_HASHES_MAX)
        tile = self.read_tiles([(0, level0_index)]).get((0, level0_index), b"")
        start = offset * HASH_BYTES
        leaf = tile[start : start + HASH_BYTES]
        return leaf if len(leaf) == HASH_BYTES else None

    def inclusion(self, index: int, checkpoint: LogCheckpoint) -> LogProof:
        """The leaf's proof against `checkpoint` (ValueError if not in it)."""
        size = checkpoint.tree_size
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a log of {size} leaves")
        path = inclusion_proof(index, size, TileHashReader(size, self.read_tiles))
        return LogProof(index, size, tuple(path), checkpoint.jws)

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof that the first `old_size` leaves are a
        prefix of the first `new_size` (ValueError unless 0 < old <= new)."""
        if not 0 < old_size <= new_size:
            raise ValueError("need 0 < first <= second")
        return consistency_proof(old_size, new_size, TileHashReader(new_size, self.read_tiles))
