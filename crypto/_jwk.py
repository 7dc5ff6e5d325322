"""Public keys as JWKs (RFC 7517/7518), RFC 7638 thumbprints, and JWS signature checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from crypto._b64 import b64url_decode, b64url_encode, int_to_b64url
from crypto._errors import JWKSError

SUPPORTED_ALGS: Final = ("RS256", "ES256", "EdDSA")
rsa_key_bits_min: Final = 2048
_P256_COORD_BYTES: Final = 32

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def alg_for_public_key(key: PublicKey) -> str:
    """The JWS alg a key of this type signs with; JWKSError for unsupported types."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < rsa_key_bits_min:
            raise JWKSError(f"RSA key of {key.key_size} bits; at least {rsa_key_bits_min} needed")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise JWKSError(f"EC curve {key.curve.name} unsupported; only P-256 (ES256)")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise JWKSError(f"unsupported key type {type(key).__name__}")


def _required_members(key: PublicKey) -> dict[str, str]:
    """The RFC 7638 required members of the key's JWK."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": int_to_b64url(numbers.n), "e": int_to_b64url(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": int_to_b64url(point.x, _P256_COORD_BYTES),
            "y": int_to_b64url(point.y, _P256_COORD_BYTES),
        }
    raw = key.public_bytes_raw()
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def thumbprint(members: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of the required members."""
    text = json.dumps(dict(members), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return b64url_encode(hashlib.sha256(text.encode("ascii")).digest())


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK of `key`, with kid (its thumbprint), alg and use."""
    alg = alg_for_public_key(key)
    members = _required_members(key)
    return {**members, "kid": thumbprint(members), "alg": alg, "use": "sig"}


def _member(jwk: Mapping[str, object], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise JWKSError(f"JWK member {name!r} missing or not a string")
    return value


def _b64_int(jwk: Mapping[str, object], name: str) -> int:
    try:
        return int.from_bytes(b64url_decode(_member(jwk, name)), "big")
    except ValueError as error:
        raise JWKSError(f"JWK member {name!r} is not base64url") from error


def public_key_from_jwk(jwk: Mapping[str, object]) -> PublicKey:
    """Parse a public JWK; JWKSError if malformed or unsupported."""
    kty = _member(jwk, "kty")
    try:
        if kty == "RSA":
            return rsa.RSAPublicNumbers(_b64_int(jwk, "e"), _b64_int(jwk, "n")).public_key()
        crv = _member(jwk, "crv")
        if kty == "EC" and crv == "P-256":
            point = ec.EllipticCurvePublicNumbers(
                _b64_int(jwk, "x"), _b64_int(jwk, "y"), ec.SECP256R1()
            )
            return point.public_key()
        if kty == "OKP" and crv == "Ed25519":
            raw = b64url_decode(_member(jwk, "x"))
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as error:
        if isinstance(error, JWKSError):
            raise
        raise JWKSError(f"invalid {kty} JWK: {error}") from error
    raise JWKSError(f"unsupported JWK kty={kty!r}")


@dataclass(frozen=True, slots=True)
class PublicVerifier:
    """One known public key: checks a JWS signature over a signing input."""

    kid: str
    alg: str
    check: Callable[[bytes, bytes], bool]  # (signature, signing_input) -> ok


def verifier_for(key: PublicKey, kid: str) -> PublicVerifier:
    alg = alg_for_public_key(key)
    if isinstance(key, rsa.RSAPublicKey):
        rsa_key = key

        def check_rsa(signature: bytes, signing_input: bytes) -> bool:
            try:
                rsa_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return False
            return True

        return PublicVerifier(kid, alg, check_rsa)
    if isinstance(key, ec.EllipticCurvePublicKey):
        ec_key = key

        def check_ec(signature: bytes, signing_input: bytes) -> bool:
            # JWS carries ECDSA as raw r || s (RFC 7518 3.4), cryptography wants DER.
            if len(signature) != 2 * _P256_COORD_BYTES:
                return False
            r = int.from_bytes(signature[:_P256_COORD_BYTES], "big")
            s = int.from_bytes(signature[_P256_COORD_BYTES:], "big")
            try:
                ec_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                return False
            return True

        return PublicVerifier(kid, alg, check_ec)
    ed_key = key

    def check_ed(signature: bytes, signing_input: bytes) -> bool:
        try:
            ed_key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    return PublicVerifier(kid, alg, check_ed)
