"""Receipt log benchmark (not a test): `python -m loadtest.bench_tlog [--size N]`.

Prints the writer's cost per appended leaf (root, one inclusion proof per
leaf, tiles) for several batch sizes on a log of `--size` leaves, the cost of
loading the right edge, and the reader's cost per proof from in-memory tiles.
The charge path appends ~1,500 receipts/s, so a leaf must cost well under
the ~600 us a charge may spend in all. Numbers depend on what else runs on
the machine: run it a few times.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from collections.abc import Mapping, Sequence

from crypto import (
    RightEdge,
    TileHashReader,
    TileKey,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_root,
    verify_inclusion,
)

BATCH_SIZES = (1, 8, 64, 256, 1024)


def _grow(size: int) -> tuple[RightEdge, dict[TileKey, bytes]]:
    """A real log of `size` leaves, grown in batches of 4,096, with its tiles."""
    edge, tiles = RightEdge.empty(), {}
    while edge.size < size:
        count = min(4096, size - edge.size)
        batch = [leaf_hash(i.to_bytes(32, "big")) for i in range(edge.size, edge.size + count)]
        tiles.update(edge.append(batch).tiles)
    return edge, tiles


def _per_item_us(started_s: float, count: int) -> float:
    return (time.perf_counter() - started_s) * 1e6 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000, help="log size to start from")
    parser.add_argument("--leaves", type=int, default=50_000, help="leaves per batch size")
    args = parser.parse_args()

    started = time.perf_counter()
    edge, tiles = _grow(args.size)
    print(f"grew a log of {args.size:,} leaves: {_per_item_us(started, args.size):.1f} us/leaf")

    def read_tiles(keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        return {key: tiles[key] for key in keys}

    started = time.perf_counter()
    loaded = RightEdge(edge.size, TileHashReader(edge.size, read_tiles), expected_root=edge.root)
    print(f"RightEdge load from tiles: {_per_item_us(started, 1):,.0f} us")

    print("append (root + one inclusion proof per leaf + tiles), us per leaf:")
    for batch_size in BATCH_SIZES:
        writer = RightEdge(loaded.size, TileHashReader(loaded.size, read_tiles))
        batches = max(1, args.leaves // batch_size)
        leaves = [leaf_hash(hashlib.sha256(bytes([i % 256])).digest()) for i in range(batch_size)]
        started = time.perf_counter()
        for _ in range(batches):
            writer.append(leaves)
        print(f"  batch {batch_size:>5}: {_per_item_us(started, batches * batch_size):6.1f}")

    reader = TileHashReader(edge.size, read_tiles)
    rng, probes = random.Random(1), 2000
    started = time.perf_counter()
    for _ in range(probes):
        inclusion_proof(rng.randrange(edge.size), edge.size, reader)
    print(f"inclusion_proof from tiles: {_per_item_us(started, probes):.0f} us")
    started = time.perf_counter()
    for _ in range(probes):
        consistency_proof(rng.randrange(1, edge.size), edge.size, reader)
    print(f"consistency_proof from tiles: {_per_item_us(started, probes):.0f} us")
    started = time.perf_counter()
    for _ in range(probes // 10):
        tree_root(rng.randrange(1, edge.size), reader)
    print(f"tree_root from tiles: {_per_item_us(started, probes // 10):.0f} us")
    index = edge.size // 3
    proof = inclusion_proof(index, edge.size, reader)
    leaf = leaf_hash(index.to_bytes(32, "big"))
    started = time.perf_counter()
    for _ in range(probes):
        verify_inclusion(leaf, index, edge.size, proof, edge.root)
    print(f"verify_inclusion ({len(proof)} hashes): {_per_item_us(started, probes):.1f} us")


if __name__ == "__main__":
    main()
