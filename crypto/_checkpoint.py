"""Checkpoints: the log's size and root, signed once per commit as an ordinary compact JWS.

The payload is the RFC 8785 form of {"origin", "tree_size", "root_hash",
"timestamp"}, embedded (not detached) so any JOSE library verifies it with
the JWKS alone; the header's typ, `vexa-checkpoint+jwt`, keeps a checkpoint
from being taken for any other token signed by the same keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from crypto._b64 import b64url_decode
from crypto._canonical import canonical_json
from crypto._errors import CheckpointError
from crypto._jws import check_compact, header_typ
from crypto._merkle import HASH_BYTES
from crypto._signer import Signer
from crypto._trusted import TrustedKeys, trusted_keys
from crypto.receipt import _RFC3339, json_integer_abs_max

CHECKPOINT_TYP: Final = "vexa-checkpoint+jwt"
_FIELDS: Final = frozenset({"origin", "tree_size", "root_hash", "timestamp"})
_HASH_PREFIX: Final = "sha256:"
# check_compact's reasons, as checkpoint reasons
_REASONS: Final = {"malformed_signature": "malformed"}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The signed head of a log: `tree_size` leaves whose RFC 9162 root is `root_hash`."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: str  # RFC 3339

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or not self.origin.isprintable():
            raise ValueError("origin must be a non-empty string without control characters")
        size = self.tree_size
        if type(size) is not int or not 0 <= size <= json_integer_abs_max:
            raise ValueError(f"tree_size must be an integer in [0, 2**53), got {size!r}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_BYTES:
            raise ValueError("root_hash must be 32 bytes")
        if not isinstance(self.timestamp, str) or _RFC3339.fullmatch(self.timestamp) is None:
            raise ValueError(f"timestamp must be RFC 3339, got {self.timestamp!r}")


def checkpoint_payload(checkpoint: Checkpoint) -> bytes:
    """The signed bytes: RFC 8785 JSON, root as "sha256:<hex>"."""
    return canonical_json(
        {
            "origin": checkpoint.origin,
            "tree_size": checkpoint.tree_size,
            "root_hash": _HASH_PREFIX + checkpoint.root_hash.hex(),
            "timestamp": checkpoint.timestamp,
        }
    )


def sign_checkpoint(checkpoint: Checkpoint, key: Signer) -> str:
    """Compact JWS `header.payload.signature`, header {"alg","kid","typ"}."""
    return key.sign_compact(checkpoint_payload(checkpoint), typ=CHECKPOINT_TYP)


def verify_checkpoint(jws: str, keys: TrustedKeys | Mapping[str, object]) -> Checkpoint:
    """The checkpoint a JWS carries, once signature and payload check out.

    Raises CheckpointError: malformed, unsupported_alg, unknown_kid,
    bad_signature, invalid_payload.
    """
    parts = jws.split(".") if isinstance(jws, str) else []
    if len(parts) != 3 or not parts[1]:
        raise CheckpointError("malformed", "a checkpoint is a compact JWS with its payload")
    header_b64, payload_b64, signature_b64 = parts
    verdict = check_compact(header_b64, payload_b64, signature_b64, trusted_keys(keys))
    if not verdict.ok:
        reason = str(verdict.reason)
        raise CheckpointError(_REASONS.get(reason, reason), verdict.detail)
    if header_typ(header_b64) != CHECKPOINT_TYP:
        raise CheckpointError("malformed", f"typ is {header_typ(header_b64)!r}, not a checkpoint")
    return _parse_payload(payload_b64)


def _parse_payload(payload_b64: str) -> Checkpoint:
    try:
        payload = b64url_decode(payload_b64)
        fields = json.loads(payload)
    except ValueError as error:
        raise CheckpointError("invalid_payload", "payload is not base64url JSON") from error
    if not isinstance(fields, dict) or set(fields) != _FIELDS:
        raise CheckpointError("invalid_payload", f"payload must have exactly {sorted(_FIELDS)}")
    root = fields["root_hash"]
    try:
        if not isinstance(root, str) or not root.startswith(_HASH_PREFIX) or len(root) != 71:
            raise ValueError(f"root_hash must be sha256:<64 hex>, got {root!r}")
        checkpoint = Checkpoint(
            fields["origin"], fields["tree_size"], bytes.fromhex(root[7:]), fields["timestamp"]
        )
    except ValueError as error:
        raise CheckpointError("invalid_payload", str(error)) from error
    if checkpoint_payload(checkpoint) != payload:
        raise CheckpointError("invalid_payload", "payload is not in its RFC 8785 form")
    return checkpoint
