"""Restore: rebuild an EMPTY ledger of record from the archive, verifying as
it goes (`billing restore`; the runbook is in deploy/README.md).

The archive holds every receipt (per customer) and every signed checkpoint of
the receipt log. The receipts are streamed back in log order (one stream per
customer, merged by `log_index`) and each is checked before it is written:
its hash is that of its signed core (and its signature, in receipt mode),
its index columns are the receipt's, and it extends its customer's chain
(gapless seq from 1, linked by hash, each balance the running sum). The log
is rebuilt leaf by leaf (`RightEdge`); at every archived checkpoint's size the
rebuilt root must be the signed one and its JWS must verify against keys the
operator trusts (never keys from the archive alone: whoever altered the
archive could bring their own). Each checkpoint's receipts are then one
`commit_batch` whose `LogAppend` carries the archived checkpoint as signed
(nothing is re-signed), so the restored log has the same checkpoints, tiles
and leaves as the lost one.

Receipts archived after the newest checkpoint that covers them are left out:
no signature vouches for them, and the log cannot take them without a new
checkpoint. The archive holds receipts and checkpoints only: customers are
restored with what their receipts say (id, currency, first receipt time), and
each entitlement a receipt names is created not chargeable (status
`restored`) with the usage of all its receipts; API keys, emails, Stripe ids,
quotas and plans, request records, kept refusals, webhook events and the
outbox are not in the archive (see deploy/README.md for what the operator does about them).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from crypto import Checkpoint, RightEdge, TrustedKeys, verify_receipt
from ledger import limits
from ledger.log_audit import (
    AuditFailed,
    AuditFailure,
    checked_document,
    link_chain,
    verified_checkpoint,
)
from ledger.model import Customer, Entitlement, LogAppend, LogCheckpoint, StoredReceipt
from ledger.ports import LedgerStore, ReceiptArchive, ReceiptWrite

__all__ = ["RESTORED_STATUS", "RestoreReport", "TargetNotEmpty", "restore_ledger"]

# Entitlements are recreated with this status: not chargeable until Stripe's
# reconciliation or an operator sets the real one (quotas are not archived).
RESTORED_STATUS: Final = "restored"
# Columns of a stored receipt that its signed core states too.
_SIGNED_COLUMNS: Final = (
    "receipt_id",
    "idempotency_key",
    "entitlement_id",
    "amount_minor",
    "currency",
    "previous_receipt_hash",
    "balance_after_minor",
    "recorded_at",
)


class TargetNotEmpty(Exception):
    """The target store already holds customers or a log: restore only into
    an empty one (never merge an archive into a ledger)."""


@dataclass(frozen=True, slots=True)
class RestoreReport:
    receipts: int  # restored, every one verified
    checkpoints: int
    customers: int
    head: LogCheckpoint | None
    # Archived after the newest checkpoint covering them all: not restored.
    left_out: int
    # Archived checkpoints past the last archived receipt (its receipts were
    # not archived yet when the ledger was lost): not restored.
    checkpoints_ahead: int
    failure: AuditFailure | None

    @property
    def ok(self) -> bool:
        return self.failure is None


def restore_ledger(
    archive: ReceiptArchive,
    store: LedgerStore,
    jwks: Mapping[str, Any],
    *,
    now_rfc3339: str,
    tree_size_max: int | None = None,
    on_receipts: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Restore `archive` into the empty `store`; the first inconsistency
    stops it (what was committed before it stays: start again on a new
    store). `tree_size_max`: stop at the archived checkpoint of that size
    (an operator accepting a hole in the archive after it). Raises
    TargetNotEmpty, JWKSError for unusable keys, LedgerError from the stores."""
    if store.log_head() is not None or store.list_customer_ids():
        raise TargetNotEmpty("the target store is not empty: restore only into a new ledger")
    run = _Restore(archive, store, TrustedKeys(jwks), now_rfc3339, on_receipts or (lambda _: None))
    _record_keys(store, jwks, now_rfc3339)
    try:
        run.run(tree_size_max)
    except AuditFailed as failed:
        return run.report(failed.failure)
    return run.report(None)


def _record_keys(store: LedgerStore, jwks: Mapping[str, Any], now: str) -> None:
    """The trusted keys become the restored store's published keys: receipts
    and checkpoints they signed must stay verifiable from its JWKS."""
    from ledger.model import SigningKeyRecord

    for jwk in jwks.get("keys", []):
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str):
            record = SigningKeyRecord(
                jwk["kid"], str(jwk.get("alg", "")), json.dumps(jwk, sort_keys=True), now
            )
            store.record_signing_key(record)


