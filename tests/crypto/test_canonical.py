"""The receipt core's canonical bytes and hash, checked against rfc8785 + hashlib directly."""

from __future__ import annotations

import hashlib

import pytest
import rfc8785

from crypto import (
    GENESIS_HASH,
    RECEIPT_CORE_FIELDS,
    CanonicalizationError,
    ReceiptFieldError,
    canonical_json,
    receipt_hash,
)
from crypto.receipt import core_bytes
from tests.crypto.conftest import make_core

STRING_FIELDS = [
    "receipt_id",
    "customer_id",
    "idempotency_key",
    "entitlement_id",
    "usage_description",
]
INT_FIELDS = ["seq", "amount_minor", "balance_after_minor", "quota_remaining_minor"]


def _every_scalar_value_in_chunks(chunk_chars: int) -> list[str]:
    scalars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    return ["".join(scalars[i : i + chunk_chars]) for i in range(0, len(scalars), chunk_chars)]


def test_genesis_hash_is_sha256_of_nothing_in_particular() -> None:
    assert GENESIS_HASH == "sha256:" + "0" * 64


def test_receipt_hash_is_sha256_of_rfc8785_of_the_core() -> None:
    core = make_core(7, GENESIS_HASH)
    expected = "sha256:" + hashlib.sha256(rfc8785.dumps(core)).hexdigest()
    assert receipt_hash(core) == expected
    assert canonical_json(core) == rfc8785.dumps(core)


def test_receipt_hash_ignores_extra_fields_and_key_order() -> None:
    core = make_core(3, GENESIS_HASH)
    served = {"amount": "1.25", "status": "accepted", **dict(reversed(list(core.items())))}
    assert receipt_hash(served) == receipt_hash(core)


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_fast_core_canonicalizer_matches_rfc8785_for_every_unicode_scalar(field: str) -> None:
    # Every code point outside the surrogates, including controls and non-ASCII.
    for chunk in _every_scalar_value_in_chunks(4096):
        core = make_core(1, GENESIS_HASH)
        core[field] = chunk
        assert core_bytes(core) == rfc8785.dumps(core)


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", [0, 1, -1, 2**31, -(2**31), 2**53 - 1, -(2**53 - 1), 10**15])
def test_fast_core_canonicalizer_matches_rfc8785_for_integers(field: str, value: int) -> None:
    core = make_core(1, GENESIS_HASH)
    core[field] = value
    assert core_bytes(core) == rfc8785.dumps(core)


def test_null_quota_means_unlimited_and_canonicalizes_as_null() -> None:
    core = make_core(1, GENESIS_HASH)
    core["quota_remaining_minor"] = None
    assert b'"quota_remaining_minor":null' in core_bytes(core)
    assert core_bytes(core) == rfc8785.dumps(core)


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", [2**53, -(2**53), 2**64])
def test_integers_at_or_beyond_2_pow_53_are_rejected(field: str, value: int) -> None:
    core = make_core(1, GENESIS_HASH)
    core[field] = value
    with pytest.raises(CanonicalizationError, match=field):
        receipt_hash(core)


def test_canonical_json_rejects_what_has_no_exact_form() -> None:
    with pytest.raises(CanonicalizationError):
        canonical_json({"n": 2**53})
    with pytest.raises(CanonicalizationError):
        canonical_json({"s": "\ud800"})


def test_lone_surrogate_in_a_core_string_is_rejected() -> None:
    core = make_core(1, GENESIS_HASH)
    core["usage_description"] = "broken \udc00"
    with pytest.raises(CanonicalizationError):
        receipt_hash(core)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_minor", 1.5),
        ("amount_minor", True),
        ("seq", "1"),
        ("currency", "eur"),
        ("currency", "EURO"),
        ("event_timestamp", "1700000000"),
        ("recorded_at", "2025-03-01 12:00:00"),
        ("previous_receipt_hash", "sha256:abc"),
        ("customer_id", None),
    ],
)
def test_core_fields_of_the_wrong_type_or_format_are_rejected(field: str, value: object) -> None:
    core = make_core(1, GENESIS_HASH)
    core[field] = value
    with pytest.raises(ReceiptFieldError, match=field):
        receipt_hash(core)


@pytest.mark.parametrize("field", RECEIPT_CORE_FIELDS)
def test_a_missing_core_field_is_a_key_error(field: str) -> None:
    core = make_core(1, GENESIS_HASH)
    del core[field]
    with pytest.raises(KeyError):
        receipt_hash(core)
