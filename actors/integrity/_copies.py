"""Comparison of the receipt copies (read model, archive) with the ledger of record.

A copy may lag (the outbox delivers after commit): missing receipts are
filled in from the ledger when asked to repair, and only those. A copy that
holds a different receipt under a known id or seq, or a receipt the ledger
does not have, is never "repaired": it is reported as an integrity alarm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson

from actors.integrity._audit import LedgerReceipts
from ledger import LedgerStore, ReceiptArchive, ReceiptReadModel, StoredReceipt, limits
from ledger.errors import check_invariant
from ledger.limits import repair_batch_receipts_max, report_ids_max

__all__ = ["CopyDiff", "CopyReport", "Divergence", "compare_copies", "repair_copies"]

COPY_READ_MODEL: Final = "read_model"
COPY_ARCHIVE: Final = "archive"



@dataclass(frozen=True, slots=True)
class Divergence:
    """A copy's receipt that is not the ledger's: `kind` is `different_json`
    (same id, other content), `other_receipt_at_seq` (another id at a seq the
    ledger has) or `not_in_ledger` (the ledger has no such receipt)."""

    receipt_id: str
    seq: int
    kind: str
    detail: str


@dataclass
class CopyDiff:
    """One copy against the ledger. `missing` counts receipts the copy lacks;
    `repaired` of those were written to it; `*_ids` keep the first ids;
    `pending` the first missing receipts themselves, for a repair made
    elsewhere (`repair_copies`: the audit's process only reads)."""

    copy: str
    checked: int = 0
    missing: int = 0
    repaired: int = 0
    missing_ids: list[str] = field(default_factory=list)
    divergent: list[Divergence] = field(default_factory=list)
    divergent_count: int = 0
    pending: list[StoredReceipt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.divergent_count == 0

    def add_missing(self, receipt: StoredReceipt) -> None:
        self.missing += 1
        if len(self.missing_ids) < report_ids_max:
            self.missing_ids.append(receipt.receipt_id)

    def add_divergent(self, divergence: Divergence) -> None:
        self.divergent_count += 1
        if len(self.divergent) < report_ids_max:
            self.divergent.append(divergence)


@dataclass(frozen=True, slots=True)
class CopyReport:
    """Every copy of one customer's receipts against the ledger. A copy that
    was not compared (the read model that is the store itself) is absent."""

    customer_id: str
    copies: tuple[CopyDiff, ...]

    @property
    def ok(self) -> bool:
        """No divergence (missing receipts are lag, not an integrity failure)."""
        return all(diff.ok for diff in self.copies)

    @property
    def missing(self) -> int:
        return sum(diff.missing for diff in self.copies)

    @property
    def divergent_count(self) -> int:
        return sum(diff.divergent_count for diff in self.copies)

    def describe(self) -> str:
        """One line for a person: which copy holds what instead of the ledger's."""
        parts = [
            f"{diff.copy} {d.kind} receipt {d.receipt_id} (seq {d.seq}): {d.detail}"
            for diff in self.copies
            for d in diff.divergent[:3]
        ]
        return f"customer {self.customer_id}: " + "; ".join(parts) if parts else ""


def compare_copies(
    store: LedgerStore,
    read_model: ReceiptReadModel,
    archive: ReceiptArchive,
    customer_id: str,
    repair: bool,
    *,
    keep_missing: bool = False,
    ledger: LedgerReceipts | None = None,
) -> CopyReport:
    """Compare the read model and the archive with the ledger for one customer.

    With `repair`, receipts a copy lacks are upserted/appended to it (nothing
    else is written); with `keep_missing` instead, the first
    `repair_batch_receipts_max` of them are kept in `CopyDiff.pending`.
    `ledger`: the customer's receipts as the audit read them (read on from
    where it stopped), not read again. The read model is skipped when it is
    the store itself. Raises LedgerError if a store or copy cannot be read
    or written.
    """
    ours: list[StoredReceipt] | None = None
    if ledger is not None:
        check_invariant(ledger.customer_id == customer_id, "another customer's receipts")
        ours = list(ledger)

    def ledger_receipts() -> Iterable[StoredReceipt]:
        return store.iter_receipts(customer_id) if ours is None else ours

    diffs: list[CopyDiff] = []
    if not _same_object(read_model, store):
        diffs.append(
            _compare(
                store,
                ledger_receipts(),
                COPY_READ_MODEL,
                _read_model_receipts(read_model, customer_id),
                read_model.upsert_receipts if repair else None,
                keep_missing,
            )
        )
    # The whole archive file is read before the ledger: anything in it was
    # committed before, so the ledger read after it must have it. (Or after
    # the audit's read: a receipt committed since is asked for again, see
    # _not_in_ledger.)
    archived = archive.read_customer(customer_id, () if ours is None else ours)
    diffs.append(
        _compare(
            store,
            ledger_receipts(),
            COPY_ARCHIVE,
            iter(archived),
            archive.append if repair else None,
            keep_missing,
        )
    )
    return CopyReport(customer_id, tuple(diffs))


def repair_copies(
    report: CopyReport, read_model: ReceiptReadModel, archive: ReceiptArchive
) -> bool:
    """Write to each copy the receipts `report` found it lacking (kept with
    `keep_missing`). False, writing nothing, if a copy lacks more than were
    kept: the caller compares again with `repair` (a copy that lost much)."""
    if any(len(diff.pending) < diff.missing for diff in report.copies):
        return False
    for diff in report.copies:
        if diff.pending:
            write = read_model.upsert_receipts if diff.copy == COPY_READ_MODEL else archive.append
            write(diff.pending)
            diff.repaired += len(diff.pending)
            diff.pending = []
    return True


def _same_object(a: object, b: object) -> bool:
    # The embedded read model IS the ledger: comparing it with itself proves nothing.
    return a is b


def _read_model_receipts(read_model: ReceiptReadModel, customer_id: str) -> Iterator[StoredReceipt]:
    after_seq = 0
    while True:
        page = read_model.list_receipts(customer_id, after_seq, limits.receipts_page_max)
        yield from page
        if not page:
            return
        after_seq = page[-1].seq


def _compare(
    store: LedgerStore,
    ledger: Iterable[StoredReceipt],
    copy_name: str,
    copy: Iterator[StoredReceipt],
    write: Callable[[Sequence[StoredReceipt]], None] | None,
    keep_missing: bool = False,
) -> CopyDiff:
    """Merge two seq-ordered streams: the ledger's receipts and the copy's."""
    diff = CopyDiff(copy_name)
    to_write: list[StoredReceipt] = []

    def flush() -> None:
        if write is not None and to_write:
            write(list(to_write))
            diff.repaired += len(to_write)
        to_write.clear()

    theirs = next(copy, None)
    for ours in ledger:
        diff.checked += 1
        while theirs is not None and theirs.seq < ours.seq:
            _not_in_ledger(store, theirs, diff)
            theirs = next(copy, None)
        if theirs is None or theirs.seq > ours.seq:
            diff.add_missing(ours)
            if keep_missing and len(diff.pending) < repair_batch_receipts_max:
                diff.pending.append(ours)
            to_write.append(ours)
            if len(to_write) >= repair_batch_receipts_max:
                flush()
            continue
        # Same seq: the copy must hold exactly the ledger's receipt there.
        if theirs.receipt_id != ours.receipt_id:
            diff.add_divergent(
                Divergence(
                    theirs.receipt_id,
                    theirs.seq,
                    "other_receipt_at_seq",
                    f"the ledger's receipt at seq {ours.seq} is {ours.receipt_id}",
                )
            )
        elif not _same_json(theirs.receipt_json, ours.receipt_json):
            diff.add_divergent(_different_json(theirs))
        theirs = next(copy, None)
    while theirs is not None:
        _not_in_ledger(store, theirs, diff)
        theirs = next(copy, None)
    flush()
    return diff


def _not_in_ledger(store: LedgerStore, theirs: StoredReceipt, diff: CopyDiff) -> None:
    # The ledger walk may have ended before a commit the copy already saw
    # (the read model is paged while the ledger is read): ask once more.
    ours = store.get_receipt(theirs.receipt_id)
    if ours is not None and ours.seq == theirs.seq:
        if not _same_json(theirs.receipt_json, ours.receipt_json):
            diff.add_divergent(_different_json(theirs))
        return
    detail = (
        "the ledger has no receipt with this id"
        if ours is None
        else f"the ledger has this id at seq {ours.seq}"
    )
    diff.add_divergent(Divergence(theirs.receipt_id, theirs.seq, "not_in_ledger", detail))


def _different_json(theirs: StoredReceipt) -> Divergence:
    return Divergence(
        theirs.receipt_id,
        theirs.seq,
        "different_json",
        "the copy's signed receipt differs from the ledger's (same id, other content)",
    )


def _same_json(a: bytes, b: bytes) -> bool:
    # Bytes first; an adapter that stores parsed JSON may re-serialize it.
    if a == b:
        return True
    try:
        return bool(orjson.loads(a) == orjson.loads(b))
    except orjson.JSONDecodeError:
        return False
