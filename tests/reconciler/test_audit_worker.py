"""The audit child's work on one customer (`AuditOne`), run here in the test's
process on a real SQLite ledger and archive directory: the ledger's receipts
are read once for the audit and the comparison of the copies, and what the
two find is what they found reading it twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from actors.integrity._audit import LedgerReceipts
from actors.integrity._audit_process import AuditOne, _Worker
from actors.integrity._copies import CopyReport, compare_copies
from actors.integrity.reconciler import CustomerAudit
from ledger import StoredReceipt
from ledger.local import FileArchive
from tests.reconciler.conftest import Books


def audit_one(
    books: Books, archive: FileArchive, jwks: dict[str, Any], customer_id: str
) -> tuple[CustomerAudit, CopyReport]:
    answer = _Worker(books.store, (books.store, archive)).answer(AuditOne(jwks, customer_id))
    assert answer.error is None, answer.error
    audit, copies = answer.value
    return audit, copies


def test_the_ledger_is_read_once_for_the_audit_and_the_copies(
    books: Books, archive: FileArchive, jwks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two reads were ~a quarter of the child's CPU at 3,800 receipts a customer."""
    books.customer("cus_a")
    books.charge("cus_a", 5)
    archive.append(books.receipts["cus_a"][:4])
    reads: list[str] = []
    iter_receipts = books.store.iter_receipts

    def counted(customer_id: str) -> Iterator[StoredReceipt]:
        reads.append(customer_id)
        return iter_receipts(customer_id)

    monkeypatch.setattr(books.store, "iter_receipts", counted)

    audit, copies = audit_one(books, archive, jwks, "cus_a")

    assert reads == ["cus_a"]
    assert audit.ok and audit.receipts_verified == 5
    (diff,) = copies.copies
    assert (diff.checked, diff.missing, diff.missing_ids) == (5, 1, ["rcpt_cus_a_00005"])


def test_an_audit_stopped_at_a_broken_link_still_has_every_receipt_compared(
    books: Books, archive: FileArchive, jwks: dict[str, Any]
) -> None:
    """The audit stops reading at the first broken receipt; the comparison
    reads on from there, and still sees the copy's receipts after it."""
    books.customer("cus_a")
    books.charge("cus_a", 6)
    made = books.receipts["cus_a"]
    archive.append(made[:5])
    victim = made[1]
    document = orjson.loads(victim.receipt_json)
    document["amount_minor"] = 1
    books.sql("UPDATE receipts SET receipt_json = ? WHERE receipt_id = ?",
              orjson.dumps(document), victim.receipt_id)

    audit, copies = audit_one(books, archive, jwks, "cus_a")

    assert (audit.ok, audit.reason, audit.receipt_id) == (False, "hash_mismatch", victim.receipt_id)
    (diff,) = copies.copies
    assert (diff.checked, diff.missing, diff.missing_ids) == (6, 1, [made[5].receipt_id])
    assert [(d.receipt_id, d.kind) for d in diff.divergent] == [
        (victim.receipt_id, "different_json")
    ]


def test_a_receipt_committed_after_the_audits_read_and_archived_is_not_divergent(
    books: Books, archive: FileArchive
) -> None:
    """The archive is read after the audit's read of the ledger: a receipt
    committed in between is in the archive only, and is asked for again."""
    books.customer("cus_a")
    books.charge("cus_a", 3)
    ledger = LedgerReceipts(books.store, "cus_a")
    assert [r.seq for r in ledger] == [1, 2, 3]
    books.charge("cus_a", 1)
    archive.append(books.receipts["cus_a"])

    report = compare_copies(books.store, books.store, archive, "cus_a", repair=False,
                            keep_missing=True, ledger=ledger)

    (diff,) = report.copies
    assert report.ok and (diff.checked, diff.missing, diff.divergent_count) == (3, 0, 0)
    books.sql("UPDATE receipts SET receipt_json = ? WHERE seq = 4", b'{"seq": 4}')
    report = compare_copies(books.store, books.store, archive, "cus_a", repair=False,
                            keep_missing=True, ledger=ledger)
    assert [(d.seq, d.kind) for d in report.copies[0].divergent] == [(4, "different_json")]


def test_an_archived_line_changed_on_disk_is_divergent_and_a_dropped_one_missing(
    books: Books, archive: FileArchive, jwks: dict[str, Any]
) -> None:
    """The archive is compared with the ledger's receipts in hand (`known`):
    one byte changed in a line's signed receipt is still found, and a line
    deleted is still missing."""
    books.customer("cus_a")
    books.charge("cus_a", 4)
    made = books.receipts["cus_a"]
    archive.append(made)
    path = archive.root / "cus_a.jsonl"
    lines = path.read_bytes().splitlines()
    record = orjson.loads(lines[1])
    encoded = record["receipt_json"]
    record["receipt_json"] = encoded[:20] + ("A" if encoded[20] != "A" else "B") + encoded[21:]
    lines[1] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    del lines[2]
    path.write_bytes(b"\n".join(lines) + b"\n")

    audit, copies = audit_one(books, archive, jwks, "cus_a")

    assert audit.ok
    (diff,) = copies.copies
    assert [(d.receipt_id, d.kind) for d in diff.divergent] == [
        (made[1].receipt_id, "different_json")
    ]
    assert (diff.checked, diff.missing_ids) == (4, [made[2].receipt_id])
