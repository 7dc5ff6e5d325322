"""Checkpoints are ordinary compact JWS: PyJWT and joserfc verify them with the JWKS
alone, and every way of getting one wrong is refused with its own reason."""

from __future__ import annotations

import hashlib
import json
import warnings

import jwt
import pytest
import rfc8785
from joserfc import jws
from joserfc.jwk import KeySet

from crypto import (
    CHECKPOINT_TYP,
    Checkpoint,
    CheckpointError,
    KeyRing,
    SigningKey,
    checkpoint_payload,
    sign_checkpoint,
    verify_checkpoint,
)
from crypto._b64 import b64url_decode, b64url_encode
from tests.crypto.conftest import session_key

ROOT = hashlib.sha256(b"some root").digest()
CHECKPOINT = Checkpoint("billing.example/log", 1234, ROOT, "2025-03-01T12:00:00.123456Z")


def _published_jwks(key: SigningKey) -> dict[str, object]:
    document: dict[str, object] = json.loads(json.dumps(KeyRing(key).jwks()))
    return document


def test_payload_is_rfc8785_json_with_a_prefixed_hex_root() -> None:
    expected = {
        "origin": "billing.example/log",
        "tree_size": 1234,
        "root_hash": "sha256:" + ROOT.hex(),
        "timestamp": "2025-03-01T12:00:00.123456Z",
    }
    assert checkpoint_payload(CHECKPOINT) == rfc8785.dumps(expected)


def test_pyjwt_verifies_a_checkpoint_with_the_jwks_alone(any_key: SigningKey) -> None:
    token = sign_checkpoint(CHECKPOINT, any_key)
    jwks = jwt.PyJWKSet.from_dict(_published_jwks(any_key))
    header = jwt.get_unverified_header(token)
    assert header == {"alg": any_key.alg, "kid": any_key.kid, "typ": CHECKPOINT_TYP}
    claims = jwt.decode(token, key=jwks[header["kid"]], algorithms=[header["alg"]])
    assert claims["tree_size"] == 1234 and claims["root_hash"] == "sha256:" + ROOT.hex()
    assert verify_checkpoint(token, _published_jwks(any_key)) == CHECKPOINT


def test_joserfc_verifies_a_checkpoint_with_the_jwks_alone(any_key: SigningKey) -> None:
    key_set = KeySet.import_key_set(_published_jwks(any_key))  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags "EdDSA" as deprecated by RFC 9864
        token = jws.deserialize_compact(
            sign_checkpoint(CHECKPOINT, any_key), key_set, algorithms=[any_key.alg]
        )
    assert token.payload == checkpoint_payload(CHECKPOINT)


def _with_header(token: str, **changes: object) -> str:
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = {**json.loads(b64url_decode(header_b64)), **changes}
    new_header = b64url_encode(json.dumps(header).encode())
    return f"{new_header}.{payload_b64}.{signature_b64}"


def _flip_byte(token: str, part: int) -> str:
    parts = token.split(".")
    raw = bytearray(b64url_decode(parts[part]))
    raw[len(raw) // 2] ^= 0x01
    parts[part] = b64url_encode(bytes(raw))
    return ".".join(parts)


def test_wrong_checkpoints_are_refused_with_their_own_reason() -> None:
    key, stranger = session_key("ES256"), SigningKey.generate("ES256")
    jwks = _published_jwks(key)
    token = sign_checkpoint(CHECKPOINT, key)
    not_a_checkpoint = key.sign_compact(checkpoint_payload(CHECKPOINT), typ="JWT")
    bad_payload = key.sign_compact(b'{"origin":"x"}', typ=CHECKPOINT_TYP)
    padded = key.sign_compact(checkpoint_payload(CHECKPOINT) + b" ", typ=CHECKPOINT_TYP)
    cases = {
        "signed by an unknown key": (sign_checkpoint(CHECKPOINT, stranger), "unknown_kid"),
        "a changed payload byte": (_flip_byte(token, 1), "bad_signature"),
        "a changed signature byte": (_flip_byte(token, 2), "bad_signature"),
        "alg none": (_with_header(token, alg="none"), "unsupported_alg"),
        "alg HS256": (_with_header(token, alg="HS256"), "unsupported_alg"),
        "alg of another key type": (_with_header(token, alg="RS256"), "bad_signature"),
        "detached payload": (token.split(".")[0] + ".." + token.split(".")[2], "malformed"),
        "not three parts": (token + ".x", "malformed"),
        "header not JSON": ("e30x." + token.split(".", 1)[1], "malformed"),
        "another typ": (not_a_checkpoint, "malformed"),
        "payload missing fields": (bad_payload, "invalid_payload"),
        "payload not canonical": (padded, "invalid_payload"),
    }
    for name, (candidate, reason) in cases.items():
        with pytest.raises(CheckpointError) as error:
            verify_checkpoint(candidate, jwks)
        assert error.value.reason == reason, name
    assert verify_checkpoint(token, jwks) == CHECKPOINT


@pytest.mark.parametrize(
    "fields",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"tree_size": -1},
        {"tree_size": 2**53},
        {"tree_size": True},
        {"root_hash": b"\x00" * 31},
        {"timestamp": "2025-03-01 12:00:00"},
    ],
)
def test_checkpoint_fields_are_checked_when_built(fields: dict[str, object]) -> None:
    values: dict[str, object] = {
        "origin": "o",
        "tree_size": 1,
        "root_hash": ROOT,
        "timestamp": "2025-03-01T12:00:00Z",
        **fields,
    }
    with pytest.raises(ValueError):
        Checkpoint(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "node",
    ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, " " + "ab" * 31 + "a", "ab" * 32 + "\n", 7],
)
def test_an_inclusion_node_must_be_64_lowercase_hex_digits(node: object) -> None:
    from crypto import LogBlockError
    from crypto._receipt_log import parse_log_block

    block = {"index": 0, "tree_size": 2, "inclusion": ["cd" * 32, node], "checkpoint": "a.b.c"}
    with pytest.raises(LogBlockError) as raised:
        parse_log_block(block)
    assert raised.value.reason == "invalid_field"
    assert parse_log_block({**block, "inclusion": ["cd" * 32]})[2] == [bytes.fromhex("cd" * 32)]
