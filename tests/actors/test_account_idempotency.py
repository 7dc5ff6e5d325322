"""The account actor's idempotency across a batch, with a pipeline that
commits each receipt the moment it is handed over (no timing involved)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from actors.account import AccountActor, AccountDeps
from actors.charges import BatchReplies, ChargeBatch, ChargeCommand, ChargeOutcome
from actors.metrics import ActorMetrics
from actors.pending import Barrier, PendingReceipt
from actors.pipeline import Pipeline
from actors.signer import _SignerStage
from crypto import SigningKey
from ledger import ReceiptWrite
from ledger.clock import utc_now_rfc3339
from ledger.sqlite import SqliteLedger
from tests.contract._chain import customer, entitlement


class CommitAtOnce:
    """Signs and commits a receipt inside `submit`: by the time the actor
    handles its next event, the previous one is durable and settled."""

    def __init__(self, store: SqliteLedger, metrics: ActorMetrics) -> None:
        self._store = store
        self._signer = _SignerStage(
            SigningKey.generate(), Pipeline(), 1, 1, metrics, on_fatal=lambda _: None
        )

    def submit(self, item: PendingReceipt | Barrier) -> None:
        if isinstance(item, Barrier):
            item.done.set()
            return
        self._signer._sign(item)
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


def _charge_batch(store: SqliteLedger, keys: list[str]) -> list[ChargeOutcome]:
    metrics = ActorMetrics(CollectorRegistry())
    pipeline = Pipeline()
    stage = CommitAtOnce(store, metrics)
    pipeline.attach_signer(stage)
    pipeline.attach_writer(stage)
    deps = AccountDeps(
        store=store, pipeline=pipeline, metrics=metrics, now_rfc3339=utc_now_rfc3339, activity={}
    )
    answers: list[list[ChargeOutcome]] = []
    replies = BatchReplies(len(keys), lambda outcomes: answers.append(list(outcomes)))
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
