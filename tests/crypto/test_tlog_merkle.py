"""The Merkle core against the RFC 9162 test vectors of transparency-dev/merkle
(proof/verify_test.go) and against RFC 9162 section 2.1 written as recursion."""

from __future__ import annotations

import hashlib
import random

import pytest

from crypto import (
    EMPTY_ROOT,
    LogError,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from tests.crypto import tlog_reference as ref

# transparency-dev/merkle proof/verify_test.go: the eight leaves, the roots of
# the trees of size 1..8, and known-good proofs (leaf numbers are 1-based there).
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
                                      "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
INCLUSION = [  # (leaf number, tree size, path)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [  # (size1, size2, proof)
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (1, 1, []),
]
VECTOR_READER = ref.MemoryReader([leaf_hash(entry) for entry in LEAVES])


def _leaves(count: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(f"{seed}/{i}".encode()).digest()) for i in range(count)]


def _reason(error: pytest.ExceptionInfo[ProofError]) -> str:
    return error.value.reason


def test_hashing_is_rfc9162_with_domain_separation() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == ROOTS[0]
    assert node_hash(leaf_hash(LEAVES[0]), leaf_hash(LEAVES[1])) == ROOTS[1]
    assert tree_root(0, VECTOR_READER) == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_reference_vectors(size: int) -> None:
    assert tree_root(size, VECTOR_READER) == ROOTS[size - 1]


@pytest.mark.parametrize(("number", "size", "expected"), INCLUSION)
def test_inclusion_proofs_match_the_reference_vectors(
    number: int, size: int, expected: list[str]
) -> None:
    proof = inclusion_proof(number - 1, size, VECTOR_READER)
    assert [item.hex() for item in proof] == expected
    verify_inclusion(leaf_hash(LEAVES[number - 1]), number - 1, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY)
def test_consistency_proofs_match_the_reference_vectors(
    old: int, new: int, expected: list[str]
) -> None:
    proof = consistency_proof(old, new, VECTOR_READER)
    assert [item.hex() for item in proof] == expected
    verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof)


def test_every_proof_up_to_size_70_matches_the_rfc_recursion_and_verifies() -> None:
    leaves = _leaves(70)
    reader = ref.MemoryReader(leaves)
    for size in range(1, 71):
        root = tree_root(size, reader)
        assert root == ref.mth(leaves[:size])
        for index in range(size):
            proof = inclusion_proof(index, size, reader)
            assert proof == ref.path(index, leaves[:size]), (index, size)
            verify_inclusion(leaves[index], index, size, proof, root)
        for old in range(1, size + 1):
            proof = consistency_proof(old, size, reader)
            assert proof == ref.proof(old, leaves[:size]), (old, size)
            verify_consistency(old, size, ref.mth(leaves[:old]), root, proof)


def test_random_large_trees_read_log_n_nodes_in_one_call() -> None:
    rng = random.Random(16)
    leaves = _leaves(5000, seed=1)
    reader = ref.MemoryReader(leaves)
    for _ in range(40):
        size = rng.randrange(1, 5001)
        index, old = rng.randrange(size), rng.randrange(1, size + 1)
        root = tree_root(size, reader)
        assert root == ref.mth(leaves[:size])
        reader.calls.clear()
        proof = inclusion_proof(index, size, reader)
        assert len(reader.calls) <= 1 and len(reader.calls[0] if reader.calls else []) <= 2 * 13
        verify_inclusion(leaves[index], index, size, proof, root)
        reader.calls.clear()
        proof = consistency_proof(old, size, reader)
        assert len(reader.calls) <= 1 and len(reader.calls[0] if reader.calls else []) <= 2 * 13
        assert proof == ref.proof(old, leaves[:size])
        verify_consistency(old, size, ref.mth(leaves[:old]), root, proof)


