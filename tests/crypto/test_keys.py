"""Keys: dev key file mode, PEM loading, kid = RFC 7638 thumbprint, rotation, thread safety."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import pathlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from crypto import (
    KeyLoadError,
    KeyRing,
    SigningKey,
    load_or_create_dev_key,
    load_private_key_pem,
    verify_chain,
)
from tests.crypto.conftest import build_chain, session_key


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_dev_key_is_created_once_with_mode_0600(tmp_path: pathlib.Path, alg: str) -> None:
    data_dir = tmp_path / "data"
    old_umask = os.umask(0)  # even a permissive umask must not widen the key file
    try:
        first = load_or_create_dev_key(data_dir, alg)
    finally:
        os.umask(old_umask)
    files = list(data_dir.iterdir())
    assert len(files) == 1, "no temporary file may be left behind"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    again = load_or_create_dev_key(data_dir, alg)
    assert (again.kid, again.alg) == (first.kid, alg)


def test_dev_key_of_another_alg_in_the_same_file_is_refused(tmp_path: pathlib.Path) -> None:
    load_or_create_dev_key(tmp_path, "ES256")
    (tmp_path / "receipt-signing-key-rs256.pem").write_bytes(
        (tmp_path / "receipt-signing-key-es256.pem").read_bytes()
    )
    with pytest.raises(KeyLoadError, match="ES256"):
        load_or_create_dev_key(tmp_path, "RS256")


@pytest.mark.parametrize(
    ("private_key", "alg"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (rsa.generate_private_key(65537, 2048), "RS256"),
    ],
)
def test_pem_alg_is_inferred_from_the_key_type(
    tmp_path: pathlib.Path, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, alg: str
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    assert load_private_key_pem(path).alg == alg


def test_ed25519_pem_round_trips(tmp_path: pathlib.Path) -> None:
    key = session_key("EdDSA")
    path = tmp_path / "ed.pem"
    path.write_bytes(key.private_pem())
    loaded = load_private_key_pem(path)
    assert (loaded.alg, loaded.kid) == ("EdDSA", key.kid)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_bad_pem_is_a_clear_error(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(KeyLoadError):
        load_private_key_pem(path)


def test_unsupported_keys_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeyLoadError, match="P-256"):
        SigningKey(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(KeyLoadError, match="2048"):
        SigningKey(rsa.generate_private_key(65537, 1024))
    with pytest.raises(KeyLoadError, match="alg"):
        SigningKey.generate("HS256")
    with pytest.raises(KeyLoadError, match="cannot read"):
        load_private_key_pem(tmp_path / "missing.pem")


def test_kid_is_the_rfc7638_thumbprint(any_key: SigningKey) -> None:
    jwk = any_key.public_jwk()
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    assert any_key.kid == base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    assert (jwk["kid"], jwk["alg"], jwk["use"]) == (any_key.kid, any_key.alg, "sig")


def test_jwks_keeps_every_key_after_rotation_and_old_receipts_verify() -> None:
    old_key, new_key = session_key("RS256"), session_key("EdDSA")
    old_receipts = build_chain(old_key, 3)
    ring = KeyRing(active=old_key)
    ring.rotate(new_key)
    assert ring.active is new_key
    kids = [jwk["kid"] for jwk in ring.jwks()["keys"]]
    assert kids == [new_key.kid, old_key.kid]
    # A service restarted with only the new private key still publishes the old public one.
    restarted = KeyRing(active=new_key, others=[old_key.public_jwk()])
    assert restarted.jwks() == ring.jwks()
    assert verify_chain(old_receipts, restarted.jwks()).ok
    assert not verify_chain(old_receipts, KeyRing(new_key).jwks()).ok


def test_add_public_jwk_refuses_a_kid_that_is_not_the_thumbprint() -> None:
    ring = KeyRing(session_key("RS256"))
    forged = {**session_key("ES256").public_jwk(), "kid": session_key("RS256").kid}
    with pytest.raises(ValueError, match="thumbprint"):
        ring.add_public_jwk(forged)


def test_signing_from_parallel_threads_gives_valid_signatures(any_key: SigningKey) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        chains = list(pool.map(lambda n: build_chain(any_key, 25, f"cus_{n}"), range(8)))
    jwks = KeyRing(any_key).jwks()
    assert all(verify_chain(chain, jwks).verified == 25 for chain in chains)
