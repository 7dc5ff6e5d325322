"""SignerPool: N signing threads, each with a bounded queue.

A customer always hashes to the same thread, so one customer's receipts leave
the pool in chain order while different customers sign in parallel (RSA
signing releases the GIL). Signed receipts go on to the ledger writer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

import orjson
import structlog

from actors.charges import INTERNAL, STORE_UNAVAILABLE
from actors.metrics import ActorMetrics
from actors.pending import Barrier, PendingReceipt, settle_failed, settle_queue
from actors.pipeline import Pipeline, Unavailable
from actors.stage_owner import StageOwner
from crypto import SigningKey
from ledger import StoredReceipt
from supervisor import Link

log = structlog.get_logger(__name__)

_STOP = object()
_PUT_TIMEOUT_S = 0.05


class _SignerStage:
    def __init__(
        self,
        key: SigningKey,
        pipeline: Pipeline,
        workers: int,
        queue_max: int,
        metrics: ActorMetrics,
        on_fatal: Any,
    ) -> None:
        self._key = key
        self._pipeline = pipeline
        self._metrics = metrics
        self._on_fatal = on_fatal
        # Each partition may hold the whole bound: customers do not hash evenly,
        # and admission in front already bounds the total. A smaller share let
        # one hot partition fill and answer 503 where admission promised 429.
        self._queues: list[queue.Queue[Any]] = [queue.Queue(queue_max) for _ in range(workers)]
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"signer-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

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
        for q in self._queues:  # whatever was left is answered, never dropped
            settle_queue(q, STORE_UNAVAILABLE, "signer stopped")

    def _run(self, q: queue.Queue[Any]) -> None:
        while True:
            item = q.get()
            if item is _STOP:
                return
            try:
                if isinstance(item, PendingReceipt):
                    self._sign(item)
                self._pipeline.commit(item)
            except Unavailable as error:
                settle_failed(item, STORE_UNAVAILABLE, str(error))
                if isinstance(item, PendingReceipt):
                    self._pipeline.on_chain_failed(item.customer_id)
            except Exception as error:
                log.exception("signer.failed", customer_id=item.customer_id)
                settle_failed(item, INTERNAL, "signing failed")
                if isinstance(item, PendingReceipt):
                    self._pipeline.on_chain_failed(item.customer_id)
                self._on_fatal(repr(error))

    def _sign(self, item: PendingReceipt) -> None:
        signature = self._key.sign_detached(item.canonical_core)
        document = dict(item.core)
        document["receipt_hash"] = item.receipt_hash
        document["signature"] = signature
        item.receipt = StoredReceipt(
            customer_id=item.customer_id,
            seq=item.seq,
            receipt_id=item.receipt_id,
            idempotency_key=item.idempotency_key,
            request_fingerprint=item.fingerprint,
            entitlement_id=item.entitlement_id,
            amount_minor=item.amount_minor,
            currency=item.currency,
            receipt_hash=item.receipt_hash,
            previous_receipt_hash=item.previous_receipt_hash,
            balance_after_minor=item.balance_after_minor,
            recorded_at=item.recorded_at,
            receipt_json=orjson.dumps(document),
        )


class SignerPool(StageOwner):
    """Supervised owner of the signing threads (a permanent child)."""

    name = "signer"

    def __init__(
        self,
        link: Link,
        *,
        key: SigningKey,
        pipeline: Pipeline,
        workers: int,
        queue_max: int,
        metrics: ActorMetrics,
        stop_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(link, stop_timeout_s)
        self._pipeline = pipeline
        self._stage = _SignerStage(key, pipeline, workers, queue_max, metrics, self.report_crash)
        metrics.signer_queue_depth.set_function(self._stage.depth)

    def stage(self) -> _SignerStage:
        return self._stage

    def attach(self) -> None:
        self._pipeline.attach_signer(self._stage)

    def detach(self) -> None:
        self._pipeline.detach_signer(self._stage)
