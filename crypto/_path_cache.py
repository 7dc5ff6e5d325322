"""Inclusion paths checked against nodes already proven, for verifying many receipts.

An export proves every receipt against the same few signed roots, and the
receipts of one customer sit close together in the log: their RFC 9162
paths share every node above the level where their leaves part. Once a path
has been walked to the signed root, each node on it is known: its hash, and
the rest of the path from there, which leads to the root. A later path that
reaches such a node with the same hash and continues with the same remaining
path would end at the root exactly as the earlier one did, so it is proven
there: ~2 hashes per receipt instead of log2(n) (`loadtest.bench_log_audit`).

This cache only ever says "proven". A path it cannot prove (a tampered node,
a wrong length, a hash it has not seen) goes to `verify_inclusion`, whose
verdict and reason are the same with or without the cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from hashlib import sha256
from typing import Final

HASH_HEX_LENGTH: Final = 64
HASH_HEX: Final = re.compile(f"[0-9a-f]{{{HASH_HEX_LENGTH}}}", re.ASCII)

# A node costs ~250 bytes here (key, hash, a share of its path list): 16,384
# of them are ~4 MiB. Receipts arrive in log order, so forgetting everything
# when full costs one full walk, not a miss per receipt.
proven_nodes_max: Final = 16_384

# (root, tree_size, level, index): the node over leaves [index << level,
# min((index + 1) << level, tree_size)) of the tree with that root and size.
_Position = tuple[bytes, int, int, int]


class ProvenNodes:
    """Nodes of signed trees, each with the rest of a path that led from it to the root."""

    __slots__ = ("_nodes",)

    def __init__(self) -> None:
        # position -> (its hash, a proven path as hex, where this node's rest of it starts)
        self._nodes: dict[_Position, tuple[bytes, list[str], int]] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def proves(
        self, leaf: bytes, index: int, size: int, path: Sequence[object], root: bytes
    ) -> bool:
        """Whether `path` (hex strings, leaf end first) leads from `leaf` at `index` to the
        `root` of the tree of `size` leaves, as `verify_inclusion` would find.

        False means "not proven here", not "wrong": the caller then runs the full check.
        The walk is `verify_inclusion`'s, with (level, index) kept for each node.
        """
        nodes = self._nodes
        fn, sn, level, node = index, size - 1, 0, leaf
        walked: list[tuple[_Position, bytes, int]] = []
        for step, sibling_hex in enumerate(path):
            position = (root, size, level, fn)
            # Leaves are not kept (only the same receipt again would find its own).
            known = nodes.get(position) if level else None
            if known is not None:
                # Same node, same rest of path: the walk ends where the proven one did.
                known_hash, known_path, start = known
                if known_hash != node or path[step:] != known_path[start:]:
                    return False
                break
            if sn == 0 or not isinstance(sibling_hex, str) or not HASH_HEX.fullmatch(sibling_hex):
                return False
            walked.append((position, node, step))
            sibling = bytes.fromhex(sibling_hex)
            # node_hash inline (HASH(0x01 || left || right)): a call per node was ~10%.
            if fn & 1 or fn == sn:
                node = sha256(b"\x01" + sibling + node).digest()
                while fn and not fn & 1:
                    fn, sn, level = fn >> 1, sn >> 1, level + 1
            else:
                node = sha256(b"\x01" + node + sibling).digest()
            fn, sn, level = fn >> 1, sn >> 1, level + 1
        else:
            if sn != 0 or node != root:
                return False
        self._remember(walked, path)
        return True

    def _remember(self, walked: list[tuple[_Position, bytes, int]], path: Sequence[object]) -> None:
        if len(walked) < 2:
            return
        if len(self._nodes) + len(walked) > proven_nodes_max:
            self._nodes.clear()
        # Every element of `path` up to the root is a checked hex string by now.
        kept: list[str] = list(path)  # type: ignore[arg-type]
        for position, node, step in walked[1:]:  # walked[0] is the leaf: not kept
            self._nodes[position] = (node, kept, step)
