"""The lost-or-doubled check flags each violation it claims to, and passes a clean run."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from loadtest.check import Ledger, amount_to_minor, load_records, verify

CID = "cus_a"


def _hash(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def _chain(amounts_minor: list[int], keys: list[str]) -> list[dict[str, Any]]:
    chain, previous, running = [], "sha256:" + "0" * 64, 0
    for seq, (amount, key) in enumerate(zip(amounts_minor, keys, strict=True), start=1):
        running += amount
        chain.append(
            {
                "receipt_id": f"rcpt_{seq}",
                "seq": seq,
                "idempotency_key": key,
                "entitlement_id": "api_calls",
                "amount_minor": amount,
                "balance_after_minor": running,
                "previous_receipt_hash": previous,
                "receipt_hash": _hash(seq),
            }
        )
        previous = _hash(seq)
    return chain


def _lines(*items: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(item) for item in items]


def _customer(**extra: Any) -> dict[str, Any]:
    return {"t": "customer", "customer_id": CID, "api_key": "sk_test_x", **extra}


def _sent(key: str, amount: str = "0.25") -> dict[str, Any]:
    return {"t": "sent", "customer_id": CID, "key": key, "amount": amount}


def _outcome(key: str, status: int, receipt_id: str | None = None) -> dict[str, Any]:
    return {
        "t": "outcome",
        "customer_id": CID,
        "key": key,
        "status": status,
        "receipt_id": receipt_id,
    }


def _clean() -> tuple[list[bytes], list[dict[str, Any]]]:
    lines = _lines(
        _customer(),
        _sent("k1"),
        _outcome("k1", 202, "rcpt_1"),
        _sent("k1"),
        _outcome("k1", 202, "rcpt_1"),  # a replay
        _sent("k2"),
        _outcome("k2", 202, "rcpt_2"),
        _sent("k3"),
        _outcome("k3", 429),
    )
    return lines, _chain([25, 25], ["k1", "k2"])


def _kinds(lines: list[bytes], chain: list[dict[str, Any]], balance: int | None) -> set[str]:
    report = verify(load_records(lines), {CID: Ledger(chain, balance)})
    return {v.kind for v in report.violations}


def test_a_clean_run_passes() -> None:
    lines, chain = _clean()
    report = verify(load_records(lines), {CID: Ledger(chain, 50)})
    assert report.ok, report.summary()
    assert (report.acknowledged, report.replays, report.receipts) == (2, 1, 2)
    assert "OK" in report.summary()


def test_a_202_without_a_receipt_is_lost() -> None:
    lines, chain = _clean()
    lines += _lines(_sent("k4"), _outcome("k4", 202, "rcpt_404"))
    assert _kinds(lines, chain, 50) == {"missing_receipt"}


def test_one_key_acknowledged_with_two_receipts_is_doubled() -> None:
    lines, chain = _clean()
    lines += _lines(_sent("k2"), _outcome("k2", 202, "rcpt_other"))
    assert "doubled_ack" in _kinds(lines, chain, 50)


def test_a_key_charged_twice_in_the_chain() -> None:
    lines, _ = _clean()
    chain = _chain([25, 25, 25], ["k1", "k2", "k2"])
    assert _kinds(lines, chain, 75) == {"duplicate_key"}


def test_a_seq_gap_and_a_broken_link() -> None:
    lines, chain = _clean()
    chain[1]["seq"] = 3
    assert "seq_gap" in _kinds(lines, chain, 50)
    lines, chain = _clean()
    chain[1]["previous_receipt_hash"] = _hash(99)
    assert _kinds(lines, chain, 50) == {"chain_link"}


def test_balances_must_add_up() -> None:
    lines, chain = _clean()
    assert _kinds(lines, chain, 51) == {"balance_mismatch"}
    chain[1]["balance_after_minor"] = 49
    assert _kinds(lines, chain, 50) == {"balance_mismatch"}
    assert _kinds(lines, chain, None) >= {"unreadable"}


def test_refused_yet_charged_unknown_wrong_amount_and_quota() -> None:
    lines, _ = _clean()
    chain = _chain([25, 25, 25], ["k1", "k2", "k3"])  # k3 only ever got 429
    assert _kinds(lines, chain, 75) == {"charged_after_rejection"}
    chain = _chain([25, 25, 25], ["k1", "k2", "never-sent"])
    assert _kinds(lines, chain, 75) == {"unexpected_receipt"}
    chain = _chain([25, 30], ["k1", "k2"])
    assert _kinds(lines, chain, 55) == {"amount_mismatch"}
    capped = _lines(_customer(policy="hard", quota="0.40", entitlement_id="api_calls"))
    assert _kinds(capped + lines[1:], _chain([25, 25], ["k1", "k2"]), 50) == {"hard_quota_exceeded"}


def test_an_unanswered_key_may_hold_one_receipt() -> None:
    lines, _ = _clean()
    lines += _lines(_sent("k5"), _outcome("k5", 0))
    chain = _chain([25, 25, 25], ["k1", "k2", "k5"])
    report = verify(load_records(lines), {CID: Ledger(chain, 75)})
    assert report.ok, report.summary()
    assert report.unanswered == 1


def test_an_unreadable_chain_fails_and_a_torn_last_line_is_skipped() -> None:
    lines, _chain_unused = _clean()
    report = verify(load_records([*lines, b'{"t": "outc']), {CID: Ledger([], None, "boom")})
    assert not report.ok and "boom" in report.summary()


@pytest.mark.parametrize(("amount", "minor"), [("0.25", 25), ("1", 100), ("2.50", 250)])
def test_amount_to_minor(amount: str, minor: int) -> None:
    assert amount_to_minor(amount, "USD") == minor
