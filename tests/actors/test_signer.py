"""SignerPool: admission is the only bound a caller should ever meet."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry

from actors.metrics import ActorMetrics
from actors.pending import Barrier
from actors.pipeline import Pipeline
from actors.signer import _SignerStage
from crypto import SigningKey


class _BlockedWriter:
    """A writer stage that holds every item until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.items: list[Any] = []

    def submit(self, item: Any) -> None:
        self.release.wait(10)
        self.items.append(item)


def test_one_hot_partition_takes_everything_admission_lets_in() -> None:
    admission_max = 64
    pipeline = Pipeline()
    writer = _BlockedWriter()
    pipeline.attach_writer(writer)
    stage = _SignerStage(
        key=SigningKey.generate("EdDSA"),  # barriers are never signed
        pipeline=pipeline,
        workers=4,
        queue_max=admission_max,
        metrics=ActorMetrics(CollectorRegistry()),
        on_fatal=lambda reason: None,
    )
    stage.start()
    try:
        # Every item belongs to one customer, so all land on one partition.
        for _ in range(admission_max):
            stage.submit(Barrier("cus_hot"))
    finally:
        writer.release.set()
        stage.stop(5.0)
    assert len(writer.items) == admission_max
