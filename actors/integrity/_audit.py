"""Audit of one customer's ledger: chain, signatures, balances, account head, usage.

Pure: reads the store, writes nothing. Safe while the customer is being
charged: the head is read before the receipts and every commit moves the head
and the receipts together, so receipts committed during the audit are told
apart from receipts that exist without a head (see `_check_head`).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import orjson

from actors.charges import reversed_receipt_id
from crypto import (
    GENESIS_HASH,
    ChainReport,
    LeafCheck,
    TrustedKeys,
    VerificationResult,
    receipt_leaf,
    verify_chain,
)
from ledger import Entitlement, LedgerStore, StoredReceipt
from ledger.errors import check_invariant
from ledger.log_proofs import LogProofs

__all__ = ["CustomerAudit", "LedgerReceipts", "audit_customer"]

# The StoredReceipt columns the gateway serves and sums must say what the
# signed receipt says; a difference means one of them was altered.
_INDEXED_FIELDS = (
    "receipt_id",
    "customer_id",
    "seq",
    "entitlement_id",
    "amount_minor",
    "currency",
    "receipt_hash",
    "previous_receipt_hash",
    "balance_after_minor",
    "recorded_at",
)


@dataclass(frozen=True, slots=True)
class CustomerAudit:
    """The verdict on one customer.

    `reason` is a stable code (for metrics and alerts), `detail` says in words
    what is wrong and where. `receipts_verified` counts receipts whose
    signature, hash and link checked out.
    """

    customer_id: str
    ok: bool
    reason: str | None = None
    detail: str = ""
    receipts_verified: int = 0
    head_seq: int | None = None
    receipt_id: str | None = None


class LedgerReceipts:
    """One customer's receipts, read from the ledger once for the audit and
    the comparison of the copies (the audit's process did both: the second
    read was ~a fifth of its CPU, bench_audit --child-cpu). Nothing is read
    until the first iteration, which reads lazily, as `store.iter_receipts`;
    a later one gives what was read, then reads on where the first stopped
    (an audit stops at a broken link)."""

    def __init__(self, store: LedgerStore, customer_id: str) -> None:
        self.customer_id = customer_id
        self._store = store
        self._read: list[StoredReceipt] = []
        self._rest: Iterator[StoredReceipt] | None = None
        self._done = False

    def __iter__(self) -> Iterator[StoredReceipt]:
        yield from list(self._read)  # a copy: the loop below extends it
        if self._done:
            return
        if self._rest is None:
            self._rest = iter(self._store.iter_receipts(self.customer_id))
        for receipt in self._rest:  # an iteration left early leaves it open
            self._read.append(receipt)
            yield receipt
        self._done = True


@dataclass(frozen=True, slots=True)
class _Problem:
    index: int  # 0-based position in the chain; a chain failure at the same index wins
    reason: str
    detail: str
    receipt_id: str | None = None


class _Unreadable(Exception):
    def __init__(self, problem: _Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass
class _Walk:
    """What the audit learns while the receipts stream through verify_chain."""

    head_seq: int
    count: int = 0
    balance_minor: int = 0  # sum of amount_minor so far
    at_head: StoredReceipt | None = None
    last: StoredReceipt | None = None
    problem: _Problem | None = None
    # Per entitlement: prefix sums of its amounts, and how many of them were
    # reached by the head read before the walk.
    prefix_sums: dict[str, array[int]] = field(default_factory=dict)
    at_head_count: dict[str, int] = field(default_factory=dict)
    non_positive: set[str] = field(default_factory=set)
    # What is left to reverse of each charge seen so far (see _check_reversal).
    reversible: dict[str, int] = field(default_factory=dict)

    def documents(self, receipts: Iterator[StoredReceipt]) -> Iterator[Mapping[str, object]]:
        for index, stored in enumerate(receipts):
            try:
                document = orjson.loads(stored.receipt_json)
            except orjson.JSONDecodeError as error:
                raise _Unreadable(
                    _Problem(
                        index,
                        "unreadable_receipt",
                        f"receipt {stored.receipt_id} (seq {stored.seq}) is not JSON: {error}",
                        stored.receipt_id,
                    )
                ) from error
            if not isinstance(document, dict):
                raise _Unreadable(
                    _Problem(
                        index,
                        "unreadable_receipt",
                        f"receipt {stored.receipt_id} (seq {stored.seq}) is not a JSON object",
                        stored.receipt_id,
                    )
                )
            self._observe(index, stored, document)
            yield document

    def leaf_check(self, log: LogProofs) -> LeafCheck:
        """A receipt proved by its commit's checkpoint: its row's leaf in the
        stored log must be the hash of its core."""

        def check(document: Mapping[str, object], computed_hash: str) -> VerificationResult:
            stored = self.last
            where = f"receipt {document.get('receipt_id')}"
            if stored is None or stored.log_index is None:
                return VerificationResult(False, "not_in_log", f"{where} has no log index")
            if log.leaf(stored.log_index) != receipt_leaf(computed_hash):
                return VerificationResult(
                    False,
                    "leaf_mismatch",
                    f"{where}: leaf {stored.log_index} of the log is not the hash of its core",
                )
            return VerificationResult(True)

        return check

    def _observe(self, index: int, stored: StoredReceipt, document: dict[str, object]) -> None:
        self.count += 1
        self.balance_minor += stored.amount_minor
        self.last = stored
        if stored.seq == self.head_seq:
            self.at_head = stored
        sums = self.prefix_sums.setdefault(stored.entitlement_id, array("q", [0]))
        sums.append(sums[-1] + stored.amount_minor)
        if stored.amount_minor <= 0:
            self.non_positive.add(stored.entitlement_id)
        else:
            self.reversible[stored.receipt_id] = stored.amount_minor
        if stored.seq <= self.head_seq:
            self.at_head_count[stored.entitlement_id] = len(sums) - 1
        if self.problem is not None:
            return
        where = f"receipt {stored.receipt_id} (seq {stored.seq})"
        for name in _INDEXED_FIELDS:
            if document.get(name) != getattr(stored, name):
                self.problem = _Problem(
                    index,
                    "index_mismatch",
                    f"{where}: the ledger row says {name} = {getattr(stored, name)!r} but the "
                    f"signed receipt says {document.get(name)!r}",
                    stored.receipt_id,
                )
                return
        if stored.amount_minor <= 0:
            self._check_reversal(index, stored, where)
            if self.problem is not None:
                return
        if stored.balance_after_minor != self.balance_minor:
            self.problem = _Problem(
                index,
                "balance_mismatch",
                f"{where}: balance_after_minor is {stored.balance_after_minor} but the receipts "
                f"up to it sum to {self.balance_minor}",
                stored.receipt_id,
            )


    def _check_reversal(self, index: int, stored: StoredReceipt, where: str) -> None:
        """A receipt that is not a charge must be a reversal of an earlier
        charge of this chain, within what is left of it: otherwise money was
        taken off a balance without a signed reason."""
        original = reversed_receipt_id(stored.idempotency_key, stored.amount_minor)
        left = self.reversible.get(original or "")
        if original is None or left is None or -stored.amount_minor > left:
            self.problem = _Problem(
                index,
                "invalid_reversal",
                f"{where}: amount {stored.amount_minor} is not a reversal of what is left "
                f"of an earlier charge of this customer",
                stored.receipt_id,
            )
            return
        self.reversible[original] = left + stored.amount_minor


def audit_customer(
    store: LedgerStore,
    jwks: Mapping[str, object] | TrustedKeys,
    customer_id: str,
    log: LogProofs | None = None,
    receipts: LedgerReceipts | None = None,
) -> CustomerAudit:
    """Verify a customer's whole ledger against the public keys in `jwks`.

    Checks, first failure wins: every receipt's hash, signature and link
    (gapless seq from 1 at the genesis hash); the ledger row's columns equal
    the signed receipt; each balance_after_minor is the running sum of
    amounts; the account head (seq, last hash, balance) is the last receipt;
    each entitlement's used_minor is the sum of its latest receipts (usage
    only grows by receipts and resets to 0 at a new period). A malformed JWKS
    raises JWKSError; a store failure raises LedgerError. `receipts`: the
    customer's, not read yet (they are read after the head), kept for the
    caller to read again.
    """
    keys = jwks if isinstance(jwks, TrustedKeys) else TrustedKeys(jwks)
    if receipts is not None:
        check_invariant(receipts.customer_id == customer_id, "another customer's receipts")
    head = store.get_account_head(customer_id)
    if head is None:
        return CustomerAudit(
            customer_id, False, "unknown_account", f"customer {customer_id} has no account row"
        )
    head_seq, head_hash, head_balance = head
    # After the head: usage read now covers at least the receipts up to head_seq.
    entitlements = store.get_entitlements(customer_id)
    walk = _Walk(head_seq=head_seq)
    try:
        report = verify_chain(
            walk.documents(iter(receipts if receipts is not None else
                                store.iter_receipts(customer_id))),
            keys,
            leaf_check=None if log is None else walk.leaf_check(log),
        )
    except _Unreadable as unreadable:
        return _failed(customer_id, unreadable.problem, walk, head_seq)
    problem = _first_problem(report, walk)
    if problem is None:
        problem = _check_head(store, customer_id, walk, head_seq, head_hash, head_balance)
    if problem is None:
        problem = _check_usage(walk, entitlements)
    if problem is not None:
        return _failed(customer_id, problem, walk, head_seq, report.verified)
    return CustomerAudit(customer_id, True, receipts_verified=report.verified, head_seq=head_seq)


def _failed(
    customer_id: str, problem: _Problem, walk: _Walk, head_seq: int, verified: int | None = None
) -> CustomerAudit:
    return CustomerAudit(
        customer_id,
        False,
        problem.reason,
        f"customer {customer_id}: {problem.detail}",
        receipts_verified=walk.count if verified is None else verified,
        head_seq=head_seq,
        receipt_id=problem.receipt_id,
    )


def _first_problem(report: ChainReport, walk: _Walk) -> _Problem | None:
    chain: _Problem | None = None
    if report.failure is not None:
        failure = report.failure
        what = f"receipt {failure.receipt_id}" if failure.receipt_id else "a receipt"
        chain = _Problem(
            failure.index,
            failure.reason,
            f"{what} at position {failure.index + 1} of the chain: {failure.detail}",
            failure.receipt_id,
        )
    elif report.verified and (report.first_seq != 1 or not report.starts_at_genesis):
        chain = _Problem(
            0,
            "chain_start",
            f"the chain starts at seq {report.first_seq} (previous hash "
            f"{'genesis' if report.starts_at_genesis else 'not genesis'}), not at seq 1 "
            "from the genesis hash: its first receipts are missing",
        )
    side = walk.problem
    if side is not None and (chain is None or side.index < chain.index):
        return side
    return chain


def _check_head(
    store: LedgerStore,
    customer_id: str,
    walk: _Walk,
    head_seq: int,
    head_hash: str,
    head_balance: int,
) -> _Problem | None:
    last_seq = walk.last.seq if walk.last is not None else 0
    end = walk.count
    if last_seq < head_seq:
        return _Problem(
            end,
            "head_ahead_of_receipts",
            f"the account head is at seq {head_seq} but the last receipt is seq {last_seq}: "
            "receipts are missing from the end of the chain",
        )
    at_head = walk.at_head
    expected_hash = at_head.receipt_hash if at_head is not None else GENESIS_HASH
    expected_balance = at_head.balance_after_minor if at_head is not None else 0
    if head_hash != expected_hash:
        return _Problem(
            end,
            "head_hash_mismatch",
            f"the account head at seq {head_seq} names last receipt hash {head_hash} but "
            f"the receipt at that seq hashes to {expected_hash}",
        )
    if head_balance != expected_balance:
        return _Problem(
            end,
            "head_balance_mismatch",
            f"the account balance is {head_balance} but the receipts up to seq {head_seq} "
            f"sum to {expected_balance}",
        )
    if last_seq > head_seq:
        # Receipts after the head we read: fine if committed meanwhile (the head
        # moves with them), not if the head still has not reached them.
        now = store.get_account_head(customer_id)
        now_seq = now[0] if now is not None else 0
        if now_seq < last_seq:
            return _Problem(
                end,
                "receipts_beyond_head",
                f"receipts go up to seq {last_seq} but the account head is at seq {now_seq}",
            )
    return None


def _check_usage(walk: _Walk, entitlements: Mapping[str, Entitlement]) -> _Problem | None:
    for entitlement_id, entitlement in sorted(entitlements.items()):
        if entitlement_id in walk.non_positive:
            continue  # prefix sums are not monotonic: a suffix cannot be found by search
        used = entitlement.used_minor
        sums = walk.prefix_sums.get(entitlement_id, array("q", [0]))
        # Usage was read between the head and the receipts: it reflects some
        # prefix of this entitlement's receipts that reaches the head.
        first = walk.at_head_count.get(entitlement_id, 0)
        if not any(_is_suffix_sum(sums, end, used) for end in range(first, len(sums))):
            return _Problem(
                walk.count,
                "usage_mismatch",
                f"entitlement {entitlement_id} has used_minor {used}, which is not the sum of "
                f"its latest receipts (all of them sum to {sums[-1]})",
            )
    return None


def _is_suffix_sum(sums: array[int], end: int, used: int) -> bool:
    """Whether `used` == sums[end] - sums[start] for some start <= end."""
    wanted = sums[end] - used
    start = bisect.bisect_left(sums, wanted, 0, end + 1)
    return start <= end and sums[start] == wanted
