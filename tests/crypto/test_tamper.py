"""Every kind of tampering is caught, with the reason a person can act on."""

from __future__ import annotations

import pytest

from crypto import (
    RECEIPT_CORE_FIELDS,
    JWKSError,
    KeyRing,
    SigningKey,
    seal_receipt,
    verify_chain,
    verify_jsonl,
    verify_receipt,
)
from crypto.receipt import receipt_core
from tests.crypto.conftest import build_chain, session_key

Receipt = dict[str, object]


@pytest.fixture
def chain() -> list[Receipt]:
    return build_chain(session_key("RS256"), 6)


@pytest.fixture
def jwks() -> dict[str, object]:
    return dict(KeyRing(session_key("RS256")).jwks())


def _altered(value: object) -> object:
    if value is None:
        return 1
    if isinstance(value, int):
        return value + 1
    # Keep the format valid (a digit for a digit, a letter for a letter) so
    # only the hash can tell.
    text = str(value)
    digits = [i for i, char in enumerate(text) if char.isdigit()]
    position = digits[-1] if digits else len(text) - 1
    char = text[position]
    if char.isdigit():
        replacement = "1" if char == "0" else "0"
    else:
        replacement = "B" if char.upper() == "A" else "A"
        replacement = replacement if char.isupper() else replacement.lower()
    return text[:position] + replacement + text[position + 1 :]


def test_an_untouched_chain_verifies(chain: list[Receipt], jwks: dict[str, object]) -> None:
    report = verify_chain(chain, jwks)
    assert (report.ok, report.verified, report.first_seq, report.last_seq) == (True, 6, 1, 6)
    assert report.head_hash == chain[-1]["receipt_hash"] and report.starts_at_genesis


@pytest.mark.parametrize("field", RECEIPT_CORE_FIELDS)
def test_changing_any_core_field_is_a_hash_mismatch(
    chain: list[Receipt], jwks: dict[str, object], field: str
) -> None:
    chain[3] = {**chain[3], field: _altered(chain[3][field])}
    report = verify_chain(chain, jwks)
    assert report.failure is not None
    assert (report.verified, report.failure.index, report.failure.reason) == (3, 3, "hash_mismatch")
    assert verify_receipt(chain[3], jwks).reason == "hash_mismatch"


@pytest.mark.parametrize("field", RECEIPT_CORE_FIELDS)
def test_changing_a_field_and_rehashing_is_a_bad_signature(
    chain: list[Receipt], jwks: dict[str, object], field: str
) -> None:
    forger = SigningKey.generate("EdDSA")
    forged = seal_receipt({**receipt_core(chain[2]), field: _altered(chain[2][field])}, forger)
    forged["signature"] = chain[2]["signature"]
    assert verify_receipt(forged, jwks).reason == "bad_signature"


def test_extra_served_fields_are_ignored(chain: list[Receipt], jwks: dict[str, object]) -> None:
    served = [{**r, "amount": "9.99", "timestamp": "x", "status": "accepted"} for r in chain]
    assert verify_chain(served, jwks).ok


def test_reordering_is_a_seq_gap(chain: list[Receipt], jwks: dict[str, object]) -> None:
    chain[2], chain[3] = chain[3], chain[2]
    failure = verify_chain(chain, jwks).failure
    assert failure is not None and (failure.index, failure.reason) == (2, "seq_gap")


def test_deleting_a_middle_receipt_is_a_seq_gap(
    chain: list[Receipt], jwks: dict[str, object]
) -> None:
    del chain[2]
    failure = verify_chain(chain, jwks).failure
    assert failure is not None and (failure.index, failure.reason) == (2, "seq_gap")
    assert "expected seq 3" in failure.detail


def test_swapping_signatures_is_a_bad_signature(
    chain: list[Receipt], jwks: dict[str, object]
) -> None:
    chain[1]["signature"], chain[4]["signature"] = chain[4]["signature"], chain[1]["signature"]
    failure = verify_chain(chain, jwks).failure
    assert failure is not None and (failure.index, failure.reason) == (1, "bad_signature")


