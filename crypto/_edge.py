"""The writer's in-memory right edge: append a batch, get the new root, proofs and tiles.

State for a tree of size n: the compact range (one perfect-subtree hash per
set bit of n) and, per tile level, the hashes of its partial tile (< 256).
That is O(log n + tile width) memory, loaded once with one read, and enough
to append without reading the store again.

Why an append needs no reads. Let old = the size before, new = after, and i
a new leaf (old <= i < new). Its RFC 9162 path consists of (a) siblings right
of i, (b) perfect left siblings, and (c) at most one right-edge remainder
[a, new). Ranges (a) and (c) start after i >= old: built from new leaves
only. A left sibling (b) is a perfect node (h, s) with (s + 1) * 2**h <= i
and i inside (h, s + 1). If it ends at or before old, old lies in (h, s + 1)
too, so old >> h == s + 1 is odd: bit h of old is set and (h, s) is exactly
the compact-range node of old at level h. Otherwise it straddles old, and
its hash is computed here bottom-up: its left child at each level is either
again straddling (computed) or, by the same argument one level down, the
compact-range node of old. So every hash a proof needs is in the old compact
range or in `levels` below, and an append of k leaves costs about 2k + log n
hashes plus the proofs' O(log n) lookups each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crypto._errors import LogError
from crypto._merkle import (
    EMPTY_ROOT,
    HASH_BYTES,
    HashReader,
    broken,
    fold,
    inclusion_plan,
    node_hash,
    read_checked,
)
from crypto._tiles import TILE_HEIGHT, TILE_WIDTH_MAX, TileKey

NodeLookup = Callable[[int, int], bytes]
Tails = tuple[tuple[bytes, ...], ...]


@dataclass(frozen=True, slots=True)
class Appended:
    """One computed append. Nothing is adopted until `RightEdge.adopt(this)`.

    `proofs[j]` is the inclusion proof of leaf `start + j` in the tree of
    `size`; `tiles` maps every tile the append touched to its full current
    contents (upsert them; a partial tile is rewritten as it grows).
    """

    start: int
    size: int
    root: bytes
    proofs: list[list[bytes]]
    tiles: dict[TileKey, bytes]
    edge: RightEdge


class RightEdge:
    """The right edge of one log, for its single writer."""

    __slots__ = ("_compact", "_tails", "root", "size")

    def __init__(
        self, size: int, reader: HashReader, *, expected_root: bytes | None = None
    ) -> None:
        """Load the edge of the stored tree of `size` leaves (one read of O(log n + 256) hashes).

        With `expected_root` (the stored head's root), a store that does not
        rebuild it raises LogError("root_mismatch") instead of extending a lie.
        """
        if size < 0:
            raise LogError("size_out_of_range", f"tree size {size} is negative")
        compact_levels = [level for level in range(size.bit_length()) if size >> level & 1]
        nodes = [(level, (size >> level) - 1) for level in compact_levels]
        tail_spans = []
        for tile_level in range(_tile_levels(size)):
            end = size >> (TILE_HEIGHT * tile_level)
            tail_spans.append((end - end % TILE_WIDTH_MAX, end))
            nodes += [(TILE_HEIGHT * tile_level, index) for index in range(*tail_spans[-1])]
        hashes = read_checked(reader, nodes)
        compact = dict(zip(compact_levels, hashes, strict=False))
        position = len(compact_levels)
        tails = []
        for start, end in tail_spans:
            tails.append(tuple(hashes[position : position + end - start]))
            position += end - start
        self._set(size, compact, tuple(tails))
        if expected_root is not None and self.root != expected_root:
            raise LogError("root_mismatch", f"stored hashes do not rebuild the root of {size}")

    @classmethod
    def empty(cls) -> RightEdge:
        return cls._of(0, {}, ())

    @classmethod
    def _of(cls, size: int, compact: dict[int, bytes], tails: Tails) -> RightEdge:
        edge = cls.__new__(cls)
        edge._set(size, compact, tails)
        return edge

    def _set(self, size: int, compact: dict[int, bytes], tails: Tails) -> None:
        self.size = size
        self._compact = compact  # level -> hash, one per set bit of size
        self._tails = tails  # per tile level: the hashes of its partial tile
        self.root = (
            fold([compact[h] for h in sorted(compact, reverse=True)]) if size else EMPTY_ROOT
        )

    def append(self, leaf_hashes: Sequence[bytes]) -> Appended:
        """`appended` and `adopt` at once: for callers with nothing to commit in between."""
        result = self.appended(leaf_hashes)
        self.adopt(result)
        return result

    def adopt(self, result: Appended) -> None:
        """Take the state of an append computed from this edge (after its commit succeeded)."""
        if result.start != self.size:
            raise LogError("stale_append", f"append starts at {result.start}, edge is {self.size}")
        edge = result.edge
        self._set(edge.size, edge._compact, edge._tails)

    def appended(self, leaf_hashes: Sequence[bytes], *, with_proofs: bool = True) -> Appended:
        """The append of `leaf_hashes` (leaf HASHES) computed without changing this edge.

        `with_proofs=False` leaves `proofs` empty: for an auditor rebuilding
        the tree, who needs roots and tiles only (about 3x faster)."""
        for leaf in leaf_hashes:
            if not isinstance(leaf, bytes) or len(leaf) != HASH_BYTES:
                raise LogError("malformed_hash", "a leaf hash is not 32 bytes")
        old, new = self.size, self.size + len(leaf_hashes)
        levels = self._new_levels(leaf_hashes)
        node = self._lookup(levels)
        compact = {level: node(level, (new >> level) - 1) for level in _bits(new)}
        edge = RightEdge._of(new, compact, self._new_tails(levels, new))
        remainders = _remainders(compact, new)
        proofs = (
            [_proof(index, new, node, remainders) for index in range(old, new)]
            if with_proofs
            else []
        )
        return Appended(old, new, edge.root, proofs, self._tiles(levels), edge)

    def _new_levels(self, leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
        """levels[h] = hashes of the perfect nodes at level h with index >= old >> h, in order.

        Those are the nodes the append completes: about 2k of them in all.
        """
        old, new = self.size, self.size + len(leaf_hashes)
        levels = [list(leaf_hashes)]
        level = 0
        while (new >> (level + 1)) > (old >> (level + 1)):
            below, base = levels[level], old >> level
            above = []
            for index in range(old >> (level + 1), new >> (level + 1)):
                left_index = 2 * index
                left = below[left_index - base] if left_index >= base else self._compact[level]
                above.append(node_hash(left, below[left_index + 1 - base]))
            levels.append(above)
            level += 1
        return levels

    def _lookup(self, levels: list[list[bytes]]) -> NodeLookup:
        old = self.size
        compact = self._compact

        def node(level: int, index: int) -> bytes:
            offset = index - (old >> level)
            if offset >= 0 and level < len(levels) and offset < len(levels[level]):
                return levels[level][offset]
            if offset == -1 and level in compact:
                return compact[level]
            raise broken(f"node {(level, index)} is neither new nor on the edge of {old}")

        return node

    def _new_tails(self, levels: list[list[bytes]], new: int) -> Tails:
        tails = []
        for tile_level in range(_tile_levels(new)):
            level = TILE_HEIGHT * tile_level
            old_tail = self._tails[tile_level] if tile_level < len(self._tails) else ()
            added = levels[level] if level < len(levels) else []
            hashes = (*old_tail, *added)
            keep = (new >> level) % TILE_WIDTH_MAX
            tails.append(hashes[len(hashes) - keep :] if keep else ())
        return tuple(tails)

    def _tiles(self, levels: list[list[bytes]]) -> dict[TileKey, bytes]:
        tiles: dict[TileKey, bytes] = {}
        for level in range(0, len(levels), TILE_HEIGHT):
            added = levels[level]
            if not added:
                break
            tile_level = level // TILE_HEIGHT
            old_tail = self._tails[tile_level] if tile_level < len(self._tails) else ()
            hashes = [*old_tail, *added]
            first_tile = (self.size >> level) // TILE_WIDTH_MAX
            for offset in range(0, len(hashes), TILE_WIDTH_MAX):
                key = (tile_level, first_tile + offset // TILE_WIDTH_MAX)
                tiles[key] = b"".join(hashes[offset : offset + TILE_WIDTH_MAX])
        return tiles

    def __repr__(self) -> str:
        return f"RightEdge(size={self.size}, root={self.root.hex()})"


def _bits(size: int) -> list[int]:
    return [level for level in range(size.bit_length()) if size >> level & 1]


def _tile_levels(size: int) -> int:
    """How many tile levels a tree of `size` has (0 for the empty tree)."""
    count = 0
    while size >> (TILE_HEIGHT * count):
        count += 1
    return count


def _remainders(compact: dict[int, bytes], size: int) -> dict[int, bytes]:
    """remainders[h] = MTH of [(size >> h) << h, size): the compact nodes below level h."""
    remainders: dict[int, bytes] = {}
    accumulated: bytes | None = None
    for level in range(size.bit_length() + 1):
        if accumulated is not None:
            remainders[level] = accumulated
        if level in compact:
            node = compact[level]
            accumulated = node if accumulated is None else node_hash(node, accumulated)
    return remainders


def _proof(index: int, size: int, node: NodeLookup, remainders: dict[int, bytes]) -> list[bytes]:
    """PATH(index, D[0:size]) from in-memory hashes, on the plan of `inclusion_proof`."""
    # is_cut inline: the writer builds one proof per receipt it commits, and the
    # call per node was ~10% of it (3.6 -> 3.3 us per leaf of a 100-leaf append).
    return [
        remainders[level] if (sibling + 1) << level > size else node(level, sibling)
        for level, sibling in inclusion_plan(index, size)
    ]
