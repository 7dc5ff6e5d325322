"""Private signing keys: JWS compact signatures with a detached payload (RFC 7515 App. F)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
from collections.abc import Callable, Sequence
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from crypto._errors import JWKSError, KeyLoadError
from crypto._jwk import SUPPORTED_ALGS, alg_for_public_key, public_jwk, rsa_key_bits_min
from crypto._signer import JwsSigning, ecdsa_der_to_jose

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_SignFunction = Callable[[bytes], bytes]

_RSA_PUBLIC_EXPONENT: Final = 65537
_KEY_FILE_MODE: Final = 0o600
_DATA_DIR_MODE: Final = 0o700


class SigningKey:
    """A private key in this process that signs receipt payloads (the PEM
    adapter of the `Signer` port); safe to share between threads."""

    __slots__ = ("_jws", "_private_key", "_public_jwk", "alg", "kid")

    def __init__(self, private_key: PrivateKey) -> None:
        try:
            self.alg: str = alg_for_public_key(private_key.public_key())
        except JWKSError as error:
            raise KeyLoadError(str(error)) from error
        self._private_key = private_key
        self._public_jwk = public_jwk(private_key.public_key())
        self.kid: str = self._public_jwk["kid"]
        self._jws = JwsSigning(self.alg, self.kid, _signer(private_key))

    @classmethod
    def generate(cls, alg: str = "RS256") -> SigningKey:
        """A fresh key for `alg` (RS256: RSA-2048, ES256: P-256, EdDSA: Ed25519)."""
        if alg == "RS256":
            key: PrivateKey = rsa.generate_private_key(_RSA_PUBLIC_EXPONENT, rsa_key_bits_min)
        elif alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            choices = ", ".join(SUPPORTED_ALGS)
            raise KeyLoadError(f"unsupported alg {alg!r}; choose one of {choices}")
        return cls(key)

    def sign_detached(self, payload: bytes) -> str:
        """Compact JWS over `payload` with the payload part left empty."""
        return self._jws.sign_detached(payload)

    def sign_compact(self, payload: bytes, typ: str | None = None) -> str:
        """An ordinary compact JWS with `payload` embedded; header {"alg","kid"[,"typ"]}."""
        return self._jws.sign_compact(payload, typ)

    def sign_detached_many(self, payloads: Sequence[bytes]) -> list[str]:
        """`sign_detached` of each payload, in order (as `SigningProcess` offers)."""
        return [self.sign_detached(payload) for payload in payloads]

    def public_jwk(self) -> dict[str, str]:
        return dict(self._public_jwk)

    def close(self) -> None:
        """Nothing to release: the key is in memory (the `Signer` port asks)."""

    def private_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: for writing to a 0600 file, never to a log."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"


def _signer(key: PrivateKey) -> _SignFunction:
    if isinstance(key, rsa.RSAPrivateKey):
        rsa_key = key

        def sign_rsa(data: bytes) -> bytes:
            return rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

        return sign_rsa
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_key = key

        def sign_ec(data: bytes) -> bytes:
            return ecdsa_der_to_jose(ec_key.sign(data, ec.ECDSA(hashes.SHA256())))

        return sign_ec
    return key.sign


def load_private_key_pem(path: pathlib.Path) -> SigningKey:
    """Load an unencrypted PEM private key; alg follows the key type."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KeyLoadError(f"cannot read key file {path}: {error.strerror}") from error
    return _key_from_pem(data, str(path))


def _key_from_pem(data: bytes, source: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise KeyLoadError(f"{source} is not an unencrypted PEM private key: {error}") from error
    if not isinstance(key, PrivateKey):
        raise KeyLoadError(f"{source}: unsupported key type {type(key).__name__}")
    return SigningKey(key)


def dev_key_path(data_dir: pathlib.Path, alg: str) -> pathlib.Path:
    return data_dir / f"receipt-signing-key-{alg.lower()}.pem"


def load_or_create_dev_key(data_dir: pathlib.Path, alg: str = "RS256") -> SigningKey:
    """Development signing key: loaded from `data_dir`, generated there on first use
    (see `write_secret_file`: when two processes race, both use the first key)."""
    path = dev_key_path(data_dir, alg)
    if path.exists():
        key = load_private_key_pem(path)
        if key.alg != alg:
            raise KeyLoadError(f"{path} holds an {key.alg} key, not {alg}")
        return key
    key = SigningKey.generate(alg)
    if not write_secret_file(path, key.private_pem()):
        return load_or_create_dev_key(data_dir, alg)  # another process won the race
    return key


def write_secret_file(path: pathlib.Path, data: bytes) -> bool:
    """Create `path` (0600) holding `data`; False if it already exists.

    The data goes to a 0600 temporary file that is hard-linked into place, so
    the file is never visible with other permissions or half-written, and
    when two processes race the first link wins.
    """
    path.parent.mkdir(mode=_DATA_DIR_MODE, parents=True, exist_ok=True)
    temp_path = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        try:
            os.link(temp_path, path)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
    return True
