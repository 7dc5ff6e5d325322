"""Turn a receipt core into a full receipt: hash, then (receipt mode) signature.

The service seals in two steps because they run on different threads: the
account actor canonicalizes and hashes (`hash_core`, it needs the hash for the
next receipt's link at once), and the document is put together once its
proof is known (`sealed_document`: with its own detached JWS in receipt
mode, without one in checkpoint mode). Both steps are here, so the service
and every verifier agree on one receipt format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import orjson

from crypto._canonical import kept_bytes
from crypto._signer import Signer
from crypto.receipt import core_bytes, hash_of_core_bytes


class HashedCore(NamedTuple):
    canonical: bytes  # JCS(core): what a receipt-mode signature signs
    receipt_hash: str


def hash_core(core: Mapping[str, object]) -> HashedCore:
    """Check the core's fields, canonicalize once, hash."""
    canonical = core_bytes(core)
    return HashedCore(canonical, hash_of_core_bytes(canonical))


def sealed_document(core: Mapping[str, object], receipt_hash: str, signature: str | None) -> bytes:
    """The stored receipt as JSON: core fields, receipt_hash and, in receipt
    mode, the detached JWS of JCS(core)."""
    document = dict(core)
    document["receipt_hash"] = receipt_hash
    if signature is not None:
        document["signature"] = signature
    return kept_bytes(orjson.dumps(document))  # kept with the receipt: see kept_bytes


def seal_receipt(core: Mapping[str, object], key: Signer) -> dict[str, object]:
    """Core fields + receipt_hash + signature (JWS over JCS(core), detached), in one call."""
    hashed = hash_core(core)
    sealed: dict[str, object] = orjson.loads(
        sealed_document(core, hashed.receipt_hash, key.sign_detached(hashed.canonical))
    )
    return sealed
