"""RFC 9162 section 2.1 written the way the RFC states it (recursion over lists of
leaves, plain hashlib), to check crypto's planned, batched implementation against.
Also an in-memory HashReader that counts its calls."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from crypto import LogError


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc_leaf(entry: bytes) -> bytes:
    return sha256(b"\x00" + entry)


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (the RFC's MTH over entries, one level up)."""
    n = len(leaf_hashes)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return sha256(b"\x01" + mth(leaf_hashes[:k]) + mth(leaf_hashes[k:]))


def path(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    n = len(leaf_hashes)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*path(m, leaf_hashes[:k]), mth(leaf_hashes[k:])]
    return [*path(m - k, leaf_hashes[k:]), mth(leaf_hashes[:k])]


def proof(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    return _subproof(m, leaf_hashes, True)


def _subproof(m: int, leaf_hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaf_hashes)
    if m == n:
        return [] if complete else [mth(leaf_hashes)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaf_hashes[:k], complete), mth(leaf_hashes[k:])]
    return [*_subproof(m - k, leaf_hashes[k:], False), mth(leaf_hashes[:k])]


class MemoryReader:
    """Perfect-subtree hashes computed from a list of leaf hashes; counts read calls."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [sha256(b"\x01" + below[i] + below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )
        self.calls: list[list[tuple[int, int]]] = []

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls.append(list(nodes))
        try:
            return [self.levels[level][index] for level, index in nodes]
        except IndexError as error:
            raise LogError("not_stored", f"no node among {list(nodes)}") from error
