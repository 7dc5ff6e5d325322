"""C2SP tlog-tiles: the stored form of the tree, and reading hashes back from it.

A tile (L, N) holds the level-8L hashes N*256 .. N*256+W-1, concatenated (32
bytes each); W = 256 except at the right edge, where the partial tile has
floor(size / 256**L) mod 256 hashes. Any perfect subtree at level 8L + b is
the root of 2**b consecutive hashes of one tile, so a proof reads at most one
tile per 8 levels it touches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from crypto._errors import LogError
from crypto._merkle import HASH_BYTES, Node, node_hash

TILE_HEIGHT: Final = 8
TILE_WIDTH_MAX: Final = 1 << TILE_HEIGHT
TILE_LEVEL_MAX: Final = 63  # C2SP: <L> is 0..63
TileKey = tuple[int, int]  # (tile level L, tile index N)
ReadTiles = Callable[[Sequence[TileKey]], Mapping[TileKey, bytes]]

_PATH_GROUP = 1000
_TILE_PATH = re.compile(r"tile/(0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def tile_width(level: int, index: int, tree_size: int) -> int:
    """How many hashes tile (level, index) holds in a tree of `tree_size` leaves (0: none)."""
    available = (tree_size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH_MAX
    return max(0, min(TILE_WIDTH_MAX, available))


def tile_path(level: int, index: int, width: int) -> str:
    """The C2SP path: "tile/0/x001/234" (full), "tile/0/x001/234.p/5" (partial)."""
    if not 0 <= level <= TILE_LEVEL_MAX or index < 0 or not 1 <= width <= TILE_WIDTH_MAX:
        raise ValueError(f"no tile at level {level}, index {index}, width {width}")
    groups = [f"{index % _PATH_GROUP:03d}"]
    while index >= _PATH_GROUP:
        index //= _PATH_GROUP
        groups.append(f"x{index % _PATH_GROUP:03d}")
    path = f"tile/{level}/{'/'.join(reversed(groups))}"
    return path if width == TILE_WIDTH_MAX else f"{path}.p/{width}"


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """(level, index, width) of a C2SP tile path; ValueError unless it is the canonical form."""
    match = _TILE_PATH.fullmatch(path)
    if match is None:
        raise ValueError(f"not a tile path: {path!r}")
    level = int(match[1])
    index = 0
    for group in match[2].split("/"):
        index = index * _PATH_GROUP + int(group.removeprefix("x"))
    width = int(match[3]) if match[3] else TILE_WIDTH_MAX
    if level > TILE_LEVEL_MAX or width > TILE_WIDTH_MAX or tile_path(level, index, width) != path:
        raise ValueError(f"not a canonical tile path: {path!r}")  # x000 prefixes, .p/256
    return level, index, width


def _subtree_root(hashes: list[bytes]) -> bytes:
    """Root of a power-of-two run of hashes, pairwise level by level."""
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


class TileHashReader:
    """`HashReader` over stored tiles for a tree of `size` leaves: one `read_tiles` per read.

    The store may return a tile wider than this size needs (the log grew
    since; the log is append-only, so the prefix is the same) but never a
    narrower one: that is a gap in storage, raised as LogError.
    """

    __slots__ = ("_read_tiles", "size")

    def __init__(self, size: int, read_tiles: ReadTiles) -> None:
        self.size = size
        self._read_tiles = read_tiles

    def read_hashes(self, nodes: Sequence[Node]) -> list[bytes]:
        places: list[tuple[TileKey, int, int]] = []  # (tile, first hash, hash count)
        for level, index in nodes:
            if level < 0 or index < 0 or (index + 1) << level > self.size:
                raise LogError("not_in_tree", f"node {(level, index)} is not in size {self.size}")
            tile_level, height_in_tile = divmod(level, TILE_HEIGHT)
            first = index << height_in_tile  # in hashes of level 8 * tile_level
            key = (tile_level, first >> TILE_HEIGHT)
            places.append((key, first & (TILE_WIDTH_MAX - 1), 1 << height_in_tile))
        keys = list(dict.fromkeys(key for key, _, _ in places))
        tiles = self._read_tiles(keys) if keys else {}
        hashes_by_tile = {key: self._checked(key, tiles.get(key)) for key in keys}
        return [
            _subtree_root(hashes_by_tile[key][first : first + count])
            for key, first, count in places
        ]

    def _checked(self, key: TileKey, data: bytes | None) -> list[bytes]:
        needed = tile_width(*key, self.size)
        if data is None:
            raise LogError("tile_missing", f"tile {key} is not stored")
        if len(data) % HASH_BYTES or not needed * HASH_BYTES <= len(data) <= TILE_WIDTH_MAX * 32:
            raise LogError(
                "tile_short",
                f"tile {key} has {len(data)} bytes; size {self.size} needs {needed} hashes",
            )
        return [data[i : i + HASH_BYTES] for i in range(0, len(data), HASH_BYTES)]
