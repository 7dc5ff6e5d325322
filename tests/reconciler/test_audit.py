"""audit_customer on real, signed ledgers: clean ones pass, every kind of
damage fails with its own reason and names where."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from actors.integrity.reconciler import audit_customer
from crypto import SigningKey
from ledger import Entitlement, ReceiptWrite, StoredReceipt
from ledger._sqlite_rows import RECEIPT_COLUMNS, placeholders, receipt_params
from tests.reconciler.conftest import ENTITLEMENT, T0, Books


def test_clean_ledger_audits_ok(books: Books, jwks: dict[str, Any]) -> None:
    books.customer("cus_a")
    books.customer("cus_empty")
    books.charge("cus_a", 5, amount_minor=250)
    books.charge("cus_a", 2, amount_minor=40)

    audit = audit_customer(books.store, jwks, "cus_a")
    empty = audit_customer(books.store, jwks, "cus_empty")

    assert audit.ok, audit.detail
    assert (audit.receipts_verified, audit.head_seq, audit.reason) == (7, 7, None)
    assert empty.ok and empty.receipts_verified == 0


def test_tampered_receipt_json_fails_with_hash_mismatch(books: Books, jwks: dict[str, Any]) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 4)
    victim = books.receipts["cus_a"][1]
    document = orjson.loads(victim.receipt_json)
    document["amount_minor"] = 1  # a cheaper charge than was signed
    books.sql("UPDATE receipts SET receipt_json = ? WHERE receipt_id = ?",
              orjson.dumps(document), victim.receipt_id)

    audit = audit_customer(books.store, jwks, "cus_a")

    assert not audit.ok
    assert audit.reason == "hash_mismatch"
    assert audit.receipt_id == victim.receipt_id
    assert victim.receipt_id in audit.detail and "cus_a" in audit.detail


def test_receipt_signed_by_an_unknown_key_fails(books: Books, jwks: dict[str, Any]) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 1)
    forged = books.receipt("cus_a", key=SigningKey.generate("EdDSA"))
    books.store.commit_batch([ReceiptWrite(forged)], [])

    audit = audit_customer(books.store, jwks, "cus_a")

    assert (audit.ok, audit.reason, audit.receipt_id) == (False, "unknown_kid", forged.receipt_id)


# Each damage to a ledger of three 500-minor receipts, done behind the store's
# back, and the reason and words the audit must give for it.
DAMAGES = {
    "deleted_middle": (
        "DELETE FROM receipts WHERE customer_id = 'cus_a' AND seq = 2",
        (), "seq_gap", "expected seq 2 after 1, found 3",
    ),
    "deleted_first": (
        "DELETE FROM receipts WHERE customer_id = 'cus_a' AND seq = 1",
        (), "chain_start", "starts at seq 2",
    ),
    "deleted_last": (
        "DELETE FROM receipts WHERE customer_id = 'cus_a' AND seq = 3",
        (), "head_ahead_of_receipts", "head is at seq 3 but the last receipt is seq 2",
    ),
    "wrong_balance": (
        "UPDATE accounts SET balance_minor = 1 WHERE customer_id = 'cus_a'",
        (), "head_balance_mismatch", "balance is 1 but the receipts up to seq 3 sum to 1500",
    ),
    "wrong_head_hash": (
        "UPDATE accounts SET last_receipt_hash = ? WHERE customer_id = 'cus_a'",
        (0,), "head_hash_mismatch", "at seq 3 names last receipt hash",
    ),
    "head_behind_receipts": (
        "UPDATE accounts SET seq = 2, last_receipt_hash = ?, balance_minor = 1000 "
        "WHERE customer_id = 'cus_a'",
        (1,), "receipts_beyond_head", "receipts go up to seq 3 but the account head is at seq 2",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_ledger_fails_with_its_reason(
    books: Books, jwks: dict[str, Any], damage: str
) -> None:
    statement, hashes_of, reason, words = DAMAGES[damage]
    books.customer("cus_a")
    books.charge("cus_a", 3, amount_minor=500)
    books.sql(statement, *(books.receipts["cus_a"][i].receipt_hash for i in hashes_of))

    audit = audit_customer(books.store, jwks, "cus_a")

    assert (audit.ok, audit.reason) == (False, reason)
    assert words in audit.detail and audit.detail.startswith("customer cus_a: ")


def test_row_column_that_disagrees_with_the_signed_receipt_fails(
    books: Books, jwks: dict[str, Any]
) -> None:
    # The signed JSON is intact, but the column the stats and balance read is not.
    books.customer("cus_a")
    books.charge("cus_a", 3)
    victim = books.receipts["cus_a"][2]
    books.sql("UPDATE receipts SET amount_minor = 7 WHERE receipt_id = ?", victim.receipt_id)

    audit = audit_customer(books.store, jwks, "cus_a")

    assert (audit.ok, audit.reason) == (False, "index_mismatch")
    assert audit.receipt_id == victim.receipt_id
    assert "amount_minor" in audit.detail


def test_balance_after_that_is_not_the_running_sum_fails(
    books: Books, jwks: dict[str, Any], signing_key: SigningKey
) -> None:
    # Correctly signed and linked, but balance_after_minor lies (a buggy
    # adapter wrote it without the compare-and-set): only the sum check sees it.
    books.customer("cus_a")
    books.charge("cus_a", 2)
    seq, last_hash, balance = books.heads["cus_a"]
    books.heads["cus_a"] = (seq, last_hash, balance + 999)
    liar = books.receipt("cus_a")
    books.sql(f"INSERT INTO receipts ({RECEIPT_COLUMNS}) VALUES ({placeholders(RECEIPT_COLUMNS)})",
              *receipt_params(liar))
    books.sql("UPDATE accounts SET seq = 3, last_receipt_hash = ?, balance_minor = ? "
              "WHERE customer_id = ?", liar.receipt_hash, liar.balance_after_minor, "cus_a")

    audit = audit_customer(books.store, jwks, "cus_a")

    assert (audit.ok, audit.reason) == (False, "balance_mismatch")
    assert audit.receipt_id == books.receipts["cus_a"][2].receipt_id


def test_usage_is_checked_against_receipts_and_survives_a_period_reset(
    books: Books, jwks: dict[str, Any]
) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 3, amount_minor=100)
    new_period = Entitlement(customer_id="cus_a", entitlement_id=ENTITLEMENT, quota_minor=1_000,
                             policy="hard", status="active", updated_at=T0,
                             period_start="2026-02-01T00:00:00Z")
    books.store.put_entitlement(new_period, reset_usage=True)
    books.charge("cus_a", 2, amount_minor=30)
    assert audit_customer(books.store, jwks, "cus_a").ok

    books.sql("UPDATE entitlements SET used_minor = 55 WHERE customer_id = ?", "cus_a")
    audit = audit_customer(books.store, jwks, "cus_a")

    assert (audit.ok, audit.reason) == (False, "usage_mismatch")
    assert "used_minor 55" in audit.detail


def test_unknown_customer_fails(books: Books, jwks: dict[str, Any]) -> None:
    assert audit_customer(books.store, jwks, "cus_nobody").reason == "unknown_account"


class _ChargedDuringAudit:
    """The store, with one more receipt committed after the audit read the head."""

    def __init__(self, books: Books) -> None:
        self._books = books

    def __getattr__(self, name: str) -> Any:
        return getattr(self._books.store, name)

    def iter_receipts(self, customer_id: str) -> Iterator[StoredReceipt]:
        self._books.charge(customer_id, 1)
        yield from self._books.store.iter_receipts(customer_id)


def test_receipts_committed_during_the_audit_are_not_a_failure(
    books: Books, jwks: dict[str, Any]
) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 3)

    audit = audit_customer(_ChargedDuringAudit(books), jwks, "cus_a")

    assert audit.ok, audit.detail
    assert audit.receipts_verified == 4 and audit.head_seq == 3


@pytest.mark.parametrize("garbage", [b"{not json", b"[1, 2]"])
def test_unreadable_receipt_json_fails(books: Books, jwks: dict[str, Any], garbage: bytes) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 2)
    victim = books.receipts["cus_a"][0]
    books.sql("UPDATE receipts SET receipt_json = ? WHERE receipt_id = ?", garbage,
              victim.receipt_id)

    audit = audit_customer(books.store, jwks, "cus_a")

    assert (audit.ok, audit.reason, audit.receipt_id) == (
        False, "unreadable_receipt", victim.receipt_id
    )
