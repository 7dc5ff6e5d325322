"""The ledger writer with batches in flight, on a real SQLite file and real
account actors: when batch N fails to commit while batch N+1 is signing on
top of it, N+1 is rebuilt on the stored log and commits at the index N
would have used; N's signed checkpoint is stored nowhere."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from actors.account import AccountActor, AccountDeps, Reload
from actors.charges import ChargeBatch, ChargeCommand, ChargeOutcome
from actors.metrics import ActorMetrics
from actors.pipeline import Pipeline
from actors.receipt_log import LogAppender
from actors.tickets import TicketBatch
from actors.writer import _WriterStage, no_outbox
from crypto import SigningKey, verify_checkpoint
from ledger import LogAppend, OutboxMessage, ReceiptWrite, StoreUnavailable
from ledger.clock import utc_now_rfc3339
from ledger.sqlite import SqliteLedger
from supervisor import ActorScheduler
from tests.contract._chain import customer, entitlement

pytestmark = pytest.mark.timeout(60)

_KEY = SigningKey.generate()
_ORIGIN = "test.example/log"


class _SlowKey:
    """The PEM key behind a slow remote signer (the KMS shape): counts the
    checkpoint signatures asked for, each takes `delay_s`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.asked = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(_KEY, name)

    def sign_compact(self, payload: bytes, typ: str | None = None) -> str:
        with self._lock:
            self.asked += 1
        time.sleep(self.delay_s)
        return _KEY.sign_compact(payload, typ)


class _FailingLedger(SqliteLedger):
    """Fails its next log commit once a later batch's signature was asked
    for (so that batch is in flight on top of the failing one)."""

    key: _SlowKey
    armed = False
    lost_checkpoints: list[str]

    def commit_batch(
        self,
        writes: Sequence[ReceiptWrite],
        outbox: Sequence[OutboxMessage],
        log_append: LogAppend | None = None,
    ) -> None:
        if self.armed and log_append is not None and log_append.signed is not None:
            self.armed = False
            asked = self.key.asked
            deadline = time.monotonic() + 5
            while self.key.asked <= asked and time.monotonic() < deadline:
                time.sleep(0.005)
            self.lost_checkpoints.append(log_append.signed().checkpoint.jws)
            raise StoreUnavailable("disk I/O error (injected)")
        super().commit_batch(writes, outbox, log_append)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[_FailingLedger]:
    ledger = _FailingLedger.open(tmp_path / "ledger.sqlite3")
    ledger.key = _SlowKey(0.2)
    ledger.lost_checkpoints = []
    for customer_id in ("cus_a", "cus_b"):
        ledger.create_customer(customer(customer_id))
        ledger.put_entitlement(entitlement(customer_id, quota_minor=None))
    yield ledger
    ledger.close()


class _Accounts:
    """Two live account actors sharing one pipelined ledger writer."""

    def __init__(self, store: _FailingLedger) -> None:
        metrics = self.metrics = ActorMetrics(CollectorRegistry())
        self.pipeline = Pipeline(signs_receipts=False)
        receipt_log = LogAppender(store, lambda: store.key, _ORIGIN, utc_now_rfc3339)
        receipt_log.load()
        self.writer = _WriterStage(
            store, receipt_log, self.pipeline, metrics, no_outbox, 64, 256, 0.0,
            lambda reason: None,  # no supervisor here: the writer goes on
            lambda receipts: None,
        )
        self.writer.start()
        self.pipeline.attach_writer(self.writer)
        self.scheduler = ActorScheduler(2, "test-accounts")
        deps = AccountDeps(
            store=store, scheduler=self.scheduler, pipeline=self.pipeline, metrics=metrics,
            now_rfc3339=utc_now_rfc3339, activity={},
        )
        self.refs = {cid: AccountActor.start(None, cid, deps) for cid in ("cus_a", "cus_b")}
        self.pipeline.on_chain_failed = lambda cid: self.refs[cid].tell(Reload())

    def charge(self, customer_id: str, key: str) -> threading.Event:
        """Send one charge; the event is set once it is answered (in `answers`)."""
        done = threading.Event()
        self.answers: dict[str, ChargeOutcome] = getattr(self, "answers", {})

        def on_all(outcomes: Sequence[ChargeOutcome]) -> None:
            self.answers[key] = outcomes[0]
            done.set()

        (ticket,) = TicketBatch(1, on_all).issue()
        command = ChargeCommand(
            customer_id=customer_id, idempotency_key=key, entitlement_id="usage",
            amount_minor=100, currency="USD", usage_description="one call",
            event_timestamp="2026-01-01T00:00:00Z", ticket=ticket,
        )
        self.refs[customer_id].tell(ChargeBatch((command,)))
        return done

    def stop(self) -> None:
        for ref in self.refs.values():
            ref.stop()
        self.scheduler.stop()
        self.writer.stop(5.0)


def test_a_batch_signing_on_a_failed_one_is_rebuilt_on_the_stored_log(
    store: _FailingLedger,
) -> None:
    accounts = _Accounts(store)
    try:
        assert accounts.charge("cus_b", "warm").wait(10)  # leaf 0, a stored checkpoint
        store.armed = True
        failing = accounts.charge("cus_a", "a1")  # batch N: will fail
        deadline = time.monotonic() + 5
        while store.armed and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not store.armed, "batch N never reached the store"
        rebuilt = accounts.charge("cus_b", "b1")  # batch N+1, signed on top of N
        assert failing.wait(10) and rebuilt.wait(10)
        a1, b1 = accounts.answers["a1"], accounts.answers["b1"]
        assert a1.kind == "refused" and a1.retry_safe
        assert b1.kind == "committed" and b1.receipt is not None
        # N+1 took the index N would have had: no gap, nothing reused.
        assert b1.receipt.log_index == 1
        assert accounts.charge("cus_a", "a1").wait(10)  # the client's retry
        retried = accounts.answers["a1"]
        assert retried.kind == "committed" and retried.receipt is not None
        assert retried.receipt.log_index == 2
    finally:
        accounts.stop()
    stored = store.receipts_by_log_index(0, 10)
    assert [r.idempotency_key for r in stored] == ["warm", "b1", "a1"]
    checkpoints = store.log_checkpoints(0, 10)
    assert [c.tree_size for c in checkpoints] == [1, 2, 3]
    jwks = {"keys": [_KEY.public_jwk()]}
    for checkpoint in checkpoints:
        assert verify_checkpoint(checkpoint.jws, jwks).tree_size == checkpoint.tree_size
    # N's checkpoint was signed and thrown away: stored nowhere, and the
    # answers carry the stored checkpoints only.
    (lost,) = store.lost_checkpoints
    assert lost not in {c.jws for c in checkpoints}
    assert b1.log is not None and b1.log.checkpoint_jws == checkpoints[1].jws
    assert store.key.asked == 5  # warm, N, N+1, N+1 again, the retry
