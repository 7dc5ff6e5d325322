"""The audit at start-up: cheap checks that every head the service is about
to build on is the head of what is stored.

A full audit hashes every receipt (the reconciler's job, in the background);
this one reads O(customers + log n): the log's head checkpoint (its signature,
and the root its stored tiles give) and each account head against its last
receipt (seq, hash, balance, and that receipt's own hash and columns). A
failure becomes a recorded halt, so the service starts, answers reads, and
stays unready until an operator clears it: a crash loop would hide the reason.

The log head is always checked before the service reports ready (every
commit builds on it). The account heads cost ~44 us each (two reads and a
hash): 4.4 s for 100,000 customers, over the 2 s start-to-ready budget. So
`AccountHeadAudit` checks them in customer id order before ready for at most
`startup_audit_before_ready_ms`, then goes on in the background; an account
not yet reached is checked on its first use, before its actor starts, so no
charge ever builds on an unchecked head.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import orjson
import structlog

from actors.integrity.halts import IntegrityFailure
from actors.receipt_log import LogDamaged, rebuild_edge
from crypto import (
    GENESIS_HASH,
    CanonicalizationError,
    CheckpointError,
    ReceiptFieldError,
    TrustedKeys,
    receipt_hash,
    verify_checkpoint,
)
from ledger import LedgerStore, LogReader, StoredReceipt
from ledger.model import LogCheckpoint

__all__ = ["AccountHeadAudit", "audit_at_startup", "audit_log_at_startup"]

log = structlog.get_logger(__name__)

# The row's columns that must say what the signed receipt says.
_INDEXED = ("receipt_id", "customer_id", "seq", "amount_minor", "currency",
            "previous_receipt_hash", "balance_after_minor", "receipt_hash")


def audit_at_startup(
    store: LedgerStore, log_reader: LogReader, keys: TrustedKeys
) -> Iterator[IntegrityFailure]:
    """Every failure found, log first then customers in id order (LedgerError
    if the store cannot be read: that is not a finding)."""
    problem = audit_log_at_startup(log_reader, keys)
    if problem is not None:
        yield problem
    for customer_id in store.list_customer_ids():
        problem = _check_account_head(store, customer_id)
        if problem is not None:
            yield problem


def audit_log_at_startup(log_reader: LogReader, keys: TrustedKeys) -> IntegrityFailure | None:
    """The log head's check, which must pass before the service reports ready."""
    return _check_log(log_reader, keys)


