"""Compact JWS checks shared by receipts (detached payload) and checkpoints
(embedded payload): one verifier for both, never two."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from crypto._b64 import b64url_decode
from crypto._jwk import SUPPORTED_ALGS
from crypto._trusted import TrustedKeys

_header_cache_entries_max = 64  # one entry per (alg, kid): a handful in practice


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """One receipt's verdict. `reason` is a stable code, `detail` is for people."""

    ok: bool
    reason: str | None = None
    detail: str = ""


OK = VerificationResult(ok=True)


def fail(reason: str, detail: str) -> VerificationResult:
    return VerificationResult(ok=False, reason=reason, detail=detail)


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


def check_compact(
    header_b64: str, payload_b64: str, signature_b64: str, keys: TrustedKeys
) -> VerificationResult:
    """The one JWS check (header, alg, kid, signature) for receipts and checkpoints alike."""
    alg, kid, _, problem = _protected_header(header_b64)
    if problem is not None:
        return fail("malformed_signature", problem)
    if alg not in SUPPORTED_ALGS:
        return fail("unsupported_alg", f"alg {alg} is not one of {', '.join(SUPPORTED_ALGS)}")
    if kid is None:
        return fail("unknown_kid", "protected header has no kid")
    verifier = keys.get(kid)
    if verifier is None:
        return fail("unknown_kid", f"kid {kid!r} is not in the JWKS")
    if verifier.alg != alg:
        return fail("bad_signature", f"header alg {alg} but key {kid!r} is {verifier.alg}")
    try:
        signature_bytes = b64url_decode(signature_b64)
    except ValueError:
        return fail("malformed_signature", "signature value is not base64url")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    if not verifier.check(signature_bytes, signing_input):
        return fail("bad_signature", f"signature does not match the payload (kid {kid!r})")
    return OK
