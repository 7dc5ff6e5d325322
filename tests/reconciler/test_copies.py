"""compare_copies: lagging copies are filled in (only what is missing), copies
that disagree with the ledger are reported and left as they are."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from actors.integrity._copies import repair_copies
from actors.integrity.reconciler import compare_copies
from ledger.local import FileArchive
from ledger.sqlite import SqliteLedger
from tests.reconciler.conftest import Books


def archive_bytes(archive_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(archive_dir.iterdir())}


def test_missing_archive_receipts_are_repaired_then_nothing_is_missing(
    books: Books, archive: FileArchive
) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 6)
    made = books.receipts["cus_a"]
    archive.append([made[0], made[2]])  # the outbox delivered some, not all

    first = compare_copies(books.store, books.store, archive, "cus_a", repair=True)
    second = compare_copies(books.store, books.store, archive, "cus_a", repair=True)

    (diff,) = first.copies
    assert (diff.copy, diff.missing, diff.repaired, diff.divergent_count) == ("archive", 4, 4, 0)
    assert diff.missing_ids == [made[i].receipt_id for i in (1, 3, 4, 5)]
    assert first.ok and second.ok and second.missing == 0
    assert archive.read_customer("cus_a") == made


def test_without_repair_nothing_is_written(books: Books, archive: FileArchive) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 3)

    report = compare_copies(books.store, books.store, archive, "cus_a", repair=False)

    assert (report.missing, report.copies[0].repaired) == (3, 0)
    assert archive.read_customer("cus_a") == []


def test_kept_missing_receipts_are_written_later_unless_more_are_missing_than_kept(
    books: Books, archive: FileArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit's process only reads: it keeps what a copy lacks, and the
    reconciler writes it (`repair_copies`). A copy lacking more than was
    kept is left for a comparison that repairs as it goes."""
    from actors.integrity import _copies

    books.customer("cus_a")
    books.charge("cus_a", 3)
    made = list(books.receipts["cus_a"])

    report = compare_copies(books.store, books.store, archive, "cus_a", repair=False,
                            keep_missing=True)
    assert archive.read_customer("cus_a") == []
    assert repair_copies(report, books.store, archive)
    assert archive.read_customer("cus_a") == made
    assert (report.copies[0].missing, report.copies[0].repaired) == (3, 3)

    books.charge("cus_a", 3)
    monkeypatch.setattr(_copies, "repair_batch_receipts_max", 2)
    report = compare_copies(books.store, books.store, archive, "cus_a", repair=False,
                            keep_missing=True)
    assert len(report.copies[0].pending) == 2 and report.missing == 3
    assert not repair_copies(report, books.store, archive)
    assert archive.read_customer("cus_a") == made


def test_divergent_archive_copy_is_reported_not_overwritten(
    books: Books, archive: FileArchive, tmp_path: Path
) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 4)
    made = books.receipts["cus_a"]
    document = orjson.loads(made[1].receipt_json)
    document["usage_description"] = "rewritten"
    forged = dataclasses.replace(made[1], receipt_json=orjson.dumps(document))
    archive.append([made[0], forged])
    before = archive_bytes(tmp_path / "archive")

    report = compare_copies(books.store, books.store, archive, "cus_a", repair=True)

    (diff,) = report.copies
    assert not report.ok
    divergent = [(d.receipt_id, d.kind) for d in diff.divergent]
    assert divergent == [(made[1].receipt_id, "different_json")]
    assert made[1].receipt_id in report.describe()
    # Only the two missing receipts were added; the forged copy is still there.
    assert diff.repaired == 2
    assert archive.read_customer("cus_a")[1].receipt_json == forged.receipt_json
    after = archive_bytes(tmp_path / "archive")
    assert all(after[name].startswith(content) for name, content in before.items())


def test_archived_receipt_the_ledger_does_not_have_is_divergent(
    books: Books, archive: FileArchive
) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 2)
    ghost = books.receipt("cus_a")  # sealed, archived, never committed
    archive.append([*books.receipts["cus_a"]])

    report = compare_copies(books.store, books.store, archive, "cus_a", repair=True)

    (diff,) = report.copies
    assert [(d.receipt_id, d.kind) for d in diff.divergent] == [(ghost.receipt_id, "not_in_ledger")]


def test_read_model_that_is_the_store_is_not_compared(books: Books, archive: FileArchive) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 2)

    report = compare_copies(books.store, books.store, archive, "cus_a", repair=True)

    assert [diff.copy for diff in report.copies] == ["archive"]


@pytest.fixture
def separate_read_model(tmp_path: Path) -> Iterator[SqliteLedger]:
    # A second ledger file serves as a read model that is not the store.
    model = SqliteLedger.open(tmp_path / "read-model.sqlite3")
    try:
        yield model
    finally:
        model.close()


def test_separate_read_model_lagging_and_divergent(
    books: Books, archive: FileArchive, separate_read_model: SqliteLedger
) -> None:
    books.customer("cus_a")
    books.charge("cus_a", 5)
    made = books.receipts["cus_a"]
    altered = made[3].receipt_json.replace(b"batch", b"BATCH")
    wrong = dataclasses.replace(made[3], receipt_json=altered)
    separate_read_model.upsert_receipts([made[0], wrong])
    archive.append(made)

    report = compare_copies(books.store, separate_read_model, archive, "cus_a", repair=True)

    read_model, archived = report.copies
    assert (read_model.copy, read_model.missing, read_model.repaired) == ("read_model", 3, 3)
    assert [d.receipt_id for d in read_model.divergent] == [made[3].receipt_id]
    assert archived.ok and archived.missing == 0
    assert separate_read_model.get_receipt(made[3].receipt_id) == wrong
    assert separate_read_model.get_receipt(made[4].receipt_id) == made[4]
