"""The signer port: what the service needs from a signing key, wherever the key lives.

Two adapters: `SigningKey` (a PEM private key in this process) and
`KmsSigningKey` (Cloud KMS / Cloud HSM, one HTTP call per signature). Both
build the same JWS: only the raw signature function differs, so the JOSE
side (headers, signing inputs, base64url) lives here once, in `JwsSigning`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from crypto._b64 import b64url_encode

_P256_COORD_BYTES: Final = 32

RawSign = Callable[[bytes], bytes]  # signing input -> JOSE signature bytes (RFC 7518)


class Signer(Protocol):
    """A key that signs receipts (detached JWS) and checkpoints (compact JWS).

    `kid` is the RFC 7638 thumbprint of `public_jwk()`, the key the JWKS
    publishes. Every method may be called from several threads at once.
    """

    @property
    def alg(self) -> str: ...

    @property
    def kid(self) -> str: ...

    def public_jwk(self) -> dict[str, str]: ...

    def sign_compact(self, payload: bytes, typ: str | None = None) -> str: ...

    def sign_detached(self, payload: bytes) -> str: ...

    def sign_detached_many(self, payloads: Sequence[bytes]) -> list[str]: ...

    def close(self) -> None:
        """Release connections and threads (a no-op for a key in memory)."""


def ecdsa_der_to_jose(der: bytes) -> bytes:
    """An ECDSA P-256 signature as JWS carries it: raw r || s, 32 bytes each
    (RFC 7518 3.4), from the DER that OpenSSL and Cloud KMS produce."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(_P256_COORD_BYTES, "big") + s.to_bytes(_P256_COORD_BYTES, "big")


def _header_b64(header: dict[str, str]) -> str:
    return b64url_encode(json.dumps(header, separators=(",", ":")).encode("ascii"))


class JwsSigning:
    """JWS compact serialization around one raw signature function.

    The protected header and its base64url form are computed once: signing is
    on the charge path and is called from several signer threads at once.
    """

    __slots__ = ("_header_b64", "_sign", "alg", "kid")

    def __init__(self, alg: str, kid: str, sign: RawSign) -> None:
        self.alg = alg
        self.kid = kid
        self._sign = sign
        self._header_b64 = _header_b64({"alg": alg, "kid": kid})

    def sign_detached(self, payload: bytes) -> str:
        """Compact JWS over `payload` with the payload part left empty (RFC 7515 App. F)."""
        signing_input = f"{self._header_b64}.{b64url_encode(payload)}".encode("ascii")
        return f"{self._header_b64}..{b64url_encode(self._sign(signing_input))}"

    def sign_compact(self, payload: bytes, typ: str | None = None) -> str:
        """An ordinary compact JWS with `payload` embedded; header {"alg","kid"[,"typ"]}."""
        header_b64 = self._header_b64
        if typ is not None:
            header_b64 = _header_b64({"alg": self.alg, "kid": self.kid, "typ": typ})
        signing_input = f"{header_b64}.{b64url_encode(payload)}"
        return f"{signing_input}.{b64url_encode(self._sign(signing_input.encode('ascii')))}"
