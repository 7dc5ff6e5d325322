"""The account actor's idempotency across a batch, with a pipeline that
commits each receipt the moment it is handed over (no timing involved)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from actors.account import AccountActor, AccountDeps
from actors.charges import BatchReplies, ChargeBatch, ChargeCommand, ChargeOutcome
from actors.metrics import ActorMetrics
from actors.pending import Barrier, PendingReceipt
from actors.pipeline import Pipeline
from actors.signer import _SignerStage
from crypto import SigningKey, verify_receipt
from ledger import ReceiptWrite, StoredReceipt
from ledger.clock import utc_now_rfc3339
from ledger.sqlite import SqliteLedger
from tests.contract._chain import customer, entitlement


class CommitAtOnce:
    """Signs and commits a receipt inside `submit`: by the time the actor
    handles its next event, the previous one is durable and settled."""

    def __init__(self, store: SqliteLedger, metrics: ActorMetrics) -> None:
        self._store = store
        self._key = SigningKey.generate()
        self._signer = _SignerStage(self._key, Pipeline(), 1, 1, metrics, on_fatal=lambda _: None)

    def submit(self, item: PendingReceipt | Barrier) -> None:
        if isinstance(item, Barrier):
            item.done.set()
            return
        if item.receipt is None:  # not signed by a real signer stage on the way
            self._signer._seal(item, self._key.sign_detached(item.canonical_core))
        assert item.receipt is not None
        self._store.commit_batch([ReceiptWrite(item.receipt)], [])
        item.complete(ChargeOutcome(kind="committed", receipt=item.receipt))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger.open(tmp_path / "ledger.sqlite3")
    ledger.create_customer(customer("cus_a"))
    ledger.put_entitlement(entitlement("cus_a", quota_minor=None))
    yield ledger
    ledger.close()


class CountingLedger(SqliteLedger):
    """Counts the idempotency-key reads the actor makes."""

    key_reads = 0  # find_receipt_by_key reads through this one too

    def find_receipts_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredReceipt]:
        self.key_reads += 1
        return super().find_receipts_by_keys(customer_id, idempotency_keys)


def _charge_batch(
    store: SqliteLedger,
    keys: list[str],
    make_signer: Callable[[Pipeline, ActorMetrics], _SignerStage] | None = None,
) -> list[ChargeOutcome]:
    metrics = ActorMetrics(CollectorRegistry())
    pipeline = Pipeline()
    stage = CommitAtOnce(store, metrics)
    pipeline.attach_signer(stage if make_signer is None else make_signer(pipeline, metrics))
    pipeline.attach_writer(stage)
    deps = AccountDeps(
        store=store, pipeline=pipeline, metrics=metrics, now_rfc3339=utc_now_rfc3339, activity={}
    )
    answers: list[list[ChargeOutcome]] = []
    answered = threading.Event()

    def on_all(outcomes: Sequence[ChargeOutcome]) -> None:
        answers.append(list(outcomes))
        answered.set()

    replies = BatchReplies(len(keys), on_all)
    commands = tuple(
        ChargeCommand(
            customer_id="cus_a",
            idempotency_key=key,
            entitlement_id="usage",
            amount_minor=100,
            currency="USD",
            usage_description="one call",
            event_timestamp="2026-01-01T00:00:00Z",
            reply=replies.reply_for(index),
        )
        for index, key in enumerate(keys)
    )
    ref = AccountActor.start(None, "cus_a", deps)
    try:
        ref.ask(ChargeBatch(commands), timeout=10)
        assert answered.wait(10), "every charge is answered"
    finally:
        ref.stop()
    assert len(answers) == 1
    return answers[0]


def test_a_key_settled_earlier_in_the_same_batch_is_replayed(store: SqliteLedger) -> None:
    # The store already holds a receipt, so the actor reads the batch's keys.
    (seed,) = _charge_batch(store, ["seed"])
    assert seed.kind == "committed"
    outcomes = _charge_batch(store, ["k1", "k2", "k3", "k1", "k2"])
    assert [o.kind for o in outcomes] == ["committed"] * 3 + ["replayed"] * 2
    receipts = [o.receipt for o in outcomes]
    assert receipts[3] == receipts[0] and receipts[4] == receipts[1]
    assert store.get_account_head("cus_a") is not None
    assert [r.idempotency_key for r in store.list_receipts("cus_a", 0, 10)] == [
        "seed",
        "k1",
        "k2",
        "k3",
    ]


def test_keys_stored_before_the_batch_are_replayed(store: SqliteLedger) -> None:
    first = _charge_batch(store, ["a", "b"])
    again = _charge_batch(store, ["b", "c", "a"])
    assert [o.kind for o in again] == ["replayed", "committed", "replayed"]
    assert again[0].receipt == first[1].receipt and again[2].receipt == first[0].receipt
    assert store.get_account_head("cus_a")[0] == 3  # type: ignore[index]


def test_receipts_signed_in_a_signing_process_verify(store: SqliteLedger) -> None:
    key = SigningKey.generate()
    stages: list[_SignerStage] = []

    def signer(pipeline: Pipeline, metrics: ActorMetrics) -> _SignerStage:
        stage = _SignerStage(key, pipeline, 2, 16, metrics, lambda _: None, processes=True)
        stage.start()
        stages.append(stage)
        return stage

    try:
        outcomes = _charge_batch(store, [f"k{i}" for i in range(5)], signer)
    finally:
        stages[0].stop(5.0)
    assert [o.kind for o in outcomes] == ["committed"] * 5
    for outcome in outcomes:
        assert outcome.receipt is not None
        document = json.loads(outcome.receipt.receipt_json)
        result = verify_receipt(document, {"keys": [key.public_jwk()]})
        assert result.ok, result


def test_a_dead_signing_process_answers_retry_safe_and_reports(store: SqliteLedger) -> None:
    key = SigningKey.generate()
    fatal: list[str] = []
    stages: list[_SignerStage] = []

    def signer(pipeline: Pipeline, metrics: ActorMetrics) -> _SignerStage:
        if not stages:
            stage = _SignerStage(key, pipeline, 1, 16, metrics, fatal.append, processes=True)
            stage.start()
            stages.append(stage)
        return stages[0]

    try:
        (first,) = _charge_batch(store, ["k0"], signer)
        for process in stages[0]._processes:
            os.kill(process._process.pid, signal.SIGKILL)
            process._process.wait(timeout=10)
        (second,) = _charge_batch(store, ["k1"], signer)
    finally:
        stages[0].stop(5.0)
    assert first.kind == "committed"
    assert (second.kind, second.retry_safe) == ("refused", True)
    assert fatal, "the signer pool reports itself failed, so its supervisor restarts it"
    assert [r.idempotency_key for r in store.list_receipts("cus_a", 0, 10)] == ["k0"]


def test_a_new_customers_first_batch_reads_no_keys(tmp_path: Path) -> None:
    # Before the fix every event after the first read the store for its key
    # (99 reads, each giving up the GIL, for a first batch of 100).
    ledger = CountingLedger.open(tmp_path / "ledger.sqlite3")
    try:
        ledger.create_customer(customer("cus_a"))
        ledger.put_entitlement(entitlement("cus_a", quota_minor=None))
        outcomes = _charge_batch(ledger, ["k1", "k2", "k3"])
        assert [o.kind for o in outcomes] == ["committed"] * 3
        assert ledger.key_reads == 0
        again = _charge_batch(ledger, ["k4", "k2", "k5"])
        assert [o.kind for o in again] == ["committed", "replayed", "committed"]
        assert ledger.key_reads == 1  # one read for the whole second batch
    finally:
        ledger.close()
