"""One receipt checked on its own: fields, hash, signature by a known key."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from crypto._b64 import b64url_decode, b64url_encode
from crypto._errors import CanonicalizationError, ReceiptFieldError
from crypto._jwk import SUPPORTED_ALGS
from crypto._trusted import TrustedKeys, trusted_keys
from crypto.receipt import RECEIPT_CORE_FIELDS, core_bytes, hash_of_core_bytes

_RECEIPT_FIELDS = (*RECEIPT_CORE_FIELDS, "receipt_hash", "signature")
_header_cache_entries_max = 64  # one entry per (alg, kid): a handful in practice


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """One receipt's verdict. `reason` is a stable code, `detail` is for people."""

    ok: bool
    reason: str | None = None
    detail: str = ""


class Link(NamedTuple):
    """What the chain check needs from a receipt that verified on its own."""

    receipt_id: str
    customer_id: str
    seq: int
    previous_receipt_hash: str
    receipt_hash: str


OK = VerificationResult(ok=True)


def _fail(reason: str, detail: str) -> VerificationResult:
    return VerificationResult(ok=False, reason=reason, detail=detail)


def check_receipt(receipt: object, keys: TrustedKeys) -> VerificationResult:
    """Hash, then signature, of one receipt; the first problem found wins."""
    if not isinstance(receipt, Mapping):
        return _fail("missing_field", "a receipt must be a JSON object")
    missing = [name for name in _RECEIPT_FIELDS if name not in receipt]
    if missing:
        return _fail("missing_field", f"missing {', '.join(missing)}")
    try:
        payload = core_bytes(receipt)
    except (ReceiptFieldError, CanonicalizationError) as error:
        return _fail("invalid_field", str(error))
    claimed_hash = receipt["receipt_hash"]
    computed_hash = hash_of_core_bytes(payload)
    if claimed_hash != computed_hash:
        return _fail(
            "hash_mismatch",
            f"receipt_hash is {claimed_hash!r} but the core fields hash to {computed_hash}",
        )
    return _check_signature(receipt["signature"], payload, keys)


@functools.lru_cache(maxsize=_header_cache_entries_max)
def _protected_header(header_b64: str) -> tuple[str | None, str | None, str | None, str | None]:
    """(alg, kid, typ, problem) of a protected header; cached, every receipt repeats it."""
    try:
        header = json.loads(b64url_decode(header_b64))
    except ValueError:
        return None, None, None, "protected header is not base64url JSON"
    if not isinstance(header, dict):
        return None, None, None, "protected header is not a JSON object"
    if "crit" in header or header.get("b64", True) is not True:
        return None, None, None, "protected header asks for unsupported extensions (crit/b64)"
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    return (
        alg if isinstance(alg, str) else repr(alg),
        kid if isinstance(kid, str) else None,
        typ if isinstance(typ, str) else None,
        None,
    )


def header_typ(header_b64: str) -> str | None:
    """The `typ` of a protected header (None if absent or unreadable)."""
    return _protected_header(header_b64)[2]


def _check_signature(signature: object, payload: bytes, keys: TrustedKeys) -> VerificationResult:
    if not isinstance(signature, str):
        return _fail("malformed_signature", "signature is not a string")
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        return _fail("malformed_signature", "signature is not compact JWS with a detached payload")
    return check_compact(parts[0], b64url_encode(payload), parts[2], keys)


def check_compact(
    header_b64: str, payload_b64: str, signature_b64: str, keys: TrustedKeys
) -> VerificationResult:
    """The one JWS check (header, alg, kid, signature) for receipts and checkpoints alike."""
    alg, kid, _, problem = _protected_header(header_b64)
    if problem is not None:
        return _fail("malformed_signature", problem)
    if alg not in SUPPORTED_ALGS:
        return _fail("unsupported_alg", f"alg {alg} is not one of {', '.join(SUPPORTED_ALGS)}")
    if kid is None:
        return _fail("unknown_kid", "protected header has no kid")
    verifier = keys.get(kid)
    if verifier is None:
        return _fail("unknown_kid", f"kid {kid!r} is not in the JWKS")
    if verifier.alg != alg:
        return _fail("bad_signature", f"header alg {alg} but key {kid!r} is {verifier.alg}")
    try:
        signature_bytes = b64url_decode(signature_b64)
    except ValueError:
        return _fail("malformed_signature", "signature value is not base64url")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    if not verifier.check(signature_bytes, signing_input):
        return _fail("bad_signature", f"signature does not match the payload (kid {kid!r})")
    return OK


def link_of(receipt: Mapping[str, object]) -> Link:
    """The chain fields of a receipt that passed check_receipt (types already checked)."""
    return Link(
        str(receipt["receipt_id"]),
        str(receipt["customer_id"]),
        int(receipt["seq"]),  # type: ignore[call-overload]
        str(receipt["previous_receipt_hash"]),
        str(receipt["receipt_hash"]),
    )


def receipt_id_of(receipt: object) -> str | None:
    if isinstance(receipt, Mapping):
        receipt_id = receipt.get("receipt_id")
        if isinstance(receipt_id, str):
            return receipt_id
    return None


def verify_receipt(
    receipt: Mapping[str, object], jwks: Mapping[str, object] | TrustedKeys
) -> VerificationResult:
    """Verify one receipt: every field present, hash recomputed, signature by a known key.

    Extra fields (amount, timestamp, status...) are ignored: the hash covers
    exactly RECEIPT_CORE_FIELDS. A malformed JWKS raises JWKSError.
    """
    return check_receipt(receipt, trusted_keys(jwks))
