"""Turn a receipt core into a full receipt: hash and signature."""

from __future__ import annotations

from collections.abc import Mapping

from crypto._signer import Signer
from crypto.receipt import core_bytes, hash_of_core_bytes


def seal_receipt(core: Mapping[str, object], key: Signer) -> dict[str, object]:
    """Core fields + receipt_hash + signature (JWS over JCS(core), detached).

    Canonicalizes once and reuses the bytes for both the hash and the signature.
    """
    payload = core_bytes(core)
    sealed = dict(core)
    sealed["receipt_hash"] = hash_of_core_bytes(payload)
    sealed["signature"] = key.sign_detached(payload)
    return sealed
