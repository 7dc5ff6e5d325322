"""The signer port: the PEM key and Cloud KMS (against a fake speaking KMS's
REST wire format) sign the same JWS, which a standard JOSE library (PyJWT)
verifies with the published JWK; the KMS adapter's integrity checks,
retries and deadlines."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from crypto import (
    CHECKPOINT_TYP,
    Checkpoint,
    GoogleAccessToken,
    KeyLoadError,
    KeyRing,
    KmsError,
    KmsSigningKey,
    Signer,
    SigningKey,
    TrustedKeys,
    seal_receipt,
    sign_checkpoint,
    verify_checkpoint,
    verify_receipt,
)
from crypto._jwk import thumbprint
from crypto._kms import KmsClient, kms_attempts_max
from tests.crypto.conftest import make_core
from tests.fakes.kms_server import FakeKeyVersion, FakeKms, generate_key

ALGS = ("RS256", "ES256", "EdDSA")


@pytest.fixture(scope="module")
def fake_kms() -> Iterator[FakeKms]:
    fake = FakeKms().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def kms(fake_kms: FakeKms) -> Iterator[FakeKms]:
    """The shared fake with its knobs reset for each test."""
    fake_kms.delay_ms = 0.0
    fake_kms.fail_next()  # nothing queued
    yield fake_kms
    while fake_kms._take_failure() is not None:  # a test's unused failures end with it
        pass


def kms_key(kms: FakeKms, alg: str = "RS256", **client: int) -> KmsSigningKey:
    version = kms.add_key(alg)
    return KmsSigningKey(version.name, KmsClient(kms.url, **client))


@pytest.fixture(params=[f"{adapter}-{alg}" for adapter in ("pem", "kms") for alg in ALGS])
def signer(request: pytest.FixtureRequest, kms: FakeKms) -> Iterator[Signer]:
    adapter, alg = request.param.split("-")
    key: Signer = SigningKey.generate(alg) if adapter == "pem" else kms_key(kms, alg)
    yield key
    key.close()


# -- the contract: every adapter -------------------------------------------------
def test_a_checkpoint_verifies_with_pyjwt_and_the_published_jwk(signer: Signer) -> None:
    checkpoint = Checkpoint("billing.example/receipts", 7, bytes(range(32)), "2025-03-01T12:00:00Z")
    token = sign_checkpoint(checkpoint, signer)
    jwks = KeyRing(signer).jwks()
    header = jwt.get_unverified_header(token)
    assert header == {"alg": signer.alg, "kid": signer.kid, "typ": CHECKPOINT_TYP}
    key = jwt.PyJWKSet.from_dict(jwks)[signer.kid]
    decoded = jwt.api_jws.PyJWS().decode_complete(token, key=key, algorithms=[signer.alg])
    assert json.loads(decoded["payload"])["tree_size"] == 7
    assert verify_checkpoint(token, jwks) == checkpoint


def test_kid_is_the_rfc7638_thumbprint_of_the_public_jwk(signer: Signer) -> None:
    jwk = signer.public_jwk()
    members = {name: jwk[name] for name in ("kty", "n", "e", "crv", "x", "y") if name in jwk}
    assert signer.kid == jwk["kid"] == thumbprint(members)
    assert jwk["alg"] == signer.alg


def test_detached_receipt_signatures_verify_in_order(signer: Signer) -> None:
    cores = [make_core(seq, "sha256:" + "0" * 64) for seq in range(1, 6)]
    payloads = [json.dumps(core).encode() for core in cores]  # any bytes; order is the point
    signatures = signer.sign_detached_many(payloads)
    trusted = TrustedKeys(KeyRing(signer).jwks())
    assert len(signatures) == len(payloads)
    for payload, signature in zip(payloads, signatures, strict=True):
        header, _, sig = signature.split(".")
        token = f"{header}.{jwt.utils.base64url_encode(payload).decode()}.{sig}"
        key = jwt.PyJWKSet.from_dict(KeyRing(signer).jwks())[signer.kid]
        assert jwt.api_jws.PyJWS().decode(token, key=key, algorithms=[signer.alg]) == payload
    sealed = seal_receipt(cores[0], signer)
    assert verify_receipt(sealed, trusted).ok


# -- Cloud KMS specifics -----------------------------------------------------------
def test_ecdsa_comes_back_from_kms_as_der_and_goes_out_as_raw_r_s(kms: FakeKms) -> None:
    key = kms_key(kms, "ES256")
    signature = key.sign_detached(b"payload").split(".")[2]
    assert len(jwt.utils.base64url_decode(signature)) == 64  # RFC 7518 3.4, not DER (70-72)


def test_a_corrupted_signature_crc_is_retried_then_signed(kms: FakeKms) -> None:
    key = kms_key(kms)
    before = kms.sign_calls
    kms.fail_next("crc", "unverified")
    token = key.sign_compact(b"{}", typ=CHECKPOINT_TYP)
    assert kms.sign_calls - before == 3
    jwt.api_jws.PyJWS().decode(token, key=jwt.PyJWK(key.public_jwk()), algorithms=["RS256"])


def test_a_crc_that_never_matches_is_refused(kms: FakeKms) -> None:
    key = kms_key(kms)
    before = kms.sign_calls
    kms.fail_next(*["crc"] * kms_attempts_max)
    with pytest.raises(KmsError, match="CRC32C"):
        key.sign_compact(b"{}")
    assert kms.sign_calls - before == kms_attempts_max


def test_a_signature_the_public_key_does_not_verify_is_refused(kms: FakeKms) -> None:
    key = kms_key(kms)
    kms.fail_next("bad_signature")
    with pytest.raises(KmsError, match="does not verify"):
        key.sign_detached(b"payload")


@pytest.mark.parametrize("status", ["503", "500", "429"])
def test_unavailable_and_throttled_are_retried(kms: FakeKms, status: str) -> None:
    key = kms_key(kms)
    before = kms.sign_calls
    kms.fail_next(status, status)
    key.sign_detached(b"payload")
    assert kms.sign_calls - before == 3


def test_permission_denied_is_not_retried_and_says_why(kms: FakeKms) -> None:
    key = kms_key(kms)
    before = kms.sign_calls
    kms.fail_next("403")
    with pytest.raises(KmsError, match=r"HTTP 403.*PERMISSION_DENIED"):
        key.sign_detached(b"payload")
    assert kms.sign_calls - before == 1


def test_an_outage_fails_within_the_deadline(kms: FakeKms) -> None:
    key = kms_key(kms, attempt_timeout_ms=5_000, deadline_ms=600)
    kms.fail_next(*["503"] * 100)
    started = time.monotonic()
    with pytest.raises(KmsError, match="HTTP 503"):
        key.sign_detached(b"payload")
    assert time.monotonic() - started < 1.5


def test_a_hung_call_times_out_and_the_next_attempt_signs(kms: FakeKms) -> None:
    key = kms_key(kms, attempt_timeout_ms=300, deadline_ms=3_000)
    kms.fail_next("hang")
    started = time.monotonic()
    key.sign_detached(b"payload")
    assert 0.3 <= time.monotonic() - started < 2.0


def test_a_hang_past_the_deadline_is_an_error_not_a_wait(kms: FakeKms) -> None:
    key = kms_key(kms, attempt_timeout_ms=300, deadline_ms=500)
    kms.fail_next("hang", "hang")
    started = time.monotonic()
    with pytest.raises(KmsError, match="TimeoutError"):
        key.sign_detached(b"payload")
    assert time.monotonic() - started < 1.5


def test_many_receipt_signatures_run_concurrently(kms: FakeKms) -> None:
    key = kms_key(kms)
    kms.delay_ms = 50.0
    started = time.monotonic()
    signatures = key.sign_detached_many([b"%d" % i for i in range(32)])
    elapsed_s = time.monotonic() - started
    key.close()
    assert len(set(signatures)) == 32
    assert elapsed_s < 32 * 0.05 / 4, f"32 signatures of 50 ms took {elapsed_s:.2f} s"


def test_a_bearer_token_goes_with_every_call(kms: FakeKms) -> None:
    version = kms.add_key("ES256")
    key = KmsSigningKey(version.name, KmsClient(kms.url, access_token=lambda: "ya29.token"))
    key.sign_detached(b"payload")
    assert kms.authorizations[-1] == "Bearer ya29.token"


def test_an_unknown_key_version_fails_at_start_in_one_line(kms: FakeKms) -> None:
    uri = "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/nope/cryptoKeyVersions/1"
    with pytest.raises(KeyLoadError, match=r"HTTP 404.*NOT_FOUND") as error:
        KmsSigningKey.from_uri(uri, endpoint=kms.url)
    assert "\n" not in str(error.value)


def test_a_kms_algorithm_receipts_do_not_use_is_refused(kms: FakeKms) -> None:
    name = "projects/p/locations/global/keyRings/r/cryptoKeys/pss/cryptoKeyVersions/1"
    kms.keys[name] = FakeKeyVersion(name, "RSA_SIGN_PSS_2048_SHA256", generate_key("RS256"))
    with pytest.raises(KeyLoadError, match="RSA_SIGN_PSS_2048_SHA256"):
        KmsSigningKey.from_uri("gcpkms://" + name, endpoint=kms.url)


@pytest.mark.parametrize(
    "uri",
    [
        "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k",
        "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1/x",
        "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/one",
    ],
)
def test_a_malformed_key_uri_is_refused(uri: str) -> None:
    with pytest.raises(KeyLoadError, match="gcpkms://projects/P"):
        KmsSigningKey.from_uri(uri, endpoint="http://127.0.0.1:9")


def test_without_google_credentials_the_start_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(KeyLoadError, match="no Google credentials for Cloud KMS") as error:
        GoogleAccessToken()
    assert "\n" not in str(error.value)