class _CustomerStream:
    """One customer's archived receipts in chain order, from a stream in
    archive order (a receipt the reconciler filled in later comes late)."""

    def __init__(self, customer_id: str, receipts: Iterator[StoredReceipt]) -> None:
        self.customer_id = customer_id
        self._receipts = receipts
        self._next_seq = 1
        self._early: dict[int, StoredReceipt] = {}

    def next(self) -> StoredReceipt | None:
        """The receipt of the next seq; None when the archive holds no more
        of this chain (or not that seq: `stalled` then)."""
        wanted = self._next_seq
        found = self._early.pop(wanted, None)
        while found is None:
            receipt = next(self._receipts, None)
            if receipt is None:
                return None
            if receipt.customer_id != self.customer_id:
                raise _fail("row_mismatch", f"receipt {receipt.receipt_id} is archived "
                            f"under customer {self.customer_id}", receipt)
            if receipt.seq < wanted or receipt.seq in self._early:
                raise _fail("duplicate_seq", f"customer {self.customer_id}: the archive "
                            f"holds two receipts of seq {receipt.seq}", receipt)
            if receipt.seq == wanted:
                found = receipt
            else:
                self._early[receipt.seq] = receipt
        self._next_seq += 1
        return found

    @property
    def stalled(self) -> bool:
        return bool(self._early)


def _count_quietly(receipts: Iterator[StoredReceipt]) -> int:
    """How many more receipts the stream gives; a hole ends the count (they
    are not restored: their order is nobody's signed statement)."""
    count = 0
    try:
        for _ in receipts:
            count += 1
    except AuditFailed:
        pass
    return count


def _fail(reason: str, detail: str, receipt: StoredReceipt | None = None) -> AuditFailed:
    return AuditFailed(
        AuditFailure(
            reason,
            detail,
            log_index=None if receipt is None else receipt.log_index,
            receipt_id=None if receipt is None else receipt.receipt_id,
        )
    )


