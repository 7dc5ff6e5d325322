"""Proven inclusion-path nodes (crypto._path_cache) never accept a path that
verify_inclusion refuses, however warm the cache is, and a verifier that uses
them still catches every tampered node of a receipt's proof."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import pytest

from crypto import (
    ProofError,
    verify_inclusion,
    verify_jsonl,
)
from crypto._path_cache import ProvenNodes
from tests.crypto import tlog_reference as ref
from tests.crypto.conftest import logged_chain


def _accepts(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    try:
        verify_inclusion(leaf, index, size, path, root)
    except ProofError:
        return False
    return True


def _variants(
    index: int, size: int, path: list[str], leaves: list[bytes]
) -> Iterator[tuple[str, bytes, int, list[str]]]:
    """The path as given, then every way of bending it: (name, leaf, index, path)."""
    leaf = leaves[index]
    yield "as given", leaf, index, path
    for position in range(len(path)):
        changed = bytes.fromhex(path[position])
        changed = bytes([changed[0] ^ 1]) + changed[1:]
        yield (
            f"node {position} changed",
            leaf,
            index,
            [*path[:position], changed.hex(), *path[position + 1 :]],
        )
        yield f"node {position} dropped", leaf, index, path[:position] + path[position + 1 :]
        yield (
            f"node {position} uppercase",
            leaf,
            index,
            [*path[:position], path[position].upper(), *path[position + 1 :]],
        )
    yield "node appended", leaf, index, [*path, path[-1] if path else "00" * 32]
    for other in {index - 1, index + 1, index ^ 1} - {index}:
        if 0 <= other < size:
            yield f"index {other}", leaf, other, path
            yield f"leaf of {other}", leaves[other], index, path


@pytest.mark.parametrize("size", [*range(1, 34), 63, 64, 65, 100, 255, 257])
def test_a_warm_cache_agrees_with_verify_inclusion_on_every_bent_path(size: int) -> None:
    leaves = [ref.rfc_leaf(i.to_bytes(4, "big")) for i in range(size)]
    root = ref.mth(leaves)
    proven = ProvenNodes()
    order = list(range(size))
    random.Random(size).shuffle(order)
    for index in order:  # each leaf checked after the cache learned from the ones before
        path = [node.hex() for node in ref.path(index, leaves)]
        for name, leaf, claimed, bent in _variants(index, size, path, leaves):
            expected = _accepts(leaf, claimed, size, [bytes.fromhex(n) for n in bent], root)
            if name != "as given" and "uppercase" not in name:
                assert not expected, name  # the bend really breaks the proof
            # Uppercase hex is the same hash, but not the 64 lowercase digits the form asks.
            expected = expected and "uppercase" not in name
            assert proven.proves(leaf, claimed, size, bent, root) is expected, (index, name)
    assert len(proven) == 0 if size <= 2 else len(proven) > 0  # leaves are not kept


def test_leaves_in_log_order_cost_about_two_hashes_each(monkeypatch: pytest.MonkeyPatch) -> None:
    import crypto._path_cache as path_cache

    hashed = []

    def counted(data: bytes) -> Any:
        hashed.append(data)
        return hashlib.sha256(data)

    monkeypatch.setattr(path_cache, "sha256", counted)
    leaves = [ref.rfc_leaf(i.to_bytes(4, "big")) for i in range(1024)]
    root, proven = ref.mth(leaves), ProvenNodes()
    for index in range(1024):
        path = [node.hex() for node in ref.path(index, leaves)]
        assert proven.proves(leaves[index], index, 1024, path, root)
    # Without the cache: 10 hashes per leaf. With it, each leaf hashes its pair
    # and the nodes above it that no leaf before it reached: 2 on average.
    assert len(hashed) <= 2 * 1024


def test_a_cache_for_one_tree_proves_nothing_under_another_root() -> None:
    leaves = [ref.rfc_leaf(bytes([i])) for i in range(16)]
    grown = [*leaves, ref.rfc_leaf(b"new")]
    proven = ProvenNodes()
    for index in range(16):
        path = [node.hex() for node in ref.path(index, leaves)]
        assert proven.proves(leaves[index], index, 16, path, ref.mth(leaves))
    # The same leaf and path, claimed under a bigger tree's root: not proven.
    path = [node.hex() for node in ref.path(3, leaves)]
    assert not proven.proves(leaves[3], 3, 17, path, ref.mth(grown))
    assert proven.proves(
        leaves[3], 3, 17, [node.hex() for node in ref.path(3, grown)], ref.mth(grown)
    )


def test_a_tampered_node_is_caught_after_other_receipts_warmed_the_cache() -> None:
    receipts, jwks, _, _ = logged_chain(40)
    assert verify_jsonl(_lines(receipts), jwks).verified == 40
    target = 37  # its path shares every node above level 2 with receipt 36
    path = list(receipts[target]["log"]["inclusion"])  # type: ignore[index]
    for position, node in enumerate(path):
        bent = [
            *path[:position],
            ("0" if node[0] != "0" else "1") + node[1:],
            *path[position + 1 :],
        ]
        tampered = [*receipts[:target], _with_path(receipts[target], bent)]
        report = verify_jsonl(_lines(tampered), jwks)
        assert report.failure is not None, f"node {position} changed went unnoticed"
        assert (report.verified, report.failure.index) == (target, target)
        assert report.failure.reason == "not_in_log", position


def _with_path(receipt: dict[str, object], path: list[str]) -> dict[str, object]:
    return {**receipt, "log": {**receipt["log"], "inclusion": path}}  # type: ignore[dict-item]


def _lines(receipts: list[dict[str, object]]) -> list[bytes]:
    import json

    return [json.dumps(receipt).encode() for receipt in receipts]