def test_a_foreign_chain_spliced_in_is_a_previous_hash_mismatch(jwks: dict[str, object]) -> None:
    key = session_key("RS256")
    first = build_chain(key, 3)
    # Same customer and seqs, but a different history before seq 4.
    other = build_chain(key, 4, start_seq=1, description="another history")
    spliced = [*first, other[3]]
    failure = verify_chain(spliced, jwks).failure
    assert failure is not None and (failure.index, failure.reason) == (3, "previous_hash_mismatch")


def test_customer_change_mid_chain(jwks: dict[str, object]) -> None:
    key = session_key("RS256")
    mixed = [*build_chain(key, 2, "cus_a"), *build_chain(key, 3, "cus_b")[2:]]
    failure = verify_chain(mixed, jwks).failure
    assert failure is not None and (failure.index, failure.reason) == (2, "customer_changed")


def test_unknown_kid_missing_field_and_unsupported_alg(
    chain: list[Receipt], jwks: dict[str, object]
) -> None:
    stranger = build_chain(SigningKey.generate("ES256"), 1)[0]
    assert verify_receipt(stranger, jwks).reason == "unknown_kid"
    incomplete = {k: v for k, v in chain[0].items() if k != "currency"}
    result = verify_receipt(incomplete, jwks)
    assert (result.reason, "currency" in result.detail) == ("missing_field", True)
    none_alg = {**chain[0], "signature": "eyJhbGciOiJub25lIiwia2lkIjoieCJ9..c2ln"}
    assert verify_receipt(none_alg, jwks).reason == "unsupported_alg"
    assert verify_receipt({**chain[0], "signature": "a.b.c"}, jwks).reason == "malformed_signature"


def test_truncated_tail_is_only_caught_against_a_known_head(
    chain: list[Receipt], jwks: dict[str, object]
) -> None:
    held_head = str(chain[-1]["receipt_hash"])
    assert verify_chain(chain[:4], jwks).ok  # indistinguishable without a head
    report = verify_chain(chain[:4], jwks, known_head=held_head)
    assert report.failure is not None and report.failure.reason == "truncated"
    assert report.failure.index == 4 and report.verified == 4
    assert verify_chain(chain, jwks, known_head=held_head).ok
    assert verify_chain(chain, jwks, known_head=str(chain[2]["receipt_hash"])).ok
    with pytest.raises(ValueError):
        verify_chain(chain, jwks, known_head="sha256:nothex")


@pytest.mark.parametrize(
    "bad_jwks",
    [
        {},
        {"keys": "x"},
        {"keys": [1]},
        {"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
    ],
)
def test_a_jwks_that_is_not_one_raises(chain: list[Receipt], bad_jwks: dict[str, object]) -> None:
    with pytest.raises(JWKSError):
        verify_chain(chain, bad_jwks)


def test_verify_chain_is_streaming(chain: list[Receipt], jwks: dict[str, object]) -> None:
    consumed: list[int] = []

    def receipts() -> object:
        for index, receipt in enumerate(chain):
            consumed.append(index)
            yield receipt if index != 1 else {**receipt, "seq": 99}

    report = verify_chain(receipts(), jwks)  # type: ignore[arg-type]
    assert report.failure is not None and consumed == [0, 1]


@pytest.mark.parametrize("workers", [1, 2])
def test_verify_jsonl_in_parallel_finds_the_same_first_failure(workers: int) -> None:
    import orjson

    key = session_key("EdDSA")
    receipts = build_chain(key, 3000)
    receipts[2500] = {**receipts[2500], "amount_minor": 0}
    lines = [orjson.dumps(receipt) + b"\n" for receipt in receipts]
    lines[2900] = b"{not json\n"
    report = verify_jsonl(lines, KeyRing(key).jwks(), workers=workers)
    assert report.failure is not None
    assert (report.verified, report.failure.index, report.failure.reason) == (
        2500,
        2500,
        "hash_mismatch",
    )
    assert verify_jsonl(lines[:2500], KeyRing(key).jwks(), workers=workers).ok
