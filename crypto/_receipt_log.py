"""A receipt's place in the receipt log, as it travels with the receipt.

In `checkpoint` mode a receipt carries no signature of its own. It carries
`log: {index, tree_size, inclusion, checkpoint}`: its leaf index, an RFC 9162
inclusion path (lowercase hex SHA-256 hashes) up to the root of a tree of
`tree_size` leaves, and the signed checkpoint (compact JWS) that states that
root. A verifier hashes the core, walks the path, compares with the
checkpoint's root and checks the JWS with the JWKS: the receipt verifies alone.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from crypto._checkpoint import Checkpoint, verify_checkpoint
from crypto._errors import CheckpointError, ProofError
from crypto._merkle import leaf_hash, verify_inclusion
from crypto._path_cache import HASH_HEX, ProvenNodes
from crypto._trusted import TrustedKeys


@dataclass(frozen=True, slots=True)
class LogProof:
    """Where a receipt sits in the log, and the proof of it."""

    index: int
    tree_size: int
    inclusion: tuple[bytes, ...]
    checkpoint_jws: str

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "inclusion": [node.hex() for node in self.inclusion],
            "checkpoint": self.checkpoint_jws,
        }


class LogPosition(NamedTuple):
    """A receipt's leaf `leaf_index` in the tree of `tree_size` leaves whose root,
    `root_hash`, a checkpoint signed (what a verified `log` block establishes)."""

    leaf_index: int
    tree_size: int
    root_hash: bytes


def receipt_leaf(receipt_hash: str) -> bytes:
    """The receipt's leaf hash: SHA-256(0x00 || the 32 bytes of receipt_hash)."""
    return leaf_hash(bytes.fromhex(receipt_hash.removeprefix("sha256:")))


class LogBlockError(ValueError):
    """A receipt's `log` block is malformed or does not prove the receipt."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _log_fields(block: object) -> tuple[int, int, object, str]:
    """(index, tree_size, inclusion as found, checkpoint JWS), or LogBlockError."""
    if type(block) is not dict and not isinstance(block, Mapping):  # dict: no ABC check
        raise LogBlockError("invalid_field", "log must be a JSON object")
    index, size = block.get("index"), block.get("tree_size")
    path, jws = block.get("inclusion"), block.get("checkpoint")
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        raise LogBlockError("invalid_field", "log needs integers 0 <= index < tree_size")
    if not isinstance(jws, str):
        raise LogBlockError("invalid_field", "log.checkpoint must be a compact JWS string")
    return index, size, path, jws


def parse_log_block(block: object) -> tuple[int, int, list[bytes], str]:
    """(index, tree_size, inclusion path, checkpoint JWS), or LogBlockError."""
    index, size, path, jws = _log_fields(block)
    if not isinstance(path, list) or not all(_is_hash_hex(node) for node in path):
        raise LogBlockError("invalid_field", "log.inclusion must be a list of 64-hex-digit hashes")
    return index, size, [bytes.fromhex(node) for node in path], jws


def _is_hash_hex(value: object) -> bool:
    # A compiled pattern: a per-character generator cost more than the whole
    # inclusion check (about 35 of 69 us per receipt, `bench_log_audit`).
    return isinstance(value, str) and HASH_HEX.fullmatch(value) is not None


def _verified_checkpoint(
    jws: str, keys: TrustedKeys, checkpoints: MutableMapping[str, Checkpoint] | None
) -> Checkpoint:
    checkpoint = checkpoints.get(jws) if checkpoints is not None else None
    if checkpoint is None:
        try:
            checkpoint = verify_checkpoint(jws, keys)
        except CheckpointError as error:
            raise LogBlockError(error.reason, f"checkpoint: {error.detail}") from error
        if checkpoints is not None:
            checkpoints[jws] = checkpoint
    return checkpoint


def check_log_block(
    receipt_hash: str,
    block: object,
    keys: TrustedKeys,
    checkpoints: MutableMapping[str, Checkpoint] | None = None,
    proven: ProvenNodes | None = None,
) -> LogPosition:
    """Where the block proves this receipt to be, or LogBlockError with a reason.

    `checkpoints` caches verified checkpoints by JWS: receipts of one commit
    (or one export) share theirs, so each JWS is verified once. `proven`
    caches path nodes already walked to a signed root (crypto._path_cache);
    whatever it cannot prove gets the full check below, so verdicts and
    reasons do not depend on what was verified before."""
    if proven is not None:
        position = _proven_position(receipt_hash, block, keys, checkpoints, proven)
        if position is not None:
            return position
    index, size, path, jws = parse_log_block(block)
    checkpoint = _verified_checkpoint(jws, keys, checkpoints)
    if checkpoint.tree_size != size:
        raise LogBlockError(
            "checkpoint_size_mismatch",
            f"log.tree_size is {size} but the checkpoint is for {checkpoint.tree_size} leaves",
        )
    try:
        verify_inclusion(receipt_leaf(receipt_hash), index, size, path, checkpoint.root_hash)
    except ProofError as error:
        raise LogBlockError("not_in_log", f"inclusion proof: {error.detail}") from error
    return LogPosition(index, size, checkpoint.root_hash)


def _proven_position(
    receipt_hash: str,
    block: object,
    keys: TrustedKeys,
    checkpoints: MutableMapping[str, Checkpoint] | None,
    proven: ProvenNodes,
) -> LogPosition | None:
    """The position `proven` establishes, or None when only the full check can tell."""
    try:
        index, size, path, jws = _log_fields(block)
        checkpoint = _verified_checkpoint(jws, keys, checkpoints)
    except LogBlockError:
        return None
    if checkpoint.tree_size != size or not isinstance(path, list):
        return None
    if not proven.proves(receipt_leaf(receipt_hash), index, size, path, checkpoint.root_hash):
        return None
    return LogPosition(index, size, checkpoint.root_hash)
