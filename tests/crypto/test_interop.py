"""Our receipts verify with independent JOSE libraries, given only the JWKS document."""

from __future__ import annotations

import hashlib
import json
import warnings

import jwt
import pytest
import rfc8785
from joserfc import jws
from joserfc.jwk import KeySet

from crypto import RECEIPT_CORE_FIELDS, KeyRing, SigningKey
from tests.crypto.conftest import build_chain


def _jwks_as_published(key: SigningKey) -> dict[str, object]:
    # Round-trip through JSON text: the customer only ever sees the document.
    document: dict[str, object] = json.loads(json.dumps(KeyRing(key).jwks()))
    return document


def _payload_of(receipt: dict[str, object]) -> bytes:
    core = {name: receipt[name] for name in RECEIPT_CORE_FIELDS}
    return rfc8785.dumps(core)


def test_hash_recomputed_with_hashlib_and_rfc8785(any_key: SigningKey) -> None:
    for receipt in build_chain(any_key, 3):
        served = {**receipt, "amount": "1.25", "status": "accepted"}
        digest = hashlib.sha256(_payload_of(served)).hexdigest()
        assert served["receipt_hash"] == "sha256:" + digest


def test_pyjwt_verifies_with_the_jwks(any_key: SigningKey) -> None:
    # PyJWT's detached_payload flag is for RFC 7797 (b64: false) only; an RFC 7515
    # Appendix F detached signature is checked by putting the payload back.
    jwks = jwt.PyJWKSet.from_dict(_jwks_as_published(any_key))
    for receipt in build_chain(any_key, 3):
        header_b64, empty, signature_b64 = str(receipt["signature"]).split(".")
        assert empty == ""
        header = jwt.get_unverified_header(str(receipt["signature"]))
        assert set(header) == {"alg", "kid"}
        payload_b64 = jwt.utils.base64url_encode(_payload_of(receipt)).decode()
        decoded = jwt.api_jws.PyJWS().decode_complete(
            f"{header_b64}.{payload_b64}.{signature_b64}",
            key=jwks[header["kid"]],
            algorithms=[any_key.alg],
        )
        assert decoded["payload"] == _payload_of(receipt)


def test_joserfc_verifies_detached_content_with_the_jwks(any_key: SigningKey) -> None:
    key_set = KeySet.import_key_set(_jwks_as_published(any_key))  # type: ignore[arg-type]
    receipts = build_chain(any_key, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags "EdDSA" as deprecated by RFC 9864
        for receipt in receipts:
            token = jws.deserialize_compact(
                str(receipt["signature"]),
                key_set,
                payload=_payload_of(receipt),
                algorithms=[any_key.alg],
            )
            assert token.headers() == {"alg": any_key.alg, "kid": any_key.kid}
        tampered = {**receipts[0], "amount_minor": 1}
        with pytest.raises(Exception, match="signature"):
            jws.deserialize_compact(
                str(tampered["signature"]),
                key_set,
                payload=_payload_of(tampered),
                algorithms=[any_key.alg],
            )
