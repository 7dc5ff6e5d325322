"""A JWKS document parsed once into signature checkers, looked up by kid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crypto._errors import JWKSError
from crypto._jwk import PublicVerifier, public_key_from_jwk, thumbprint, verifier_for
from crypto._path_cache import ProvenNodes

_KNOWN_KTY = frozenset({"RSA", "EC", "OKP"})
_checkpoints_cached_max = 4_096


class _BoundedCache(dict[str, Any]):
    """A dict that forgets its oldest entry past `entries_max`."""

    def __init__(self, entries_max: int) -> None:
        super().__init__()
        self._entries_max = entries_max

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self and len(self) >= self._entries_max:
            del self[next(iter(self))]
        super().__setitem__(key, value)


class TrustedKeys:
    """The public keys of a JWKS (RFC 7517 section 5) by kid.

    Keys of an unknown kty, or not for signatures, are skipped as RFC 7517
    asks; a key of a known kty that does not parse is an error, not a skip,
    so a broken JWKS is reported instead of silently trusting fewer keys.
    """

    __slots__ = ("_by_kid", "checkpoints", "document", "proven")

    def __init__(self, jwks: Mapping[str, object]) -> None:
        if not isinstance(jwks, Mapping):
            raise JWKSError("a JWKS must be a JSON object")
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise JWKSError('a JWKS must have a "keys" array')
        self.document: dict[str, object] = {"keys": list(keys)}  # to hand to worker processes
        self._by_kid: dict[str, PublicVerifier] = {}
        # Checkpoints verified with these keys, by JWS: the receipts of one
        # commit or one export share theirs (see crypto._receipt_log).
        self.checkpoints: dict[str, Any] = _BoundedCache(_checkpoints_cached_max)
        # Inclusion-path nodes already walked to one of those checkpoints' roots.
        self.proven = ProvenNodes()
        for position, jwk in enumerate(keys):
            if not isinstance(jwk, Mapping):
                raise JWKSError(f"JWKS key #{position} is not an object")
            if jwk.get("kty") not in _KNOWN_KTY or jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            try:
                key = public_key_from_jwk(jwk)
                if kid is None:
                    kid = thumbprint(_required(jwk))
                if not isinstance(kid, str):
                    raise JWKSError("kid is not a string")
                verifier = verifier_for(key, kid)
            except JWKSError as error:
                raise JWKSError(f"JWKS key #{position}: {error}") from error
            declared_alg = jwk.get("alg")
            if declared_alg is not None and declared_alg != verifier.alg:
                raise JWKSError(
                    f"JWKS key #{position}: alg {declared_alg!r} does not fit its key type"
                )
            self._by_kid[kid] = verifier
        if not self._by_kid:
            raise JWKSError("the JWKS has no usable signature keys")

    def __reduce__(self) -> tuple[type[TrustedKeys], tuple[dict[str, object]]]:
        # To a worker process as its JWKS (key objects do not pickle); caches start empty.
        return TrustedKeys, (self.document,)

    def get(self, kid: str) -> PublicVerifier | None:
        return self._by_kid.get(kid)

    def __len__(self) -> int:
        return len(self._by_kid)


def _required(jwk: Mapping[str, object]) -> dict[str, str]:
    names = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    return {name: str(jwk[name]) for name in names[str(jwk["kty"])]}


def trusted_keys(jwks: Mapping[str, object] | TrustedKeys) -> TrustedKeys:
    return jwks if isinstance(jwks, TrustedKeys) else TrustedKeys(jwks)
