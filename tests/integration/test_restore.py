"""`billing restore` from the archive the real service wrote: the restored
ledger equals the lost one, and an altered archive is refused with its reason."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import shutil
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crypto import Checkpoint, SigningKey, receipt_hash, sign_checkpoint
from gateway.cli import main
from gateway.storage import ARCHIVE_DIR, LEDGER_FILE, open_store
from ledger.local import CHECKPOINT_DIR
from tests.emulators import spanner_emulator, storage_emulator  # noqa: F401  (fixtures)
from tests.integration.conftest import base_settings, serve

RECEIPTS = 21  # 2 x 5 single charges, a batch of 10, a reversal


@dataclass
class Lost:
    """A ledger the service wrote, its archive, and the JWKS it published."""

    ledger: Path
    archive: Path
    jwks: Path
    customers: list[str]


async def _cli(*argv: str) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, main, list(argv))


def _archived_count(root: Path) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in root.glob("*.jsonl"))


@pytest.fixture
async def lost(tmp_path: Path, signing_key_file: Path) -> Lost:
    """Three customers: single charges (one checkpoint each), a batch, a reversal."""
    settings = base_settings(tmp_path / "data", signing_key_file)
    archive = settings.data_dir / ARCHIVE_DIR
    async with serve(settings) as service:
        customers = [await service.create_customer() for _ in range(3)]
        for _ in range(5):
            for customer in customers[:2]:
                status, body, _ = await service.post_event(customer, service.event(customer))
                assert status == 202, body
        batch = {"events": [service.event(customers[2]) for _ in range(10)]}
        async with service.session.post(
            "/v1/events/batch", json=batch, headers=customers[2].auth
        ) as response:
            assert response.status == 200, await response.text()
        receipt_id = (await service.receipts(customers[0]))[0]["receipt_id"]
        async with service.session.post(
            f"/v1/receipts/{receipt_id}/reversals",
            json={"amount": "0.10", "reason": "outage credit"},
            headers={**service.admin, "Idempotency-Key": "ops-1"},
        ) as response:
            assert response.status == 202, await response.text()
        for _ in range(200):  # the archive follows the ledger in its own thread
            if _archived_count(archive) == RECEIPTS:
                break
            await asyncio.sleep(0.05)
        assert _archived_count(archive) == RECEIPTS
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps(await service.jwks()))
    return Lost(
        settings.data_dir / LEDGER_FILE, archive, jwks, sorted(c.customer_id for c in customers)
    )


def _rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


_RECEIPTS = (
    "SELECT customer_id, seq, receipt_id, idempotency_key, request_fingerprint, entitlement_id, "
    "amount_minor, currency, receipt_hash, previous_receipt_hash, balance_after_minor, "
    "recorded_at, receipt_json, log_index FROM receipts ORDER BY log_index"
)
_SAME = {
    "receipts": _RECEIPTS,
    "chains": "SELECT customer_id, seq, last_receipt_hash, balance_minor FROM accounts "
    "ORDER BY customer_id",
    "usage": "SELECT customer_id, entitlement_id, used_minor FROM entitlements ORDER BY 1, 2",
    "checkpoints": "SELECT * FROM log_checkpoints ORDER BY tree_size",
    "tiles": "SELECT * FROM log_tiles ORDER BY level, tile_index",
}


async def _restore(lost: Lost, archive: Path, target: Path, *extra: str) -> int:
    return await _cli(
        "restore", "--from", str(archive), "--store", f"sqlite:{target}",
        "--jwks", str(lost.jwks), "--progress", "never", *extra,
    )


def _failure(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("FAILED")]
    return line


async def test_a_restored_ledger_equals_the_lost_one_and_passes_the_log_audit(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "restored.sqlite3"
    assert await _restore(lost, lost.archive, target) == 0
    out = capsys.readouterr().out
    assert f"restored {RECEIPTS} receipts of 3 customers" in out
    assert "API keys" in out  # says what the archive cannot give back

    for what, query in _SAME.items():
        assert _rows(target, query) == _rows(lost.ledger, query), what
    assert [row[0] for row in _rows(target, "SELECT status FROM entitlements")] == [
        "restored"
    ] * 3
    state = tmp_path / "audit.json"
    audit = ["log", "audit", "--store", f"sqlite:{target}", "--state", str(state)]
    assert await _cli(*audit, "--progress", "never") == 0  # the store's own keys, restored
    assert f"audited {RECEIPTS} leaves" in capsys.readouterr().out


async def test_a_target_that_is_not_empty_is_refused(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "restored.sqlite3"
    assert await _restore(lost, lost.archive, target) == 0
    capsys.readouterr()
    assert await _restore(lost, lost.archive, target) == 2
    assert "not empty" in capsys.readouterr().err
    assert await _restore(lost, lost.archive, lost.ledger) == 2  # the live one neither


def _tampered(lost: Lost, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered-archive"
    shutil.copytree(lost.archive, copy)
    return copy


def _edit_lines(path: Path, edit: Any) -> None:
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"".join(line + b"\n" for line in edit(lines)))


def _edit_receipt(path: Path, line: int, edit: Any) -> None:
    """Change the signed receipt on one line of an archive file (and its row)."""

    def change(lines: list[bytes]) -> list[bytes]:
        record = json.loads(lines[line])
        receipt = json.loads(base64.b64decode(record["receipt_json"]))
        edit(receipt, record)
        record["receipt_json"] = base64.b64encode(json.dumps(receipt).encode()).decode()
        return [*lines[:line], json.dumps(record).encode(), *lines[line + 1 :]]

    _edit_lines(path, change)


def _customer_file(archive: Path, lost: Lost, number: int) -> Path:
    return archive / f"{lost.customers[number]}.jsonl"


def _the_batch_customer_file(archive: Path) -> Path:
    (path,) = [p for p in archive.glob("*.jsonl") if len(p.read_bytes().splitlines()) == 10]
    return path


async def test_a_changed_amount_in_an_archived_receipt_is_refused(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tampered(lost, tmp_path)

    def change(receipt: dict[str, Any], record: dict[str, Any]) -> None:
        receipt["amount_minor"] += 1

    _edit_receipt(_the_batch_customer_file(archive), 3, change)
    assert await _restore(lost, archive, tmp_path / "r.sqlite3") == 1
    assert ": hash_mismatch: " in _failure(capsys.readouterr().out)


async def test_a_receipt_rewritten_with_its_own_hash_breaks_the_chain(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tampered(lost, tmp_path)

    def rewrite(receipt: dict[str, Any], record: dict[str, Any]) -> None:
        receipt["usage_description"] = "something else"
        receipt["receipt_hash"] = record["receipt_hash"] = receipt_hash(receipt)

    _edit_receipt(_the_batch_customer_file(archive), 3, rewrite)
    assert await _restore(lost, archive, tmp_path / "r.sqlite3") == 1
    assert ": previous_hash_mismatch: " in _failure(capsys.readouterr().out)


async def test_a_removed_receipt_is_refused(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tampered(lost, tmp_path)
    path = _customer_file(archive, lost, 0)
    removed = json.loads(path.read_bytes().splitlines()[2])["log_index"]
    _edit_lines(path, lambda lines: [*lines[:2], *lines[3:]])
    assert await _restore(lost, archive, tmp_path / "r.sqlite3") == 1
    failure = _failure(capsys.readouterr().out)
    assert failure.startswith(f"FAILED at leaf {removed}: receipt_missing: ")


async def test_a_checkpoint_signed_by_another_key_is_refused(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tampered(lost, tmp_path)
    (path,) = (archive / CHECKPOINT_DIR).glob("checkpoints-*.jsonl")

    def forge(lines: list[bytes]) -> list[bytes]:
        forged = []
        for line in lines:
            record = json.loads(line)
            if record["tree_size"] == 6:
                root = bytes.fromhex(record["root_hash"].split(":")[-1])
                checkpoint = Checkpoint("attacker", 6, root, record["timestamp"])
                record["jws"] = sign_checkpoint(checkpoint, SigningKey.generate())
            forged.append(json.dumps(record).encode())
        return forged

    _edit_lines(path, forge)
    assert await _restore(lost, archive, tmp_path / "r.sqlite3") == 1
    assert _failure(capsys.readouterr().out).startswith("FAILED at checkpoint 6: unknown_kid: ")


async def test_receipts_beyond_the_archived_checkpoints_are_left_out(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded archive follows receipts and checkpoints separately: a
    receipt whose checkpoint is not archived yet is counted, not restored."""
    archive = _tampered(lost, tmp_path)
    (path,) = (archive / CHECKPOINT_DIR).glob("checkpoints-*.jsonl")
    _edit_lines(path, lambda lines: [x for x in lines if json.loads(x)["tree_size"] < RECEIPTS])
    target = tmp_path / "r.sqlite3"
    assert await _restore(lost, archive, target) == 0
    out = capsys.readouterr().out
    newest = max(row[0] for row in _rows(target, "SELECT tree_size FROM log_checkpoints"))
    assert f"left out: {RECEIPTS - newest} archived receipts" in out
    assert _rows(target, "SELECT count(*) FROM receipts") == [(newest,)]


