"""The account actor's idempotency across batches, through the real signer
and ledger writer stages on a real SQLite file: in-batch repeats, keys the
actor remembers, and keys only the store still knows."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from actors.account import AccountActor, AccountDeps, Reload
from actors.charges import ChargeBatch, ChargeCommand, ChargeOutcome
from actors.metrics import ActorMetrics
from actors.pipeline import Pipeline
from actors.receipt_log import LogAppender
from actors.signer import _SignerStage
from actors.tickets import TicketBatch
from actors.writer import _WriterStage, no_outbox
from crypto import SigningKey, verify_receipt
from ledger import StoredReceipt
from ledger.clock import utc_now_rfc3339
from ledger.sqlite import SqliteLedger
from supervisor import ActorScheduler
from tests.contract._chain import customer, entitlement

pytestmark = pytest.mark.timeout(60)

_KEY = SigningKey.generate()
MakeSigner = Callable[[Pipeline, ActorMetrics], _SignerStage]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteLedger]:
    ledger = SqliteLedger.open(tmp_path / "ledger.sqlite3")
    ledger.create_customer(customer("cus_a"))
    ledger.put_entitlement(entitlement("cus_a", quota_minor=None))
    yield ledger
    ledger.close()


class CountingLedger(SqliteLedger):
    """Counts idempotency-key reads (the actor's and the ledger writer's)."""

    key_reads = 0  # find_receipt_by_key reads through this one too

    def find_receipts_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredReceipt]:
        self.key_reads += 1
        return super().find_receipts_by_keys(customer_id, idempotency_keys)


Charge = str | tuple[str, int]  # a key, or (key, amount_minor)


class Account:
    """One live account actor, as the service runs it: its receipts signed
    and group-committed by the real stages, and a commit conflict making it
    reload (the account directory's part)."""

    def __init__(
        self,
        store: SqliteLedger,
        make_signer: MakeSigner | None = None,
        settled_keys_max: int = 128,
    ) -> None:
        metrics = ActorMetrics(CollectorRegistry())
        self.metrics = metrics
        self.pipeline = Pipeline()
        if make_signer is None:
            self.signer = _SignerStage(_KEY, self.pipeline, 1, 256, metrics, lambda _: None)
            self.signer.start()
        else:
            self.signer = make_signer(self.pipeline, metrics)
        self._own_signer = make_signer is None
        receipt_log = LogAppender(store, lambda: _KEY, "test.example/log", utc_now_rfc3339)
        self.writer = _WriterStage(
            store,
            receipt_log,
            self.pipeline,
            metrics,
            no_outbox,
            64,
            256,
            0.0,
            lambda _: None,
            lambda _: None,
        )
        self.writer.start()
        self.pipeline.attach_signer(self.signer)
        self.pipeline.attach_writer(self.writer)
        self.pipeline.on_chain_failed = lambda customer_id: self.ref.tell(Reload())
        self.scheduler = ActorScheduler(2, "test-accounts")
        deps = AccountDeps(
            store=store,
            scheduler=self.scheduler,
            pipeline=self.pipeline,
            metrics=metrics,
            now_rfc3339=utc_now_rfc3339,
            activity={},
            settled_keys_max=settled_keys_max,
        )
        self.ref = AccountActor.start(None, "cus_a", deps)

    def charge(self, charges: Sequence[Charge]) -> list[ChargeOutcome]:
        answers: list[list[ChargeOutcome]] = []
        answered = threading.Event()

        def on_all(outcomes: Sequence[ChargeOutcome]) -> None:
            answers.append(list(outcomes))
            answered.set()

        batch = TicketBatch(len(charges), on_all)
        commands = []
        for ticket, charge in zip(batch.issue(), charges, strict=True):
            key, amount_minor = (charge, 100) if isinstance(charge, str) else charge
            commands.append(
                ChargeCommand(
                    customer_id="cus_a",
                    idempotency_key=key,
                    entitlement_id="usage",
                    amount_minor=amount_minor,
                    currency="USD",
                    usage_description="one call",
                    event_timestamp="2026-01-01T00:00:00Z",
                    ticket=ticket,
                )
            )
        self.ref.ask(ChargeBatch(tuple(commands)), timeout=10)
        assert answered.wait(10), "every charge is answered"
        return answers[0]

    def stop(self) -> None:
        self.ref.stop()
        self.scheduler.stop()
        self.writer.stop(5.0)
        if self._own_signer:
            self.signer.stop(5.0)


def _charge_batch(
    store: SqliteLedger, charges: Sequence[Charge], make_signer: MakeSigner | None = None
) -> list[ChargeOutcome]:
    """Charge one batch on a freshly started actor."""
    account = Account(store, make_signer)
    try:
        return account.charge(charges)
    finally:
        account.stop()


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


def test_keys_stored_before_the_actor_started_are_replayed(store: SqliteLedger) -> None:
    first = _charge_batch(store, ["a", "b"])
    # A new actor remembers nothing: it charges without reading, the unique
    # key index refuses the repeats, and the writer answers them from the
    # store. The new key between them was built on a repeat: retry-safe.
    account = Account(store)
    try:
        again = account.charge(["b", "c", "a"])
        assert [o.kind for o in again] == ["replayed", "refused", "replayed"]
        assert again[0].receipt == first[1].receipt and again[2].receipt == first[0].receipt
        assert again[1].retry_safe
        assert store.get_account_head("cus_a")[0] == 2  # type: ignore[index]
        (retried,) = account.charge(["c"])
        assert retried.kind == "committed"
    finally:
        account.stop()
    assert [r.idempotency_key for r in store.list_receipts("cus_a", 0, 10)] == ["a", "b", "c"]


def test_an_old_key_with_another_request_is_409_and_charges_nothing(store: SqliteLedger) -> None:
    (first,) = _charge_batch(store, ["a"])
    (reused,) = _charge_batch(store, [("a", 999)])
    assert (reused.kind, reused.code) == ("refused", "idempotency_key_reuse")
    assert not reused.retry_safe
    assert store.list_receipts("cus_a", 0, 10) == [first.receipt]


def test_a_repeat_counted_in_memory_does_not_refuse_a_charge_under_the_quota(
    store: SqliteLedger,
) -> None:
    """Charged without a read, a repeat of a stored key counts against the
    quota in memory until it fails at commit; a refusal is only given once
    the usage is counted again from the store."""
    store.put_entitlement(entitlement("cus_a", quota_minor=300))
    _charge_batch(store, ["a", "b"])  # 200 of 300 used
    outcomes = _charge_batch(store, ["a", "c", "d"])  # c fits, d does not
    assert [o.kind for o in outcomes] == ["replayed", "committed", "refused"]
    assert outcomes[2].code == "quota_exceeded"
    assert store.get_entitlements("cus_a")["usage"].used_minor == 300


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
        stage = _SignerStage(key, pipeline, 1, 16, metrics, fatal.append, processes=True)
        stage.start()
        stages.append(stage)
        return stage

    account = Account(store, signer)
    try:
        (first,) = account.charge(["k0"])
        for process in stages[0]._processes:
            os.kill(process._process.pid, signal.SIGKILL)
            process._process.wait(timeout=10)
        (second,) = account.charge(["k1"])
    finally:
        account.stop()
        stages[0].stop(5.0)
    assert first.kind == "committed"
    assert (second.kind, second.retry_safe) == ("refused", True)
    assert fatal, "the signer pool reports itself failed, so its supervisor restarts it"
    assert [r.idempotency_key for r in store.list_receipts("cus_a", 0, 10)] == ["k0"]


def test_keys_are_read_only_after_a_repeat_of_a_stored_key(tmp_path: Path) -> None:
    # A read per charge cost ~25% of single-event throughput. Before the
    # first fix, a new customer's first batch also read once per event after
    # the first (99 reads for a batch of 100).
    ledger = CountingLedger.open(tmp_path / "ledger.sqlite3")
    ledger.create_customer(customer("cus_a"))
    ledger.put_entitlement(entitlement("cus_a", quota_minor=None))
    account = Account(ledger, settled_keys_max=2)
    try:
        assert [o.kind for o in account.charge(["k1", "k2", "k3"])] == ["committed"] * 3
        assert [o.kind for o in account.charge(["k4", "k5"])] == ["committed"] * 2
        assert ledger.key_reads == 0
        # k1 settled long ago (more than 2 keys since): the writer finds it.
        (repeat,) = account.charge(["k1"])
        assert repeat.kind == "replayed"
        assert ledger.key_reads == 1
        # Retries often come in storms: for a while the actor reads first
        # (one read per batch), so they no longer fail other charges.
        assert [o.kind for o in account.charge(["k2", "k6"])] == ["replayed", "committed"]
        assert ledger.key_reads == 2
    finally:
        account.stop()
        ledger.close()


def test_a_retry_soon_after_is_read_first_and_fails_nothing_else(store: SqliteLedger) -> None:
    account = Account(store)
    try:
        (first,) = account.charge(["k1"])
        account.charge(["k2"])  # k1 is settled and no longer in flight
        outcomes = account.charge(["k3", "k1", "k4"])
    finally:
        account.stop()
    # Caught at commit instead, the repeat would have failed k4 (built on it).
    assert [o.kind for o in outcomes] == ["committed", "replayed", "committed"]
    assert outcomes[1].receipt == first.receipt
    assert [r.idempotency_key for r in store.list_receipts("cus_a", 0, 10)] == [
        "k1",
        "k2",
        "k3",
        "k4",
    ]


def test_a_refusal_is_kept_and_replayed_under_its_key(store: SqliteLedger) -> None:
    store.put_entitlement(entitlement("cus_a", quota_minor=300))
    outcomes = _charge_batch(store, ["ok", ("big", 1_000), ("big", 1_000), ("big", 5)])
    assert [(o.kind, o.code) for o in outcomes] == [
        ("committed", None),
        ("refused", "quota_exceeded"),
        ("replayed", "quota_exceeded"),  # waited on the first one
        ("refused", "idempotency_key_reuse"),
    ]
    store.put_entitlement(entitlement("cus_a", quota_minor=10_000))
    # A new actor remembers nothing: the store's answer is replayed.
    (again,) = _charge_batch(store, [("big", 1_000)])
    assert (again.kind, again.code, again.receipt) == ("replayed", "quota_exceeded", None)
    assert again.message == outcomes[1].message
    assert [r.idempotency_key for r in store.list_receipts("cus_a", 0, 10)] == ["ok"]
    assert store.get_entitlements("cus_a")["usage"].used_minor == 100


def test_a_refused_key_retried_before_any_receipt_counts_no_usage(store: SqliteLedger) -> None:
    """With no receipt yet, a key may still hold a kept refusal: charged
    without a read, its retry must not count against the quota of the
    charges after it (nor get one of them refused and kept)."""
    store.put_entitlement(entitlement("cus_a", quota_minor=300))
    (refused,) = _charge_batch(store, [("x", 400)])
    assert refused.code == "quota_exceeded"
    store.put_entitlement(entitlement("cus_a", quota_minor=500))
    outcomes = _charge_batch(store, [("x", 400), ("y", 200)])
    assert [(o.kind, o.code) for o in outcomes] == [
        ("replayed", "quota_exceeded"), ("committed", None)
    ]
    assert [r.idempotency_key for r in store.list_receipts("cus_a", 0, 10)] == ["y"]
