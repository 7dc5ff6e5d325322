"""LedgerWriter: group commit. One thread drains its bounded queue into
batches and commits each batch in one transaction; nothing is answered
before its batch is durable.

A batch is as large as what queued up while the previous one committed (up
to `commit_batch_receipts_max`), so batches grow with load and latency stays
low when idle; `linger_ms` optionally waits for company when a batch is small.

Two threads: one forms batches and begins each one's log append (root
computed, checkpoint signature started) on top of the batches still in
flight, at most `log_batches_inflight_max` of them; the other commits them
in order, each in one transaction that waits for its signature after
writing its rows, together with the batches queued right behind it whose
signatures are already done (every batch's checkpoint is stored, see
`LogAppend.earlier`). With a 20 ms KMS signature a charge then waits about
one signature plus one commit, not a signature per batch ahead of it
(bench_kms at 64 connections, back to back: 785 -> 1,781 charges/s, 0.32 ->
0.67 of the PEM signer's); merging signed batches saves a commit's fixed
cost (~3.5 ms) per batch merged (bench_kms at 256 connections: 0.82 -> 0.90
of PEM, 46.5 -> 63.4 receipts a commit, no 429s left; 128 connections
unchanged at 0.78: loadtest/README.md).
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from actors.charges import STORE_UNAVAILABLE, ChargeOutcome, answer_from_stored, refused
from actors.delivery.threshold_alerts import events_outbox
from actors.metrics import ActorMetrics
from actors.pending import Barrier, PendingReceipt, PendingRefusal
from actors.pipeline import Pipeline, Unavailable
from actors.receipt_log import LogAppender, LogDamaged, PreparedAppend, merged
from actors.stage_owner import StageOwner
from actors.tickets import settle_all, settle_queue
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
_FLIGHT_WAIT_S = 0.1  # re-check for a stop this often while waiting on the other thread

# Builds the outbox messages committed with each receipt (one per sink topic).
OutboxFor = Callable[[StoredReceipt], Sequence[OutboxMessage]]
# And with each commit's signed checkpoint (one per checkpoint sink topic).
CheckpointOutboxFor = Callable[[LogCheckpoint], Sequence[OutboxMessage]]


def no_outbox(item: StoredReceipt | LogCheckpoint) -> Sequence[OutboxMessage]:
    return ()


class _Flight:
    """A batch between its two threads: begun (its signature under way) by
    the forming thread, committed in order by the committing thread."""

    __slots__ = ("batch", "flights", "pending", "prepared")

    def __init__(
        self,
        batch: list[Any],
        pending: list[PendingReceipt],
        prepared: PreparedAppend | None,
        flights: int = 1,
    ) -> None:
        self.batch = batch
        self.pending = pending
        self.prepared = prepared  # None: to be built when its turn comes
        self.flights = flights  # begun batches merged into this one commit

    def intact(self) -> bool:
        """Begun, and nothing of it answered since: its append still fits it."""
        return self.prepared is not None and not any(p.failed for p in self.pending)

    def follows(self, before: _Flight) -> bool:
        """May this flight commit in `before`'s transaction? Only when it is
        intact, begun on `before`'s append, and its signature is done
        (merging never waits for one: the committer would idle)."""
        prepared, ahead = self.prepared, before.prepared
        if not self.intact() or prepared is None or ahead is None:
            return False
        signature = prepared.signature
        return (
            prepared.base is ahead.edge
            and signature.done()
            and not signature.cancelled()
            and signature.exception(0) is None
        )


def _merge(flights: list[_Flight]) -> _Flight:
    """Consecutive signed flights as one commit (see `_WriterStage._next_flight`)."""
    if len(flights) == 1:
        return flights[0]
    parts = [f.prepared for f in flights if f.prepared is not None]
    return _Flight(
        [item for f in flights for item in f.batch],
        [p for f in flights for p in f.pending],
        merged(parts),
        sum(f.flights for f in flights),
    )


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
        inflight_max: int = limits.log_batches_inflight_max,
        merge_receipts_max: int = limits.commit_batch_receipts_max,
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
        self._inflight_max = inflight_max
        self._merge_receipts_max = merge_receipts_max
        # Flights in commit order; `_cond` also makes "begin a batch and
        # queue it" one step, so queue order is always the order of bases.
        self._flights: collections.deque[_Flight | object] = collections.deque()
        self._in_flight = 0  # begun and not yet committed or failed
        self._cond = threading.Condition()
        self._signing = ThreadPoolExecutor(inflight_max, thread_name_prefix="checkpoint-sign")
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._committer = threading.Thread(
            target=self._run_commits, name="ledger-committer", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        self._committer.start()

    def submit(self, item: PendingReceipt | PendingRefusal | Barrier) -> None:
        try:
            self._queue.put(item, timeout=_PUT_TIMEOUT_S)
        except queue.Full:
            raise Unavailable("ledger writer queue full") from None

    def depth(self) -> int:
        """Charges waiting for the store: queued, or begun and waiting to commit."""
        with self._cond:
            begun = sum(len(f.batch) for f in self._flights if isinstance(f, _Flight))
        return self._queue.qsize() + begun

    def stop(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._committer.join(max(0.0, deadline - time.monotonic()))
        stopped = refused(STORE_UNAVAILABLE, "ledger writer stopped")
        settle_queue(self._queue, stopped, _STOP)
        with self._cond:
            left = [f for f in self._flights if isinstance(f, _Flight)]
            self._flights.clear()
            self._flights.append(_STOP)  # for a committer still busy when we gave up
        for flight in left:
            settle_all(flight.batch, stopped)
        self._signing.shutdown(wait=False, cancel_futures=True)

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

    # -- the forming thread ----------------------------------------------------
    def _run(self) -> None:
        while True:
            if not self._wait_for_room():
                return
            batch, stop = self._next_batch()
            if batch:
                self._launch(batch)
            if stop:
                with self._cond:
                    self._flights.append(_STOP)
                    self._cond.notify_all()
                return

    def _wait_for_room(self) -> bool:
        """Wait until a new batch would help (the next batch grows meanwhile);
        False once the committer is gone.

        It helps while fewer than `inflight_max` are in flight and every one
        queued for the committer still waits for its signature. A signed one
        waiting means the store is the bottleneck: another small batch would
        only add a commit (measured with the PEM signer: 114 receipts per
        commit fell to 14, and 256 connections got 429s)."""
        with self._cond:
            while self._in_flight >= self._inflight_max or self._signed_one_waits():
                if not self._committer.is_alive():
                    return False
                self._cond.wait(_FLIGHT_WAIT_S)
        return True

    def _signed_one_waits(self) -> bool:
        return any(
            isinstance(f, _Flight) and (f.prepared is None or f.prepared.signature.done())
            for f in self._flights
        )

    def _wake(self, _signature: object = None) -> None:
        with self._cond:
            self._cond.notify_all()

    def _launch(self, batch: list[Any]) -> None:
        # A receipt whose predecessor failed is still tried: the store's
        # compare-and-set on the previous hash refuses it as a conflict.
        pending = [item for item in batch if isinstance(item, PendingReceipt) and not item.failed]
        with self._cond:
            self._flights.append(_Flight(batch, pending, self._begin(pending)))
            self._in_flight += 1
            self._cond.notify_all()

    def _begin(self, pending: list[PendingReceipt]) -> PreparedAppend | None:
        """The batch's append on top of those in flight, its signature started;
        None when it cannot be begun now (the committer then builds it, and
        answers for what goes wrong)."""
        receipts = [p.receipt for p in pending if p.receipt is not None]
        if not pending or len(receipts) != len(pending):
            return None
        try:
            prepared = self._log.begin(receipts, self._signing, self._checkpoint_outbox_for)
        except Exception:
            log.warning("ledger_writer.begin_failed", exc_info=True)
            return None
        prepared.signature.add_done_callback(self._wake)
        return prepared

    # -- the committing thread --------------------------------------------------
    def _run_commits(self) -> None:
        while True:
            flight = self._next_flight()
            if not isinstance(flight, _Flight):
                return
            try:
                self._commit(flight)
            except LogDamaged as damage:
                self._log.forget()
                self._log_damaged(flight.batch, damage)
            except Exception as error:
                self._log.forget()  # what was begun on this batch is lost with it
                log.exception("ledger_writer.failed")
                self._fail(flight.batch, "the ledger could not be written")
                self._on_fatal(repr(error))
            finally:
                with self._cond:
                    self._in_flight -= flight.flights
                    self._cond.notify_all()

    def _next_flight(self) -> _Flight | object:
        """The next flight, with the signed ones queued right behind it
        merged in: one transaction for all of them.

        A commit costs ~3.5 ms fixed plus ~0.17 ms a receipt, and with a
        20 ms KMS signature the forming thread begins many small batches, so
        one commit per batch kept the committer busy with fixed costs
        (bench_kms, 128 connections: 24.8 receipts a commit, 0.79 of PEM)."""
        with self._cond:
            while not self._flights:
                self._cond.wait(_FLIGHT_WAIT_S)
            first = self._flights.popleft()
            if not isinstance(first, _Flight):
                return first
            taken, receipts = [first], len(first.pending)
            while first.intact() and self._flights:
                after = self._flights[0]
                if (
                    not isinstance(after, _Flight)
                    or not after.follows(taken[-1])
                    or receipts + len(after.pending) > self._merge_receipts_max
                ):
                    break
                taken.append(after)
                receipts += len(after.pending)
                self._flights.popleft()
        return _merge(taken)

    def _log_damaged(self, batch: list[Any], damage: LogDamaged) -> None:
        """Refuse the batch and report the halt; with no one to report to,
        crash (the supervisor then escalates, as before halts were recorded)."""
        self._fail(batch, "integrity halt: the receipt log is damaged")
        if self._on_log_damaged is None:
            self._on_fatal(repr(damage))
            return
        log.critical("ledger_writer.log_damaged", detail=str(damage))
        self._on_log_damaged(str(damage))

    def _commit(self, flight: _Flight) -> None:
        self._keep_refusals([item for item in flight.batch if isinstance(item, PendingRefusal)])
        pending = [item for item in flight.pending if not item.failed]
        # Items answered since it was begun: its append no longer fits it.
        prepared = flight.prepared if len(pending) == len(flight.pending) else None
        while pending:
            try:
                self._commit_once(pending, prepared)
                break
            except ChainConflict as conflict:
                prepared = None
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
        for item in flight.batch:
            if isinstance(item, Barrier):
                item.settle()

    def _commit_once(self, pending: list[PendingReceipt], prepared: PreparedAppend | None) -> None:
        receipts = [p.receipt for p in pending if p.receipt is not None]
        if len(receipts) != len(pending):
            raise RuntimeError("an unsealed receipt reached the ledger writer")
        started = time.perf_counter()
        prepared = self._commit_logged(receipts, pending, prepared)
        self._log.adopt(prepared)
        self._metrics.commit_latency_s.observe(time.perf_counter() - started)
        self._metrics.commit_batch_receipts.observe(len(receipts))
        self._metrics.receipts_committed.inc(len(receipts))
        for item, receipt, proof in zip(pending, prepared.receipts, prepared.proofs(), strict=True):
            item.settle(ChargeOutcome(kind="committed", receipt=receipt, log=proof))
        self._on_committed(prepared.receipts)

    def _commit_logged(
        self,
        receipts: list[StoredReceipt],
        pending: list[PendingReceipt],
        prepared: PreparedAppend | None,
    ) -> PreparedAppend:
        """Commit the receipts as the log's next leaves with their signed
        checkpoint; when the batch was begun on a log that did not come to
        be, or another writer appended first, rebuild and re-sign."""
        for _attempt in range(limits.log_conflict_retries_max):
            if prepared is None or not self._log.is_current(prepared):
                prepared = self._rebuild(receipts)
            outbox: list[OutboxMessage] = []
            for receipt, item in zip(prepared.receipts, pending, strict=True):
                outbox.extend(self._outbox_for(receipt))
                outbox.extend(events_outbox(item.events))
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
                prepared = None
                continue
            return prepared
        raise StoreUnavailable("the receipt log kept moving under this writer; retry")

    def _rebuild(self, receipts: list[StoredReceipt]) -> PreparedAppend:
        """Begin this batch again on the committed log (reloaded if lost),
        and every batch queued behind it on top of it, in order. Their old
        signatures are dropped unpublished (see actors.receipt_log)."""
        with self._cond:
            self._log.restart()
            prepared = self._log.begin(receipts, self._signing, self._checkpoint_outbox_for)
            queued = [f for f in self._flights if isinstance(f, _Flight)]
            for flight in queued:
                if flight.prepared is not None:
                    flight.prepared.signature.cancel()
                flight.pending = [p for p in flight.pending if not p.failed]
                flight.prepared = self._begin(flight.pending)
        if queued:
            log.info("ledger_writer.flights_rebuilt", batches=len(queued))
        return prepared

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
