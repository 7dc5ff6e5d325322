"""InProcessBroadcast and FileArchive beyond the contract."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ledger.errors import StoreUnavailable
from ledger.local import FileArchive, InProcessBroadcast
from ledger.model import StoredReceipt
from tests.contract._chain import Chain


def test_broadcast_logs_a_failing_subscriber_and_unsubscribes() -> None:
    broadcast = InProcessBroadcast()
    got: list[Sequence[StoredReceipt]] = []

    def failing(receipts: Sequence[StoredReceipt]) -> None:
        raise RuntimeError("boom")

    unsubscribe = broadcast.subscribe(failing)
    broadcast.subscribe(got.append)
    receipt = Chain("cus_a").next().receipt
    with capture_logs() as logs:
        broadcast.publish([receipt])
    assert got == [[receipt]]
    assert [entry["event"] for entry in logs] == ["ledger.broadcast.subscriber_failed"]

    unsubscribe()
    with capture_logs() as logs:
        broadcast.publish([receipt])
    assert logs == []
    broadcast.close()
    with pytest.raises(StoreUnavailable):
        broadcast.publish([receipt])


def test_archive_survives_a_new_instance_and_stays_idempotent(tmp_path: Path) -> None:
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(3)]
    first = FileArchive(tmp_path)
    first.append(receipts[:2])
    first.close()

    second = FileArchive(tmp_path)
    second.append(receipts)  # ids already on disk are not written again
    assert second.read_customer("cus_a") == receipts
    lines = (tmp_path / "cus_a.jsonl").read_bytes().splitlines()
    assert len(lines) == 3


def test_archive_drops_a_torn_last_line_before_appending(tmp_path: Path) -> None:
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(2)]
    archive = FileArchive(tmp_path)
    archive.append(receipts[:1])
    with (tmp_path / "cus_a.jsonl").open("ab") as handle:
        handle.write(b'{"customer_id":"cus_a","se')  # a crash mid-append

    fresh = FileArchive(tmp_path)
    assert fresh.read_customer("cus_a") == receipts[:1]
    fresh.append(receipts)
    assert fresh.read_customer("cus_a") == receipts
