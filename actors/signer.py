"""SignerPool: N signing threads, each with a bounded queue.

A customer always hashes to the same thread, so one customer's receipts leave
the pool in chain order while different customers sign in parallel. Each
thread takes whatever its queue holds (up to `sign_batch_receipts_max`) and signs it in
one call: by default in a signing process of its own, so the batch costs one
wait to retake the GIL instead of one per signature (see
`crypto._sign_process`). Signed receipts go on to the ledger writer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from actors.charges import INTERNAL, STORE_UNAVAILABLE, refused
from actors.metrics import ActorMetrics
from actors.pending import Barrier, PendingReceipt
from actors.pipeline import Pipeline, Unavailable
from actors.stage_owner import StageOwner
from actors.tickets import settle_queue
from crypto import KmsError, Signer, SigningKey, SigningProcess, SigningProcessError
from ledger import limits
from supervisor import Link

log = structlog.get_logger(__name__)

_STOP = object()
_PUT_TIMEOUT_S = 0.05
SignMany = Callable[[Sequence[bytes]], list[str]]


class _SignerStage:
    def __init__(
        self,
        key: Signer,
        pipeline: Pipeline,
        workers: int,
        queue_max: int,
        metrics: ActorMetrics,
        on_fatal: Any,
        processes: bool = False,
    ) -> None:
        self._key = key
        self._pipeline = pipeline
        self._metrics = metrics
        self._on_fatal = on_fatal
        self._use_processes = processes
        self._processes: list[SigningProcess] = []
        # Each partition may hold the whole bound: customers do not hash evenly,
        # and admission in front already bounds the total. A smaller share let
        # one hot partition fill and answer 503 where admission promised 429.
        self._queues: list[queue.Queue[Any]] = [queue.Queue(queue_max) for _ in range(workers)]
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Returns at once: a signing process takes a Python start-up (~0.2 s),
        which its first signing waits for while receipts queue up behind it;
        the supervisor starts the accounts as soon as this returns."""
        signers: list[SignMany] = [self._key.sign_detached_many] * len(self._queues)
        if self._use_processes:
            if not isinstance(self._key, SigningKey):  # the composition root chose threads
                raise TypeError(f"signing processes need a PEM key, not {self._key!r}")
            key = self._key
            self._processes = [SigningProcess(key) for _ in self._queues]
            signers = [process.sign_detached_many for process in self._processes]
        self._threads = [
            threading.Thread(target=self._run, args=(q, sign), name=f"signer-{i}", daemon=True)
            for i, (q, sign) in enumerate(zip(self._queues, signers, strict=True))
        ]
        for thread in self._threads:
            thread.start()

    def _close_processes(self) -> None:
        for process in self._processes:
            process.close()
        self._processes = []

    def submit(self, item: PendingReceipt | Barrier) -> None:
        q = self._queues[hash(item.customer_id) % len(self._queues)]
        try:
            q.put(item, timeout=_PUT_TIMEOUT_S)
        except queue.Full:
            raise Unavailable("signer queue full") from None

    def depth(self) -> int:
        return sum(q.qsize() for q in self._queues)

    def stop(self, timeout_s: float) -> None:
        for q in self._queues:
            with contextlib.suppress(queue.Full):
                q.put(_STOP, timeout=timeout_s)
        for thread in self._threads:
            thread.join(timeout_s)
        self._close_processes()
        for q in self._queues:  # whatever was left is answered, never dropped
            settle_queue(q, refused(STORE_UNAVAILABLE, "signer stopped"), _STOP)

    def _run(self, q: queue.Queue[Any], sign_many: SignMany) -> None:
        while True:
            items, stop = _take_batch(q)
            receipts = [item for item in items if isinstance(item, PendingReceipt)]
            try:
                signatures = sign_many([item.canonical_core for item in receipts])
            except Exception as error:
                log.exception("signer.failed", receipts=len(receipts))
                # A lost signing process is transient (the pool restarts), so is
                # Cloud KMS out of reach, and nothing was charged: retry-safe.
                # Anything else is a bug.
                code, message = (
                    (STORE_UNAVAILABLE, "signing is restarting; retry with the same key")
                    if isinstance(error, SigningProcessError | KmsError)
                    else (INTERNAL, "signing failed")
                )
                self._pipeline.give_up(receipts, code, message)
                self._on_fatal(repr(error))
            else:
                for item, signature in zip(receipts, signatures, strict=True):
                    item.seal(signature)
            for item in items:
                if isinstance(item, PendingReceipt) and item.receipt is None:
                    continue  # failed above, already answered
                self._commit(item)
            if stop:
                return

    def _commit(self, item: PendingReceipt | Barrier) -> None:
        try:
            self._pipeline.commit(item)
        except Unavailable as error:
            self._pipeline.give_up([item], STORE_UNAVAILABLE, str(error))
        except Exception as error:
            log.exception("signer.hand_over_failed", customer_id=item.customer_id)
            self._pipeline.give_up([item], INTERNAL, "signing failed")
            self._on_fatal(repr(error))


def _take_batch(q: queue.Queue[Any]) -> tuple[list[Any], bool]:
    """What the queue holds, in order, up to limits.sign_batch_receipts_max
    items (waiting for the first), and whether a stop came after them."""
    items: list[Any] = []
    item = q.get()
    while True:
        if item is _STOP:
            return items, True
        items.append(item)
        if len(items) >= limits.sign_batch_receipts_max:
            return items, False
        try:
            item = q.get_nowait()
        except queue.Empty:
            return items, False


class SignerPool(StageOwner):
    """Supervised owner of the signing threads (a permanent child)."""

    name = "signer"

    def __init__(
        self,
        link: Link,
        *,
        key: Signer,
        pipeline: Pipeline,
        workers: int,
        queue_max: int,
        metrics: ActorMetrics,
        processes: bool = False,
        stop_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(link, stop_timeout_s)
        self._pipeline = pipeline
        self._stage = _SignerStage(
            key, pipeline, workers, queue_max, metrics, self.report_crash, processes
        )
        metrics.signer_queue_depth.set_function(self._stage.depth)

    def stage(self) -> _SignerStage:
        return self._stage

    def attach(self) -> None:
        self._pipeline.attach_signer(self._stage)

    def detach(self) -> None:
        self._pipeline.detach_signer(self._stage)