def test_inclusion_tampering_is_refused_with_its_own_reason() -> None:
    leaves = _leaves(21)
    reader = ref.MemoryReader(leaves)
    root = tree_root(21, reader)
    proof = inclusion_proof(5, 21, reader)
    cases = {
        "changed leaf": (leaf_hash(b"other"), 5, 21, proof, root, "root_mismatch"),
        "wrong index, same path length": (leaves[5], 4, 21, proof, root, "root_mismatch"),
        "wrong index, other path length": (leaves[5], 17, 21, proof, root, "wrong_proof_length"),
        "index beyond the tree": (leaves[5], 21, 21, proof, root, "index_out_of_range"),
        "wrong size": (leaves[5], 5, 16, proof, root, "wrong_proof_length"),
        "truncated proof": (leaves[5], 5, 21, proof[:-1], root, "wrong_proof_length"),
        "extra element": (leaves[5], 5, 21, [*proof, root], root, "wrong_proof_length"),
        "changed element": (leaves[5], 5, 21, [proof[0][::-1], *proof[1:]], root,
                            "root_mismatch"),
        "other root": (leaves[5], 5, 21, proof, tree_root(20, reader), "root_mismatch"),
        "short hash": (leaves[5][:31], 5, 21, proof, root, "malformed_hash"),
    }
    for name, (leaf, index, size, path, claimed, reason) in cases.items():
        with pytest.raises(ProofError) as error:
            verify_inclusion(leaf, index, size, path, claimed)
        assert _reason(error) == reason, name
    verify_inclusion(leaves[5], 5, 21, proof, root)  # the untouched proof still verifies


def test_consistency_tampering_is_refused_with_its_own_reason() -> None:
    leaves = _leaves(40)
    reader = ref.MemoryReader(leaves)
    old_root, new_root = tree_root(13, reader), tree_root(40, reader)
    proof = consistency_proof(13, 40, reader)
    # The log cut back to 10 leaves and regrown with different ones to 40.
    forked = ref.MemoryReader([*leaves[:10], *_leaves(30, seed=9)])
    forked_proof, forked_root = consistency_proof(13, 40, forked), tree_root(40, forked)
    cases = {
        "cut and regrown": (13, 40, old_root, forked_root, forked_proof, "inconsistent"),
        "swapped roots": (13, 40, new_root, old_root, proof, "inconsistent"),
        "same size, two roots": (13, 13, old_root, tree_root(13, forked), [], "inconsistent"),
        "other new root": (13, 40, old_root, tree_root(39, reader), proof, "root_mismatch"),
        "truncated proof": (13, 40, old_root, new_root, proof[:-1], "wrong_proof_length"),
        "empty proof": (13, 40, old_root, new_root, [], "wrong_proof_length"),
        "wrong old size": (12, 40, old_root, new_root, proof, "wrong_proof_length"),
        "old size zero": (0, 40, old_root, new_root, proof, "size_out_of_range"),
        "shrinking": (40, 13, new_root, old_root, proof, "size_out_of_range"),
    }
    for name, (old, new, first, second, path, reason) in cases.items():
        with pytest.raises(ProofError) as error:
            verify_consistency(old, new, first, second, path)
        assert _reason(error) == reason, name
    verify_consistency(13, 40, old_root, new_root, proof)
    verify_consistency(13, 13, old_root, old_root, [])


def test_impossible_requests_and_broken_readers_raise() -> None:
    reader = ref.MemoryReader(_leaves(8))
    with pytest.raises(ProofError, match="index_out_of_range"):
        inclusion_proof(8, 8, reader)
    with pytest.raises(ProofError, match="size_out_of_range"):
        consistency_proof(0, 8, reader)
    with pytest.raises(LogError, match="not_stored"):
        tree_root(9, reader)

    class Short:
        def read_hashes(self, nodes: object) -> list[bytes]:
            return []

    with pytest.raises(LogError, match="short_read"):
        tree_root(5, Short())
    assert consistency_proof(8, 8, reader) == []