@dataclass
class _Restore:
    archive: ReceiptArchive
    store: LedgerStore
    keys: TrustedKeys
    now: str
    on_receipts: Callable[[int], None]
    edge: RightEdge = field(default_factory=RightEdge.empty)
    head: LogCheckpoint | None = None
    checkpoints: int = 0
    left_out: int = 0
    checkpoints_ahead: int = 0
    origin: str | None = None
    chains: dict[str, tuple[int, str]] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    entitlements: set[tuple[str, str]] = field(default_factory=set)
    pending: list[StoredReceipt] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)

    def report(self, failure: AuditFailure | None) -> RestoreReport:
        return RestoreReport(
            receipts=self.edge.size,
            checkpoints=self.checkpoints,
            customers=len(self.chains),
            head=self.head,
            left_out=self.left_out,
            checkpoints_ahead=self.checkpoints_ahead,
            failure=failure,
        )

    def run(self, tree_size_max: int | None) -> None:
        checkpoints = self._archived_checkpoints()
        due = next(checkpoints, None)
        receipts = self._in_log_order()
        for receipt in receipts:
            if due is None or (tree_size_max is not None and due.tree_size > tree_size_max):
                # No checkpoint (wanted) signs this receipt or any after it.
                self.left_out = len(self.pending) + 1 + _count_quietly(receipts)
                break
            self._take(receipt)
            while due is not None and due.tree_size <= self.edge.size + len(self.pending):
                self._commit(due)
                due = next(checkpoints, None)
        else:
            self.left_out = len(self.pending)
        if tree_size_max is not None and self.edge.size != tree_size_max:
            raise AuditFailed(AuditFailure(
                "no_such_checkpoint",
                f"no archived checkpoint of {tree_size_max} leaves was reached "
                f"(restored {self.edge.size})",
            ))
        self.checkpoints_ahead = (due is not None) + sum(1 for _ in checkpoints)

    # -- receipts, in log order -------------------------------------------------
    def _in_log_order(self) -> Iterator[StoredReceipt]:
        """Every archived receipt by log_index, from one stream per customer;
        a leaf the archive lacks ends the stream (see `_hole`)."""
        streams = [
            _CustomerStream(cid, self.archive.iter_customer(cid))
            for cid in self.archive.customer_ids()
        ]
        heap: list[tuple[int, int, StoredReceipt]] = []
        for number, stream in enumerate(streams):
            self._push(heap, number, stream)
        expected = 0
        while heap:
            index, number, receipt = heap[0]
            if index != expected:
                self._hole(expected, heap, streams)
                return
            heapq.heappop(heap)
            yield receipt
            expected += 1
            self._push(heap, number, streams[number])
        self._hole(expected, heap, streams)

    def _push(
        self, heap: list[tuple[int, int, StoredReceipt]], number: int, stream: _CustomerStream
    ) -> None:
        receipt = stream.next()
        if receipt is None:
            return
        if receipt.log_index is None:
            raise _fail("not_in_log", f"receipt {receipt.receipt_id} has no leaf index", receipt)
        heapq.heappush(heap, (receipt.log_index, number, receipt))

    def _hole(
        self, leaf: int, heap: list[tuple[int, int, StoredReceipt]], streams: list[_CustomerStream]
    ) -> None:
        """Leaf `leaf` is not archived. Nothing after it either: the archive
        ends there. Anything after it: a receipt was removed (or two claim
        one leaf), and restore refuses."""
        if heap and heap[0][0] < leaf:
            raise _fail("duplicate_leaf", f"two archived receipts claim leaf {heap[0][0]}",
                        heap[0][2])
        stalled = [stream.customer_id for stream in streams if stream.stalled]
        if heap or stalled:
            after = f"leaf {heap[0][0]}" if heap else f"later receipts of customer {stalled[0]}"
            raise AuditFailed(AuditFailure(
                "receipt_missing",
                f"leaf {leaf} is not in the archive, but {after} is: a receipt was removed "
                f"(to accept the loss, restore up to a checkpoint at or before leaf {leaf})",
                log_index=leaf,
            ))

    def _take(self, receipt: StoredReceipt) -> None:
        """Check one receipt at the next leaf and queue it for its checkpoint."""
        index = self.edge.size + len(self.pending)
        leaf, document = checked_document(receipt, index)
        for name in _SIGNED_COLUMNS:
            if name in document and document[name] != getattr(receipt, name):
                raise _fail("row_mismatch", f"the archived {name} of receipt "
                            f"{receipt.receipt_id} is not the signed one", receipt)
        if "signature" in document:
            result = verify_receipt(document, self.keys)
            if not result.ok:
                raise _fail(result.reason or "bad_signature", result.detail, receipt)
        link_chain(self.chains, receipt, index)
        balance = self.balances.get(receipt.customer_id, 0) + receipt.amount_minor
        if receipt.balance_after_minor != balance:
            raise _fail("balance_mismatch", f"customer {receipt.customer_id}: seq {receipt.seq} "
                        f"says balance {receipt.balance_after_minor}, the receipts sum to "
                        f"{balance}", receipt)
        self.balances[receipt.customer_id] = balance
        self.pending.append(receipt)
        self.leaves.append(leaf)

    # -- checkpoints --------------------------------------------------------------
    def _archived_checkpoints(self) -> Iterator[LogCheckpoint]:
        after = 0
        while page := self.archive.read_checkpoints(after, limits.restore_checkpoints_page_max):
            yield from page
            after = page[-1].tree_size

    def _commit(self, archived: LogCheckpoint) -> None:
        """The pending receipts are the leaves up to `archived`: check its
        signature and root, then write them with it as one commit."""
        signed = self._verified(archived)
        if not self.pending:
            # A second checkpoint of a size already restored: a fork, or one
            # that differs from the first in its stored columns only.
            raise AuditFailed(AuditFailure(
                "fork",
                f"two archived checkpoints of {archived.tree_size} leaves sign different "
                f"roots; the receipts rebuild sha256:{self.edge.root.hex()}",
                tree_size=archived.tree_size,
            ))
        appended = self.edge.appended(self.leaves, with_proofs=False)
        if appended.root != signed.root_hash:
            raise AuditFailed(AuditFailure(
                "root_mismatch",
                f"the archived receipts rebuild root sha256:{appended.root.hex()}, the "
                f"checkpoint signs sha256:{signed.root_hash.hex()}",
                tree_size=archived.tree_size,
            ))
        checkpoint = LogCheckpoint(signed.tree_size, signed.root_hash, signed.timestamp,
                                   archived.jws)
        self._create_accounts()
        log_indexed = LogAppend(old_size=self.edge.size, tiles=appended.tiles,
                                checkpoint=checkpoint)
        self.store.commit_batch([ReceiptWrite(r) for r in self.pending], [], log_indexed)
        self.edge.adopt(appended)
        self.on_receipts(len(self.pending))
        self.pending, self.leaves = [], []
        self.head = checkpoint
        self.checkpoints += 1

    def _verified(self, archived: LogCheckpoint) -> Checkpoint:
        signed = verified_checkpoint(archived, self.keys)
        if self.origin is None:
            self.origin = signed.origin
        elif signed.origin != self.origin:
            raise AuditFailed(AuditFailure(
                "origin_changed", f"origin {signed.origin!r} after {self.origin!r}",
                tree_size=archived.tree_size,
            ))
        return signed

    def _create_accounts(self) -> None:
        """Customers and entitlements first seen in the pending receipts."""
        for receipt in self.pending:
            if receipt.seq == 1:
                self.store.create_customer(Customer(
                    receipt.customer_id, "", receipt.currency, receipt.recorded_at
                ))
            key = (receipt.customer_id, receipt.entitlement_id)
            if key not in self.entitlements:
                self.entitlements.add(key)
                self.store.put_entitlement(Entitlement(
                    receipt.customer_id, receipt.entitlement_id, quota_minor=None,
                    policy="hard", status=RESTORED_STATUS, updated_at=self.now,
                ))
