"""The signing keys a service knows: one active signer, every public key ever used."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crypto._errors import JWKSError
from crypto._jwk import public_jwk, public_key_from_jwk
from crypto._keys import SigningKey
from crypto._signer import Signer


class KeyRing:
    """Active signer plus every public key that ever signed (rotation keeps them).

    `jwks()` is the document served at /.well-known/jwks.json: the active key
    first, then older keys in the order they were added.
    """

    def __init__(
        self,
        active: Signer,
        others: Iterable[Mapping[str, str] | SigningKey] = (),
    ) -> None:
        self._active = active
        self._public: dict[str, dict[str, str]] = {active.kid: active.public_jwk()}
        for other in others:
            if isinstance(other, SigningKey):
                self._public.setdefault(other.kid, other.public_jwk())
            else:
                self.add_public_jwk(other)

    @property
    def active(self) -> Signer:
        return self._active

    def add_public_jwk(self, jwk: Mapping[str, str]) -> str:
        """Publish an older public key; returns its kid (its RFC 7638 thumbprint)."""
        canonical = public_jwk(public_key_from_jwk(jwk))
        claimed_kid = jwk.get("kid")
        if claimed_kid is not None and claimed_kid != canonical["kid"]:
            raise JWKSError(f"JWK kid {claimed_kid!r} is not its RFC 7638 thumbprint")
        self._public.setdefault(canonical["kid"], canonical)
        return canonical["kid"]

    def rotate(self, new_active: Signer) -> None:
        """Sign with `new_active` from now on; the old public key stays published."""
        self._public.setdefault(new_active.kid, new_active.public_jwk())
        self._active = new_active

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        keys = [self._public[self._active.kid]]
        keys += [jwk for kid, jwk in self._public.items() if kid != self._active.kid]
        return {"keys": [dict(jwk) for jwk in keys]}
