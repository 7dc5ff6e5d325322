"""The ledger writer with a slow (KMS-shaped) signer commits the signed
batches queued behind the next one in the same transaction: fewer commits,
every batch's checkpoint still stored, every receipt proved against its own
batch's checkpoint; and a conflict inside such a commit still answers every
charge exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from crypto import TrustedKeys, receipt_leaf, verify_checkpoint, verify_inclusion
from ledger import ChainConflict, LogAppend, LogConflict, OutboxMessage, ReceiptWrite
from ledger.log_audit import audit_log
from tests.actors.test_writer_rebuild import _KEY, _Accounts, _FailingLedger, _SlowKey
from tests.contract._chain import customer, entitlement

pytestmark = pytest.mark.timeout(60)

_CUSTOMERS = ("cus_a", "cus_b")
_CHARGES = 120


class _ConflictOnceLedger(_FailingLedger):
    """Raises LogConflict (another gateway appended first), or with
    `chain_conflict` a ChainConflict on cus_b (another writer advanced its
    chain), on its first commit of several merged batches, before writing
    anything."""

    conflicted: list[int]
    chain_conflict = False

    def commit_batch(
        self,
        writes: Sequence[ReceiptWrite],
        outbox: Sequence[OutboxMessage],
        log_append: LogAppend | None = None,
    ) -> None:
        if log_append is not None and log_append.earlier and not self.conflicted:
            self.conflicted.append(len(log_append.earlier) + 1)
            if self.chain_conflict:
                raise ChainConflict({"cus_b"}, {"cus_b": "stale_seq"})
            stored = self.log_head()
            raise LogConflict(
                stored_size=0 if stored is None else stored.tree_size,
                expected_size=log_append.earlier[0].old_size + 1,
            )
        super().commit_batch(writes, outbox, log_append)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[_ConflictOnceLedger]:
    ledger = _ConflictOnceLedger.open(tmp_path / "ledger.sqlite3")
    ledger.key = _SlowKey(0.05)
    ledger.lost_checkpoints = []
    ledger.conflicted = [-1]  # disarmed unless a test arms it
    for customer_id in _CUSTOMERS:
        ledger.create_customer(customer(customer_id))
        ledger.put_entitlement(entitlement(customer_id, quota_minor=None))
    yield ledger
    ledger.close()


def _charge_many(accounts: _Accounts) -> list[str]:
    """Charges from several threads at once, so batches pile up behind
    their signatures; returns the idempotency keys, all answered."""
    keys = [f"{cid}-{n}" for n in range(_CHARGES // len(_CUSTOMERS)) for cid in _CUSTOMERS]
    events: list[threading.Event] = []
    lock = threading.Lock()

    def send(chunk: list[str]) -> None:
        for key in chunk:
            done = accounts.charge(key.split("-")[0], key)
            with lock:
                events.append(done)
            time.sleep(0.002)

    senders = [threading.Thread(target=send, args=(keys[i::4],)) for i in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    assert len(events) == len(keys)
    assert all(done.wait(20) for done in events), "a charge was never answered"
    return keys


def _commits(accounts: _Accounts) -> int:
    (family,) = accounts.metrics.commit_batch_receipts.collect()
    return int(next(s.value for s in family.samples if s.name.endswith("_count")))


def _check_log(store: _FailingLedger, accounts: _Accounts, keys: list[str]) -> int:
    """Every charge committed once, proved against its own batch's stored
    checkpoint; the log audits clean. Returns the stored checkpoints."""
    jwks = {"keys": [_KEY.public_jwk()]}
    stored = store.receipts_by_log_index(0, 1000)
    assert sorted(r.idempotency_key for r in stored) == sorted(keys)  # once each
    checkpoints = {c.tree_size: c for c in store.log_checkpoints(0, 1000)}
    assert store.log_head() == checkpoints[len(keys)]
    for key in keys:
        answer = accounts.answers[key]
        assert answer.kind == "committed" and answer.receipt and answer.log, answer
        proof = answer.log
        own = checkpoints[proof.tree_size]  # its batch's checkpoint, stored
        assert proof.checkpoint_jws == own.jws
        signed = verify_checkpoint(own.jws, jwks)
        assert signed.tree_size == proof.tree_size
        verify_inclusion(
            receipt_leaf(answer.receipt.receipt_hash), proof.index, proof.tree_size,
            proof.inclusion, signed.root_hash,
        )
    report = audit_log(store, TrustedKeys(jwks))
    assert report.ok, report.failure
    assert report.leaves == len(keys)
    return len(checkpoints)


def test_signed_batches_behind_the_next_commit_in_its_transaction(
    store: _ConflictOnceLedger,
) -> None:
    accounts = _Accounts(store)
    try:
        keys = _charge_many(accounts)
    finally:
        accounts.stop()
    checkpoints = _check_log(store, accounts, keys)
    commits = _commits(accounts)
    # One checkpoint per begun batch, fewer commits than batches: merged.
    assert commits < checkpoints
    assert store.key.asked == checkpoints  # no signature thrown away


def _charge_with_one_conflict(
    store: _ConflictOnceLedger, *, chain_conflict: bool
) -> tuple[_Accounts, list[str]]:
    """Charge with the store armed to refuse one merged commit (a log or a
    chain conflict); the accounts, stopped, and the idempotency keys."""
    store.conflicted, store.chain_conflict = [], chain_conflict  # armed
    accounts = _Accounts(store)
    try:
        keys = _charge_many(accounts)
    finally:
        accounts.stop()
    assert store.conflicted and store.conflicted[0] >= 2  # it hit a merged commit
    return accounts, keys


def test_a_log_conflict_in_a_merged_commit_answers_every_charge_once(
    store: _ConflictOnceLedger,
) -> None:
    accounts, keys = _charge_with_one_conflict(store, chain_conflict=False)
    _check_log(store, accounts, keys)


def test_a_chain_conflict_in_a_merged_commit_answers_every_charge_once(
    store: _ConflictOnceLedger,
) -> None:
    accounts, keys = _charge_with_one_conflict(store, chain_conflict=True)
    answers = {key: accounts.answers[key] for key in keys}
    committed = {key for key, answer in answers.items() if answer.kind == "committed"}
    refused = {key for key, answer in answers.items() if answer.kind == "refused"}
    assert committed | refused == set(keys)
    assert all(answers[key].retry_safe for key in refused)  # nothing of them was written
    assert refused and all(key.startswith("cus_b") for key in refused)
    stored = store.receipts_by_log_index(0, 1000)
    assert sorted(r.idempotency_key for r in stored) == sorted(committed)  # each once
    report = audit_log(store, TrustedKeys({"keys": [_KEY.public_jwk()]}))
    assert report.ok and report.leaves == len(committed), report.failure