class AccountHeadAudit:
    """Every account head present at start-up, checked once: in id order by
    `run` (before ready, then in the background), or by `check_before_use`
    for an account used before `run` reached it.

    Thread-safe: `run` runs on one thread while requests start actors on
    others. What it holds (the id list and the accounts checked out of order)
    is dropped once every account is checked.
    """

    def __init__(
        self,
        store: LedgerStore,
        on_failure: Callable[[IntegrityFailure], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._on_failure = on_failure
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: list[str] | None = None  # None: not listed yet
        self._next = 0  # accounts before this index are checked
        self._early: set[str] = set()  # checked out of order, at or past _next
        # Heads found broken: refused for good (the halt is recorded; a charge
        # racing the halt into readiness must not build on them either).
        self._broken: set[str] = set()
        self._done = False
        self.failures = 0
        self.checked = 0

    @property
    def done(self) -> bool:
        return self._done

    def run(self, duration_s: float, chunk: int = 200) -> bool:
        """Check accounts in id order for about `duration_s`; True when all are."""
        deadline_s = self._clock() + duration_s
        while not self._done and self._clock() < deadline_s:
            self._run_chunk(chunk)
        return self._done

    def _run_chunk(self, chunk: int) -> None:
        with self._lock:
            if self._ids is None:
                self._ids = sorted(self._store.list_customer_ids())
            ids = self._ids
            end = min(len(ids), self._next + chunk)
            for index in range(self._next, end):
                customer_id = ids[index]
                if customer_id not in self._early:
                    self._check(customer_id)
                self._early.discard(customer_id)
            self._next = end
            if end == len(ids):
                self._done, self._ids, self._early = True, None, set()
                log.info("billing.startup_audit_accounts_done",
                         checked=self.checked, failures=self.failures)

    def check_before_use(self, customer_id: str) -> bool:
        """Check this account now unless it was; False if its head is broken
        (the failure is recorded: the service halts)."""
        if self._done:
            return customer_id not in self._broken
        with self._lock:
            if customer_id in self._broken:
                return False
            if self._done or customer_id in self._early or self._reached(customer_id):
                return True
            healthy = self._check(customer_id)  # LedgerError: not checked yet
            self._early.add(customer_id)
            return healthy

    def _reached(self, customer_id: str) -> bool:
        # Ids are checked in sorted order: an id below the next one to check
        # was checked, or was created after the list was read (nothing to audit).
        ids = self._ids
        return ids is not None and self._next > 0 and customer_id <= ids[self._next - 1]

    def _check(self, customer_id: str) -> bool:
        self.checked += 1
        problem = _check_account_head(self._store, customer_id)
        if problem is None:
            return True
        self.failures += 1
        self._broken.add(customer_id)
        self._on_failure(problem)
        return False


def _check_log(log_reader: LogReader, keys: TrustedKeys) -> IntegrityFailure | None:
    head = log_reader.log_head()
    if head is None:
        return None
    signed = _checkpoint_problem(head, keys)
    if signed is not None:
        return IntegrityFailure("log_head_invalid", signed)
    try:
        rebuild_edge(log_reader)
    except LogDamaged as damage:
        return IntegrityFailure("log_damaged", str(damage))
    return None


def _checkpoint_problem(head: LogCheckpoint, keys: TrustedKeys) -> str | None:
    try:
        checkpoint = verify_checkpoint(head.jws, keys)
    except CheckpointError as error:
        return f"the head checkpoint of size {head.tree_size} does not verify: {error}"
    if (checkpoint.tree_size, checkpoint.root_hash) != (head.tree_size, head.root_hash):
        return (
            f"the head checkpoint row (size {head.tree_size}) is not what its signed "
            f"checkpoint states (size {checkpoint.tree_size})"
        )
    return None


def _check_account_head(store: LedgerStore, customer_id: str) -> IntegrityFailure | None:
    head = store.get_account_head(customer_id)
    if head is None:
        return IntegrityFailure(
            "unknown_account", f"customer {customer_id} has no account row", customer_id
        )
    seq, head_hash, balance_minor = head
    page = store.list_receipts(customer_id, max(0, seq - 1), 2)
    last = page[0] if page and page[0].seq == seq else None
    if seq == 0:
        if page:
            return _fail("receipts_beyond_head", customer_id, page[0],
                         "receipts exist but the account head is at seq 0")
        if (head_hash, balance_minor) != (GENESIS_HASH, 0):
            return IntegrityFailure(
                "head_hash_mismatch",
                f"customer {customer_id}: an account with no receipt is not at the genesis head",
                customer_id,
            )
        return None
    if last is None:
        return IntegrityFailure(
            "head_ahead_of_receipts",
            f"customer {customer_id}: the account head is at seq {seq} but there is no "
            "receipt at that seq",
            customer_id,
        )
    if len(page) > 1 and (store.get_account_head(customer_id) or head)[0] < page[1].seq:
        return _fail("receipts_beyond_head", customer_id, page[1],
                     f"a receipt at seq {page[1].seq} is beyond the account head at seq {seq}")
    problem = _receipt_problem(last)
    if problem is not None:
        return _fail("receipt_altered", customer_id, last, problem)
    if head_hash != last.receipt_hash:
        return _fail("head_hash_mismatch", customer_id, last,
                     f"the account head names hash {head_hash} but its last receipt is "
                     f"{last.receipt_hash}")
    if balance_minor != last.balance_after_minor:
        return _fail("head_balance_mismatch", customer_id, last,
                     f"the account balance is {balance_minor} but its last receipt says "
                     f"{last.balance_after_minor}")
    return None


def _receipt_problem(stored: StoredReceipt) -> str | None:
    """Why the stored receipt is not what was signed, or None."""
    try:
        document = orjson.loads(stored.receipt_json)
        computed = receipt_hash(document)
    except (orjson.JSONDecodeError, KeyError, TypeError, ReceiptFieldError,
            CanonicalizationError) as error:
        return f"the receipt cannot be read as a receipt: {error!r}"
    if computed != stored.receipt_hash or document.get("receipt_hash") != computed:
        return "the receipt does not hash to its receipt_hash: it was altered"
    for name in _INDEXED:
        if document.get(name) != getattr(stored, name):
            return f"the ledger row's {name} is not what the signed receipt says"
    return None


def _fail(reason: str, customer_id: str, receipt: StoredReceipt, what: str) -> IntegrityFailure:
    return IntegrityFailure(
        reason,
        f"customer {customer_id}, receipt {receipt.receipt_id} (seq {receipt.seq}): {what}",
        customer_id,
        receipt.receipt_id,
    )
