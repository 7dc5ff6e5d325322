"""The embedded archive (`<data-dir>/archive`) holds every receipt the service
acknowledged and every signed checkpoint of its receipt log, following the
ledger without an outbox copy, and a data directory from an earlier version
(archive messages still in its outbox) is taken over without losing or
doubling any."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from crypto import verify_checkpoint
from gateway.storage import ARCHIVE_DIR, LEDGER_FILE, TOPIC_ARCHIVE
from ledger import LogCheckpoint, OutboxMessage, StoredReceipt
from ledger.local import FileArchive
from ledger.receipt_codec import encode_stored_receipt
from ledger.sqlite import SqliteLedger
from tests.contract._chain import Chain, customer, entitlement
from tests.integration.conftest import Service

WAIT_S = 10.0


def _archived(data_dir: Path, customer_id: str) -> list[StoredReceipt]:
    archive = FileArchive(data_dir / ARCHIVE_DIR)
    try:
        return archive.read_customer(customer_id)
    finally:
        archive.close()


def _outbox_rows(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / LEDGER_FILE) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def _until_archived(data_dir: Path, customer_id: str, count: int) -> list[StoredReceipt]:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        archived = _archived(data_dir, customer_id)
        if len(archived) >= count or asyncio.get_running_loop().time() > deadline:
            return archived
        await asyncio.sleep(0.05)


def _archived_checkpoints(data_dir: Path) -> list[LogCheckpoint]:
    archive = FileArchive(data_dir / ARCHIVE_DIR)
    try:
        return archive.read_checkpoints(0, 10_000)
    finally:
        archive.close()


async def test_every_signed_checkpoint_is_archived_and_verifies_with_the_jwks(
    service: Service, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    customers = [await service.create_customer() for _ in range(3)]
    await asyncio.gather(
        *(service.post_event(c, service.event(c)) for c in customers for _ in range(10))
    )
    for customer_ in customers[:2]:  # and a few commits of one receipt each
        assert (await service.post_event(customer_, service.event(customer_)))[0] == 202
    async with service.session.get(
        "/v1/log/checkpoints", params={"limit": 1000}, headers=service.admin
    ) as response:
        history = (await response.json())["data"]
    assert history[-1]["tree_size"] == 32

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while len(archived := _archived_checkpoints(data_dir)) < len(history):
        assert asyncio.get_running_loop().time() < deadline, archived
        await asyncio.sleep(0.05)
    assert [c.jws for c in archived] == [c["checkpoint"] for c in history]
    jwks = await service.jwks()
    for checkpoint in archived:
        signed = verify_checkpoint(checkpoint.jws, jwks)
        assert (signed.tree_size, signed.root_hash) == (checkpoint.tree_size, checkpoint.root_hash)
        assert signed.timestamp == checkpoint.timestamp
    assert _outbox_rows(data_dir) == 0  # followed from the ledger, not queued


async def test_every_acknowledged_receipt_is_archived_with_no_outbox_copy(
    service: Service, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    customers = [await service.create_customer() for _ in range(2)]
    for customer_ in customers:
        for _ in range(3):
            assert (await service.post_event(customer_, service.event(customer_)))[0] == 202
    for customer_ in customers:
        chain = await service.receipts(customer_)
        archived = await _until_archived(data_dir, customer_.customer_id, len(chain))
        assert [r.receipt_id for r in archived] == [r["receipt_id"] for r in chain]
    assert _outbox_rows(data_dir) == 0


LEGACY_CUSTOMER = "cus_from_before"


@pytest.fixture
def legacy_data_dir(tmp_path: Path) -> list[StoredReceipt]:
    """A data directory as an earlier version left it: two receipts whose
    archive copies were still queued in the outbox."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ledger = SqliteLedger.open(data_dir / LEDGER_FILE)
    try:
        ledger.create_customer(customer(LEGACY_CUSTOMER))
        ledger.put_entitlement(entitlement(LEGACY_CUSTOMER, quota_minor=None))
        chain = Chain(LEGACY_CUSTOMER)
        writes = [chain.next() for _ in range(2)]
        ledger.commit_batch(
            writes,
            [
                OutboxMessage(
                    message_id=f"{w.receipt.receipt_id}:{TOPIC_ARCHIVE}",
                    topic=TOPIC_ARCHIVE,
                    ordering_key=LEGACY_CUSTOMER,
                    payload=encode_stored_receipt(w.receipt),
                    created_at=w.receipt.recorded_at,
                )
                for w in writes
            ],
        )
    finally:
        ledger.close()
    return [w.receipt for w in writes]


async def test_an_earlier_versions_queued_archive_copies_are_taken_over(
    legacy_data_dir: list[StoredReceipt], service: Service, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    archived = await _until_archived(data_dir, LEGACY_CUSTOMER, len(legacy_data_dir))
    assert archived == legacy_data_dir
    assert _outbox_rows(data_dir) == 0  # nothing left that no relay would deliver
    lines = (data_dir / ARCHIVE_DIR / f"{LEGACY_CUSTOMER}.jsonl").read_bytes().splitlines()
    assert len(lines) == 2
