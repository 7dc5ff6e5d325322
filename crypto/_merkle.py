"""RFC 9162 Merkle tree hashing: roots, inclusion and consistency proofs, and their checks.

The tree is read through `HashReader`, which names stored *perfect* subtrees
by (level, index): the subtree over leaves [index * 2**level, (index + 1) *
2**level). Every root or proof is planned first as a list of such nodes (the
way Go's tlog.ProveRecord/ProveTree do), read in one `read_hashes` call, then
folded: a proof costs O(log n) stored hashes and one round trip to the store.

Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step, so a
failure names the step that failed (`ProofError.reason`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol

from crypto._errors import LogError, ProofError

HASH_BYTES: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()  # RFC 9162 2.1.1: MTH({}) = HASH()

Node = tuple[int, int]  # (level, index) of a perfect subtree
Plan = list[tuple[Node, ...]]  # one proof element per entry: the nodes whose fold it is


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = HASH(0x00 || d)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """HASH(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class HashReader(Protocol):
    """Stored perfect-subtree hashes of one log.

    Returns exactly one 32-byte hash per requested node, in order; raises
    `LogError` if it cannot (a node outside the tree, storage missing).
    """

    def read_hashes(self, nodes: Sequence[Node]) -> list[bytes]: ...


def broken(message: str) -> LogError:
    """A bug in the index math, never a condition a caller can cause."""
    return LogError("invariant_broken", message)


def read_checked(reader: HashReader, nodes: Sequence[Node]) -> list[bytes]:
    """`reader.read_hashes(nodes)`, holding the reader to its contract."""
    if not nodes:
        return []
    hashes = reader.read_hashes(nodes)
    if len(hashes) != len(nodes):
        raise LogError("short_read", f"asked for {len(nodes)} hashes, got {len(hashes)}")
    for node, value in zip(nodes, hashes, strict=True):
        if len(value) != HASH_BYTES:
            raise LogError("short_read", f"node {node} is {len(value)} bytes, not {HASH_BYTES}")
    return hashes


def range_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees, largest first, whose leaves are exactly [start, end).

    Exact for every range an RFC 9162 tree splits into (start is a multiple of
    the largest power of two not above end - start), as Go's subTreeIndex.
    """
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start & ((1 << level) - 1):
            raise broken(f"range [{start}, {end}) is not a subtree range")
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of consecutive perfect subtrees, largest first: hashed from the right."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _read_plan(plan: Plan, reader: HashReader) -> list[bytes]:
    nodes = [node for element in plan for node in element]
    hashes = read_checked(reader, nodes)
    proof: list[bytes] = []
    position = 0
    for element in plan:
        proof.append(fold(hashes[position : position + len(element)]))
        position += len(element)
    return proof


def tree_root(size: int, reader: HashReader) -> bytes:
    """MTH of the first `size` leaves, from the O(log n) subtrees of the right edge."""
    if size < 0:
        raise ProofError("size_out_of_range", f"tree size {size} is negative")
    if size == 0:
        return EMPTY_ROOT
    return fold(read_checked(reader, range_nodes(0, size)))


def inclusion_plan(index: int, size: int) -> list[Node]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1 as sibling nodes, leaf end first.

    Below level `inner` (where index and size - 1 part) the siblings are
    perfect, except the topmost one, which holds size - 1 and may be cut by
    the right edge: `sibling_hash` then folds the perfect subtrees of what is
    left of it. From `inner` up, index and size - 1 agree and each set bit
    contributes its perfect left sibling.
    """
    last = size - 1
    inner = (index ^ last).bit_length()
    plan = [(level, (index >> level) ^ 1) for level in range(inner)]
    plan += [
        (level, (index >> level) - 1)
        for level in range(inner, last.bit_length())
        if (index >> level) & 1
    ]
    return plan


def is_cut(node: Node, size: int) -> bool:
    """Whether the right edge of a tree of `size` cuts this node short."""
    level, index = node
    return (index + 1) << level > size


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 PATH for leaf `index` in the tree of `size` leaves (one read)."""
    if not 0 <= index < size:
        raise ProofError("index_out_of_range", f"leaf {index} is not in a tree of size {size}")
    plan = [
        tuple(range_nodes(node[1] << node[0], size)) if is_cut(node, size) else (node,)
        for node in inclusion_plan(index, size)
    ]
    return _read_plan(plan, reader)


def consistency_plan(old_size: int, new_size: int) -> Plan:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 2.1.4.1 as nodes (Go's treeProof)."""
    plan: Plan = []
    _subproof(0, new_size, old_size, plan)
    return plan


def _subproof(low: int, high: int, old_end: int, plan: Plan) -> None:
    # SUBPROOF(m, D[low:high], b) with b true exactly while low == 0.
    if old_end == high:
        if low != 0:
            plan.append(tuple(range_nodes(low, high)))
        return
    level = (high - low - 1).bit_length() - 1  # k = largest power of two below high - low
    split = low + (1 << level)
    if old_end <= split:
        _subproof(low, split, old_end, plan)
        plan.append(tuple(range_nodes(split, high)))
    else:
        _subproof(split, high, old_end, plan)
        plan.append(((level, low >> level),))


def consistency_proof(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """RFC 9162 PROOF that the tree of `new_size` extends the one of `old_size` (one read)."""
    if not 0 < old_size <= new_size:
        raise ProofError(
            "size_out_of_range", f"no consistency proof from size {old_size} to {new_size}"
        )
    return _read_plan(consistency_plan(old_size, new_size), reader)


def _check_hashes(**named: bytes | Sequence[bytes]) -> None:
    for name, value in named.items():
        values = [value] if isinstance(value, bytes) else value
        for item in values:
            if not isinstance(item, bytes) or len(item) != HASH_BYTES:
                raise ProofError("malformed_hash", f"{name} holds a value that is not 32 bytes")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2: `leaf` (a leaf HASH, `leaf_hash(entry)`) is at `index` under `root`.

    Raises ProofError: index_out_of_range, wrong_proof_length, root_mismatch,
    malformed_hash.
    """
    _check_hashes(leaf=leaf, root=root, proof=proof)
    if not 0 <= index < size:
        raise ProofError("index_out_of_range", f"leaf {index} is not in a tree of size {size}")
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("wrong_proof_length", f"proof too long for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("wrong_proof_length", f"proof too short for leaf {index} of {size}")
    if result != root:
        raise ProofError("root_mismatch", f"the path from leaf {index} leads to another root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: the tree (`new_size`, `new_root`) extends (`old_size`, `old_root`).

    Equal sizes need an empty proof and equal roots. Raises ProofError:
    size_out_of_range, wrong_proof_length, inconsistent (the proof does not
    rebuild the old root: a fork, or a log cut and regrown), root_mismatch
    (it does not rebuild the new root), malformed_hash.
    """
    _check_hashes(old_root=old_root, new_root=new_root, proof=proof)
    if not 0 < old_size <= new_size:
        raise ProofError("size_out_of_range", f"cannot prove size {old_size} -> {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("wrong_proof_length", "equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("inconsistent", f"two different roots for tree size {old_size}")
        return
    if not proof:
        raise ProofError("wrong_proof_length", "empty proof for different sizes")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old_result = new_result = path[0]
    for sibling in path[1:]:
        if sn == 0:
            raise ProofError("wrong_proof_length", f"proof too long for {old_size} -> {new_size}")
        if fn & 1 or fn == sn:
            old_result = node_hash(sibling, old_result)
            new_result = node_hash(sibling, new_result)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            new_result = node_hash(new_result, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("wrong_proof_length", f"proof too short for {old_size} -> {new_size}")
    if old_result != old_root:
        raise ProofError("inconsistent", f"tree of size {new_size} does not extend the old root")
    if new_result != new_root:
        raise ProofError("root_mismatch", f"the proof leads to another root of size {new_size}")