@pytest.mark.usefixtures("storage_emulator")
async def test_a_cloud_storage_archive_restores_the_same_ledger(
    lost: Lost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The archive the service would have written to Cloud Storage (copied
    from the embedded one through the same port), restored by gs:// URL."""
    from ledger.gcs import GcsArchive
    from ledger.local import FileArchive

    url = f"gs://restore-{uuid.uuid4().hex[:8]}/prod/"
    files, bucket = FileArchive(lost.archive), GcsArchive.open(url, create_bucket=True)
    try:
        for customer_id in files.customer_ids():
            bucket.append(files.read_customer(customer_id))
        bucket.append_checkpoints(files.read_checkpoints(0, 1_000))
    finally:
        files.close()
        bucket.close()
    target = tmp_path / "restored.sqlite3"
    status = await _cli(
        "restore", "--from", url, "--store", f"sqlite:{target}",
        "--jwks", str(lost.jwks), "--progress", "never",
    )
    assert status == 0, capsys.readouterr()
    for what, query in _SAME.items():
        assert _rows(target, query) == _rows(lost.ledger, query), what


def _through_the_port(store: Any) -> dict[str, Any]:
    """What a ledger holds, read through the LedgerStore and LogReader ports
    (so that a SQLite ledger and a Spanner one compare alike)."""
    head = store.log_head()
    size = 0 if head is None else head.tree_size
    customers = sorted(store.list_customer_ids())
    tiles = store.read_tiles([(level, index) for level in range(3) for index in range(4)])
    return {
        "receipts": [dataclasses.astuple(r) for r in store.receipts_by_log_index(0, size + 1)],
        "chains": [store.get_account_head(c) for c in customers],
        "usage": [
            sorted((e.entitlement_id, e.used_minor) for e in store.get_entitlements(c).values())
            for c in customers
        ],
        "checkpoints": store.log_checkpoints(0, 1_000),
        "tiles": sorted(tiles.items()),
    }


@pytest.mark.usefixtures("spanner_emulator")
async def test_a_spanner_ledger_restored_from_the_archive_equals_the_lost_one(
    lost: Lost, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runbook on Spanner: `billing migrate --create` makes the empty
    target, `billing restore` fills it; read back through the store port it
    is the lost ledger, and a second restore into it is refused."""
    from ledger.sqlite import SqliteLedger
    from tests.gcp._data import PROJECT, unique

    url = f"spanner://projects/{PROJECT}/instances/test/databases/{unique('restore')}"
    assert await _cli("migrate", "--create", "--store", url) == 0
    restore = ["restore", "--from", str(lost.archive), "--store", url, "--jwks", str(lost.jwks)]
    status = await _cli(*restore, "--progress", "never")
    out, err = capsys.readouterr()
    assert status == 0, (out, err)
    assert f"restored {RECEIPTS} receipts of 3 customers" in out

    before, after = SqliteLedger.open(lost.ledger), open_store(url)
    try:
        lost_view, restored_view = _through_the_port(before), _through_the_port(after)
    finally:
        before.close()
        after.close()
    assert len(lost_view["receipts"]) == RECEIPTS
    for what in lost_view:
        assert restored_view[what] == lost_view[what], what

    assert await _cli(*restore, "--progress", "never") == 2
    assert "not empty" in capsys.readouterr().err
