"""LedgerWriter: group commit. One thread drains its bounded queue into
batches and commits each batch in one transaction; nothing is answered
before its batch is durable.

A batch is as large as what queued up while the previous one committed (up
to `commit_batch_receipts_max`), so batches grow with load and latency stays
low when idle; `linger_ms` optionally waits for company when a batch is small.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from actors.charges import STORE_UNAVAILABLE, ChargeOutcome, answer_from_stored, refused
from actors.delivery.threshold_alerts import events_outbox
from actors.metrics import ActorMetrics
from actors.pending import Barrier, PendingReceipt, PendingRefusal
from actors.pipeline import Pipeline, Unavailable
from actors.receipt_log import LogAppender, LogDamaged, PreparedAppend
from actors.stage_owner import StageOwner
from actors.tickets import settle_queue
from ledger import (
    ChainConflict,
    LedgerError,
    LedgerStore,
    LogCheckpoint,
    LogConflict,
    OutboxMessage,
    ReceiptWrite,
    StoredReceipt,
    StoreUnavailable,
    limits,
)
from supervisor import Link

log = structlog.get_logger(__name__)

_STOP = object()
_PUT_TIMEOUT_S = 0.05
_SMALL_BATCH = 8

# Builds the outbox messages committed with each receipt (one per sink topic).
OutboxFor = Callable[[StoredReceipt], Sequence[OutboxMessage]]
# And with each commit's signed checkpoint (one per checkpoint sink topic).
CheckpointOutboxFor = Callable[[LogCheckpoint], Sequence[OutboxMessage]]


def no_outbox(item: StoredReceipt | LogCheckpoint) -> Sequence[OutboxMessage]:
    return ()


class _WriterStage:
    def __init__(
        self,
        store: LedgerStore,
        receipt_log: LogAppender,
        pipeline: Pipeline,
        metrics: ActorMetrics,
        outbox_for: OutboxFor,
        batch_max: int,
        queue_max: int,
        linger_ms: float,
        on_fatal: Callable[[str], None],
        on_committed: Callable[[Sequence[StoredReceipt]], None],
        on_log_damaged: Callable[[str], None] | None = None,
        checkpoint_outbox_for: CheckpointOutboxFor = no_outbox,
    ) -> None:
        self._store = store
        self._on_log_damaged = on_log_damaged
        self._log = receipt_log
        self._pipeline = pipeline
        self._metrics = metrics
        self._outbox_for = outbox_for
        self._checkpoint_outbox_for = checkpoint_outbox_for
        self._batch_max = batch_max
        self._linger_s = linger_ms / 1000.0
        self._on_fatal = on_fatal
        self._on_committed = on_committed
        self._queue: queue.Queue[Any] = queue.Queue(queue_max)
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: PendingReceipt | PendingRefusal | Barrier) -> None:
        try:
            self._queue.put(item, timeout=_PUT_TIMEOUT_S)
        except queue.Full:
            raise Unavailable("ledger writer queue full") from None

    def depth(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout_s: float) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout_s)
        settle_queue(self._queue, refused(STORE_UNAVAILABLE, "ledger writer stopped"), _STOP)

    def _next_batch(self) -> tuple[list[Any], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        stop = self._drain_into(batch)
        if not stop and self._linger_s > 0 and len(batch) < _SMALL_BATCH:
            deadline = time.monotonic() + self._linger_s
            while len(batch) < self._batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is _STOP:
                    return batch, True
                batch.append(item)
        return batch, stop

    def _drain_into(self, batch: list[Any]) -> bool:
        while len(batch) < self._batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            if batch:
                try:
                    self._commit(batch)
                except LogDamaged as damage:
                    self._log_damaged(batch, damage)
                except Exception as error:
                    log.exception("ledger_writer.failed")
                    self._fail(batch, "the ledger could not be written")
                    self._on_fatal(repr(error))
            if stop:
                return

    def _log_damaged(self, batch: list[Any], damage: LogDamaged) -> None:
        """Refuse the batch and report the halt; with no one to report to,
        crash (the supervisor then escalates, as before halts were recorded)."""
        self._fail(batch, "integrity halt: the receipt log is damaged")
        if self._on_log_damaged is None:
            self._on_fatal(repr(damage))
            return
        log.critical("ledger_writer.log_damaged", detail=str(damage))
        self._on_log_damaged(str(damage))

    def _commit(self, batch: list[Any]) -> None:
        self._keep_refusals([item for item in batch if isinstance(item, PendingRefusal)])
        # A receipt whose predecessor failed is still tried: the store's
        # compare-and-set on the previous hash refuses it as a conflict.
        pending = [item for item in batch if isinstance(item, PendingReceipt) and not item.failed]
        while pending:
            try:
                self._commit_once(pending)
                break
            except ChainConflict as conflict:
                self._metrics.commit_failures.labels(reason="chain_conflict").inc()
                log.warning("ledger_writer.chain_conflict", customers=sorted(conflict.customer_ids))
                losers = [p for p in pending if p.customer_id in conflict.customer_ids]
                pending = [p for p in pending if p.customer_id not in conflict.customer_ids]
                others = self._answer_settled_keys(losers)
                self._fail(others, "the account changed concurrently; retry")
                # Every loser's actor is ahead of the store: _fail has the
                # others' reload; those answered from the store reload too.
                for customer_id in conflict.customer_ids - {o.customer_id for o in others}:
                    self._pipeline.on_chain_failed(customer_id)
        for item in batch:
            if isinstance(item, Barrier):
                item.settle()

    def _commit_once(self, pending: list[PendingReceipt]) -> None:
        receipts = [p.receipt for p in pending if p.receipt is not None]
        if len(receipts) != len(pending):
            raise RuntimeError("an unsealed receipt reached the ledger writer")
        started = time.perf_counter()
        prepared = self._commit_logged(receipts, pending)
        self._log.adopt(prepared)
        self._metrics.commit_latency_s.observe(time.perf_counter() - started)
        self._metrics.commit_batch_receipts.observe(len(receipts))
        self._metrics.receipts_committed.inc(len(receipts))
        for item, receipt, proof in zip(pending, prepared.receipts, prepared.proofs, strict=True):
            item.settle(ChargeOutcome(kind="committed", receipt=receipt, log=proof))
        self._on_committed(prepared.receipts)

    def _commit_logged(
        self, receipts: list[StoredReceipt], pending: list[PendingReceipt]
    ) -> PreparedAppend:
        """Commit the receipts as the log's next leaves with their signed
        checkpoint; when another writer appended first, rebuild and re-sign."""
        for _attempt in range(limits.log_conflict_retries_max):
            prepared = self._log.prepare(receipts)
            outbox: list[OutboxMessage] = []
            for receipt, item in zip(prepared.receipts, pending, strict=True):
                outbox.extend(self._outbox_for(receipt))
                outbox.extend(events_outbox(item.events))
            outbox.extend(self._checkpoint_outbox_for(prepared.log_append.checkpoint))
            try:
                self._store.commit_batch(
                    [
                        ReceiptWrite(receipt, item.request, item.events)
                        for receipt, item in zip(prepared.receipts, pending, strict=True)
                    ],
                    outbox,
                    prepared.log_append,
                )
            except LogConflict as conflict:
                self._metrics.commit_failures.labels(reason="log_conflict").inc()
                log.info("ledger_writer.log_conflict", stored_size=conflict.stored_size)
                self._log.forget()
                continue
            return prepared
        raise StoreUnavailable("the receipt log kept moving under this writer; retry")

    def _keep_refusals(self, refusals: list[PendingRefusal]) -> None:
        """Keep the batch's refusals under their keys, then answer them: one
        transaction of their own, before the receipts', so the receipts'
        commit (and its log append) stays as it is. A refusal whose key the
        store already holds gets the stored answer instead."""
        while refusals:
            try:
                self._store.commit_refusals([item.refusal for item in refusals])
            except ChainConflict as conflict:
                losers = [r for r in refusals if r.customer_id in conflict.customer_ids]
                refusals = [r for r in refusals if r.customer_id not in conflict.customer_ids]
                self._fail(self._answer_settled_keys(losers), "the key changed concurrently; retry")
                continue
            for item in refusals:
                item.settle(item.answer)
            return

    def _answer_settled_keys(
        self, losers: Sequence[PendingReceipt | PendingRefusal]
    ) -> list[PendingReceipt | PendingRefusal]:
        """Answer from the store the receipts of a failed batch whose key it
        already holds; returns the others.

        The account actor charges a key it does not remember without reading
        the store first (a read per charge cost ~25% of throughput), so a
        repeat of an old key is caught here, by the unique key index: it is
        answered as the replay it is (or 409 for another request under the
        key), exactly as the actor would have."""
        by_customer: dict[str, list[PendingReceipt | PendingRefusal]] = {}
        for item in losers:
            by_customer.setdefault(item.customer_id, []).append(item)
        others: list[PendingReceipt | PendingRefusal] = []
        for customer_id, items in by_customer.items():
            try:
                stored = self._store.find_answers_by_keys(
                    customer_id, [item.idempotency_key for item in items]
                )
            except LedgerError:
                log.warning("ledger_writer.key_lookup_failed", customer_id=customer_id)
                stored = {}
            for item in items:
                receipt = stored.get(item.idempotency_key)
                if receipt is None:
                    others.append(item)
                    continue
                outcome = answer_from_stored(receipt, item.fingerprint)
                if outcome.kind == "replayed":
                    self._metrics.replays.inc()
                item.settle(outcome)
        return others

    def _fail(self, items: Sequence[Any], message: str) -> None:
        """Answer retry-safe: nothing of these was committed."""
        self._pipeline.give_up(items, STORE_UNAVAILABLE, message)


class LedgerWriter(StageOwner):
    """Supervised owner of the writer thread (the `store` child, permanent)."""

    name = "ledger writer"

    def __init__(
        self,
        link: Link,
        *,
        store: LedgerStore,
        receipt_log: LogAppender,
        pipeline: Pipeline,
        metrics: ActorMetrics,
        outbox_for: OutboxFor = no_outbox,
        checkpoint_outbox_for: CheckpointOutboxFor = no_outbox,
        batch_max: int,
        queue_max: int,
        linger_ms: float,
        on_committed: Callable[[Sequence[StoredReceipt]], None] = lambda receipts: None,
        on_log_damaged: Callable[[str], None] | None = None,
        stop_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(link, stop_timeout_s)
        self._store = store
        self._pipeline = pipeline
        self._receipt_log = receipt_log
        self._stage = _WriterStage(
            store,
            receipt_log,
            pipeline,
            metrics,
            outbox_for,
            batch_max,
            queue_max,
            linger_ms,
            self.report_crash,
            on_committed,
            on_log_damaged,
            checkpoint_outbox_for,
        )
        self._on_log_damaged = on_log_damaged
        metrics.writer_queue_depth.set_function(self._stage.depth)

    def stage(self) -> _WriterStage:
        return self._stage

    def on_start(self) -> None:
        self._store.check_writable()  # a store that cannot be written is a failed start
        try:
            self._receipt_log.load()
        except LogDamaged as damage:
            if self._on_log_damaged is None:
                raise  # a failed start, as before halts were recorded
            # A recorded halt, not a crash loop: the writer starts, charges
            # are refused, and every batch that still arrives is refused too.
            log.critical("ledger_writer.log_damaged", detail=str(damage))
            self._on_log_damaged(str(damage))
        super().on_start()

    def attach(self) -> None:
        self._pipeline.attach_writer(self._stage)

    def detach(self) -> None:
        self._pipeline.detach_writer(self._stage)
