"""LogCheckpoint <-> the forms its copies take: JSON (outbox payloads,
archive file lines) and text fields (object metadata, message attributes,
with the JWS as the body). One codec, so a copy reads back exactly as
written; values read back are checked, not trusted.

Copies index the JWS, they never verify it: a reader verifies the JWS
(crypto.verify_checkpoint) against the keys it trusts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from ledger.errors import InvariantViolation, LedgerError, check_invariant
from ledger.model import LogCheckpoint

__all__ = [
    "CHECKPOINT_KIND",
    "checkpoint_from_text_fields",
    "checkpoint_text_fields",
    "decode_log_checkpoint",
    "encode_log_checkpoint",
]

# The `kind` attribute that tells a checkpoint from a receipt where both
# travel together (the broadcast topic).
CHECKPOINT_KIND: Final = "log_checkpoint"
_ROOT_HASH_BYTES: Final = 32


def _checked(tree_size: Any, root_hex: Any, timestamp: Any, jws: Any) -> LogCheckpoint:
    check_invariant(
        type(tree_size) is int and tree_size > 0, "checkpoint tree_size is not a positive integer"
    )
    check_invariant(isinstance(root_hex, str), "checkpoint root_hash is not text")
    try:
        root_hash = bytes.fromhex(root_hex)
    except ValueError as error:
        raise InvariantViolation("checkpoint root_hash is not hex") from error
    check_invariant(len(root_hash) == _ROOT_HASH_BYTES, "checkpoint root_hash is not 32 bytes")
    check_invariant(isinstance(timestamp, str) and timestamp != "", "checkpoint timestamp is empty")
    check_invariant(
        isinstance(jws, str) and jws.count(".") == 2, "checkpoint jws is not a compact JWS"
    )
    return LogCheckpoint(tree_size, root_hash, timestamp, jws)


def encode_log_checkpoint(checkpoint: LogCheckpoint) -> bytes:
    """One compact, key-sorted JSON object (root as hex)."""
    return orjson.dumps(
        {
            "tree_size": checkpoint.tree_size,
            "root_hash": checkpoint.root_hash.hex(),
            "timestamp": checkpoint.timestamp,
            "jws": checkpoint.jws,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def decode_log_checkpoint(data: bytes) -> LogCheckpoint:
    try:
        fields = orjson.loads(data)
        check_invariant(isinstance(fields, dict), "checkpoint copy is not a JSON object")
        return _checked(
            fields["tree_size"], fields["root_hash"], fields["timestamp"], fields["jws"]
        )
    except (orjson.JSONDecodeError, KeyError, InvariantViolation) as error:
        raise LedgerError(f"not a stored log checkpoint: {error}") from error


def checkpoint_text_fields(checkpoint: LogCheckpoint) -> dict[str, str]:
    """Metadata or attributes; the JWS itself is the object or message body."""
    return {
        "kind": CHECKPOINT_KIND,
        "tree_size": str(checkpoint.tree_size),
        "root_hash": checkpoint.root_hash.hex(),
        "timestamp": checkpoint.timestamp,
    }


def checkpoint_from_text_fields(fields: Mapping[str, str], jws: bytes) -> LogCheckpoint:
    try:
        check_invariant(fields.get("kind") == CHECKPOINT_KIND, "copy is not a log checkpoint")
        size_text = fields["tree_size"]
        check_invariant(size_text.isdigit(), "checkpoint tree_size is not a number")
        return _checked(
            int(size_text), fields["root_hash"], fields["timestamp"], jws.decode("ascii")
        )
    except (KeyError, UnicodeDecodeError, InvariantViolation) as error:
        raise LedgerError(f"not a stored log checkpoint: {error}") from error
