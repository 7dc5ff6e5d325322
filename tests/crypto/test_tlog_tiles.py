"""C2SP tiles and the writer's right edge: appends in varied batches give the RFC 9162
roots and proofs, and the tiles they write rebuild every hash of every older size."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

import pytest

from crypto import (
    LogError,
    RightEdge,
    TileHashReader,
    TileKey,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    parse_tile_path,
    tile_path,
    tile_width,
    tree_root,
)
from tests.crypto import tlog_reference as ref


def _leaves(count: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(f"{seed}/{i}".encode()).digest()) for i in range(count)]


class TileStore:
    """Tiles as the ledger keeps them: one row per (level, index), upserted."""

    def __init__(self) -> None:
        self.tiles: dict[TileKey, bytes] = {}
        self.reads = 0

    def read(self, keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        self.reads += 1
        return {key: self.tiles[key] for key in keys if key in self.tiles}

    def reader(self, size: int) -> TileHashReader:
        return TileHashReader(size, self.read)


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 1234, 256, "tile/0/x001/234"),
        (0, 1234, 5, "tile/0/x001/234.p/5"),
        (0, 1234067, 256, "tile/0/x001/x234/067"),
        (1, 0, 17, "tile/1/000.p/17"),
        (2, 999, 1, "tile/2/999.p/1"),
        (63, 1000, 255, "tile/63/x001/000.p/255"),
    ],
)
def test_tile_paths_are_c2sp(level: int, index: int, width: int, path: str) -> None:
    assert tile_path(level, index, width) == path
    assert parse_tile_path(path) == (level, index, width)


@pytest.mark.parametrize(
    "path",
    ["tile/0/x000/234", "tile/0/234.p/256", "tile/0/234.p/0", "tile/0/234.p/07", "tile/00/234",
     "tile/64/000", "tile/0/1234", "tile/8/0/001", "tile/0/x001", "tile/entries/001", "tile/0/01"],
)
def test_non_canonical_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="tile path"):
        parse_tile_path(path)


def test_tile_widths_follow_the_c2sp_examples() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one
    # partial level 0 tile of width 112, one full level 1 tile, one partial
    # level 1 tile of width 17, and one partial level 2 tile of width 1."
    assert [tile_width(0, n, 70_000) for n in (0, 272, 273, 274)] == [256, 256, 112, 0]
    assert [tile_width(1, n, 70_000) for n in (0, 1, 2)] == [256, 17, 0]
    assert [tile_width(2, n, 70_000) for n in (0, 1)] == [1, 0]
    assert [tile_width(0, 0, 256), tile_width(1, 0, 256)] == [256, 1]


def _check_tiles(store: TileStore, reference: ref.MemoryReader, size: int) -> None:
    """Every stored tile holds exactly the reference hashes of its span."""
    for (level, index), data in store.tiles.items():
        width = tile_width(level, index, size)
        hashes = reference.levels[8 * level][index * 256 : index * 256 + width]
        assert data == b"".join(hashes), (level, index, size)


def _grow(edge: RightEdge, store: TileStore, leaves: list[bytes], batch: list[bytes]) -> None:
    """Append one batch and check everything a writer and a reader would notice."""
    old = edge.size
    result = edge.appended(batch)
    assert edge.size == old  # computing an append changes nothing...
    edge.adopt(result)  # ...until the caller adopts it after its commit
    leaves += batch
    new = len(leaves)
    reference = ref.MemoryReader(leaves)
    assert (result.start, result.size, edge.size) == (old, new, new)
    assert result.root == edge.root == ref.mth(leaves)
    assert result.proofs == [inclusion_proof(i, new, reference) for i in range(old, new)]
    store.tiles.update(result.tiles)
    _check_tiles(store, reference, new)
    tiles = store.reader(new)
    assert tree_root(new, tiles) == result.root


def test_appends_in_varied_batches_give_rfc_roots_proofs_and_tiles() -> None:
    rng = random.Random(7)
    edge, store, leaves = RightEdge.empty(), TileStore(), []
    all_leaves = _leaves(2000)
    sizes = [1, 1, 2, 3, 250, 1, 255, 256, 1, 17, 64, 513]  # across tile borders, twice a level
    sizes += [rng.randrange(1, 40) for _ in range(5)]
    for count in sizes:
        _grow(edge, store, leaves, all_leaves[len(leaves) : len(leaves) + count])
    assert edge.size == len(leaves) == sum(sizes)
    # Older sizes still read correctly from tiles that have grown since.
    reference = ref.MemoryReader(leaves)
    for size in [1, 2, 255, 256, 257, 511, 512, 1000, len(leaves)]:
        tiles = store.reader(size)
        assert tree_root(size, tiles) == ref.mth(leaves[:size])
        for index in {0, size // 2, size - 1}:
            assert inclusion_proof(index, size, tiles) == inclusion_proof(index, size, reference)
        for old in {1, size // 3 or 1, size}:
            assert consistency_proof(old, size, tiles) == consistency_proof(old, size, reference)


def test_every_size_up_to_70_in_batches_of_one() -> None:
    edge, store, leaves = RightEdge.empty(), TileStore(), []
    for leaf in _leaves(70, seed=3):
        _grow(edge, store, leaves, [leaf])


def test_reloaded_edge_continues_exactly_like_the_one_in_memory() -> None:
    all_leaves = _leaves(900, seed=5)
    edge, store, leaves = RightEdge.empty(), TileStore(), []
    for size in (300, 600):
        _grow(edge, store, leaves, all_leaves[len(leaves) : size])
        store.reads = 0
        reloaded = RightEdge(edge.size, store.reader(edge.size), expected_root=edge.root)
        assert store.reads == 1
        assert (reloaded.size, reloaded.root) == (edge.size, edge.root)
        batch = all_leaves[size : size + 77]
        mine, theirs = edge.appended(batch), reloaded.appended(batch)
        assert (mine.root, mine.proofs, mine.tiles) == (theirs.root, theirs.proofs, theirs.tiles)
    with pytest.raises(LogError, match="root_mismatch"):
        RightEdge(600, store.reader(600), expected_root=ref.mth(all_leaves[:599]))


def test_a_70000_leaf_log_is_stored_as_the_c2sp_example_says() -> None:
    edge, store = RightEdge.empty(), TileStore()
    leaves = _leaves(70_000, seed=2)
    for start in range(0, 70_000, 4096):
        result = edge.append(leaves[start : start + 4096])
        store.tiles.update(result.tiles)
    widths = {key: len(data) // 32 for key, data in store.tiles.items()}
    assert sorted(widths.items())[-5:] == [((0, 272), 256), ((0, 273), 112), ((1, 0), 256),
                                           ((1, 1), 17), ((2, 0), 1)]
    assert len(widths) == 274 + 2 + 1
    assert tree_root(70_000, store.reader(70_000)) == edge.root == ref.mth(leaves)
    assert all(len(tail) < 256 for tail in edge._tails)  # memory: one partial tile per level


def test_tile_reader_refuses_gaps_and_nodes_outside_the_tree() -> None:
    edge, store = RightEdge.empty(), TileStore()
    written = edge.append(_leaves(300)).tiles
    store.tiles.update(written)
    with pytest.raises(LogError, match="not_in_tree"):
        store.reader(300).read_hashes([(0, 300)])
    store.tiles[(0, 1)] = store.tiles[(0, 1)][:32 * 40]  # 44 hashes needed at size 300
    with pytest.raises(LogError, match="tile_short"):
        tree_root(300, store.reader(300))
    assert tree_root(296, store.reader(296)) == tree_root(296, ref.MemoryReader(_leaves(296)))
    store.tiles[(0, 1)] = written[(0, 1)]
    del store.tiles[(1, 0)]
    with pytest.raises(LogError, match="tile_missing"):
        inclusion_proof(290, 300, store.reader(300))  # needs node (8, 0), in tile (1, 0)


def test_append_refuses_bad_leaves_and_stale_adoption() -> None:
    edge = RightEdge.empty()
    with pytest.raises(LogError, match="malformed_hash"):
        edge.appended([b"short"])
    first = edge.appended(_leaves(3))
    second = edge.appended(_leaves(2))
    edge.adopt(first)
    with pytest.raises(LogError, match="stale_append"):
        edge.adopt(second)
    assert edge.size == 3
