"""`billing log audit` on real SQLite ledgers written by the real service, then
tampered with directly (sqlite3): each kind of tampering has its own reason."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from crypto import Checkpoint, SigningKey, TrustedKeys, receipt_hash, receipt_leaf, sign_checkpoint
from gateway.cli import main
from gateway.settings import Settings
from gateway.storage import LEDGER_FILE
from ledger.log_audit import AuditState, LogAuditRun, audit_log, stored_jwks
from ledger.sqlite import SqliteLedger
from tests.integration.conftest import Customer, Service, base_settings, serve


async def _charge(service: Service, customer: Customer, count: int = 1) -> None:
    for _ in range(count):
        status, body, _ = await service.post_event(customer, service.event(customer))
        assert status == 202, body


async def _cli(argv: list[str]) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, main, argv)


class Ledger:
    """A ledger file the service wrote, and an auditor's state file."""

    def __init__(self, settings: Settings, state: Path) -> None:
        self.settings = settings
        self.path = settings.data_dir / LEDGER_FILE
        self.state = state

    async def audit(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        capsys.readouterr()
        argv = ["log", "audit", "--store", f"sqlite:{self.path}", "--state", str(self.state)]
        status = await _cli([*argv, "--progress", "never"])
        return status, capsys.readouterr().out

    @contextmanager
    def sql(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            yield conn

    def backup(self, to: Path) -> None:
        with self.sql() as conn, closing(sqlite3.connect(to)) as copy:
            conn.backup(copy)

    def restore(self, backup: Path) -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(backup, self.path)


@pytest.fixture
async def ledger(tmp_path: Path, signing_key_file: Path) -> Ledger:
    """20 receipts of two customers: single charges (one checkpoint each) and a batch."""
    settings = base_settings(tmp_path / "data", signing_key_file)
    async with serve(settings) as service:
        one, two = await service.create_customer(), await service.create_customer()
        for _ in range(5):
            await _charge(service, one)
            await _charge(service, two)
        batch = {"events": [service.event(one) for _ in range(10)]}
        async with service.session.post(
            "/v1/events/batch", json=batch, headers=one.auth
        ) as response:
            assert response.status == 200, await response.text()
    return Ledger(settings, tmp_path / "audit-state.json")


def _failure(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("FAILED")]
    return line


async def test_an_untouched_log_passes_and_its_head_is_remembered(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = await ledger.audit(capsys)
    assert status == 0, out
    assert "audited 20 leaves" in out and "2 customers" in out
    assert json.loads(ledger.state.read_text())["tree_size"] == 20
    assert (await ledger.audit(capsys))[0] == 0  # and again, against the state


def test_the_audit_is_a_function_with_a_report(ledger: Ledger) -> None:
    """For the service's own start-up audit: no CLI, a report object."""
    store = SqliteLedger.open(ledger.path)
    try:
        keys = TrustedKeys(stored_jwks(store.signing_keys()))
        report = audit_log(store, keys)
        assert report.ok and (report.leaves, report.customers) == (20, 2)
        state = report.state()
        assert state is not None and AuditState.from_json(state.to_json()) == state
        moved_on = AuditState(21, state.root_hash, state.jws)
        rollback = audit_log(store, keys, moved_on).failure
        assert rollback is not None and rollback.reason == "rollback"
    finally:
        store.close()


def test_an_audit_advanced_in_slices_reports_what_one_in_one_go_does(ledger: Ledger) -> None:
    """The reconciler spreads its audit of the log over a pass, a few pages
    a round: the slices add up to the whole audit, and a receipt altered
    ahead of the run (in a page not yet reached) is found when reached."""
    store = SqliteLedger.open(ledger.path)
    try:
        keys = TrustedKeys(stored_jwks(store.signing_keys()))
        whole = audit_log(store, keys)
        run = LogAuditRun(store, keys, page_receipts=3)
        slices = 0
        while (report := run.advance(6)) is None:
            slices += 1
            assert run.leaves_done == 6 * slices  # two pages of 3 a slice
        assert report == whole and slices == 3

        run = LogAuditRun(store, keys, page_receipts=3)
        assert run.advance(6) is None
        with ledger.sql() as conn:
            query = "SELECT receipt_json FROM receipts WHERE log_index = 17"
            (raw,) = conn.execute(query).fetchone()
            receipt = json.loads(raw)
            receipt["amount_minor"] += 1
            conn.execute("UPDATE receipts SET receipt_json = ? WHERE log_index = 17",
                         (json.dumps(receipt),))
        report = run.advance(None)
        assert report is not None and report.failure is not None
        assert (report.failure.reason, report.failure.log_index) == ("hash_mismatch", 17)
    finally:
        store.close()


async def test_an_amount_changed_in_a_receipt_is_a_hash_mismatch(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    with ledger.sql() as conn:
        (raw,) = conn.execute("SELECT receipt_json FROM receipts WHERE log_index = 7").fetchone()
        receipt = json.loads(raw)
        receipt["amount_minor"] += 1
        conn.execute(
            "UPDATE receipts SET receipt_json = ?, amount_minor = amount_minor + 1 "
            "WHERE log_index = 7",
            (json.dumps(receipt).encode(),),
        )
    status, out = await ledger.audit(capsys)
    assert status == 1
    assert _failure(out).startswith("FAILED at leaf 7, receipt ")
    assert ": hash_mismatch: " in out


async def test_a_changed_tile_byte_is_a_tile_mismatch(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    with ledger.sql() as conn:
        (tile,) = conn.execute("SELECT hashes FROM log_tiles WHERE level = 0").fetchone()
        changed = bytearray(tile)
        changed[12 * 32 + 5] ^= 1
        conn.execute("UPDATE log_tiles SET hashes = ? WHERE level = 0", (bytes(changed),))
    status, out = await ledger.audit(capsys)
    assert status == 1 and "FAILED at leaf 12" in out and ": tile_mismatch: " in out


@pytest.mark.parametrize("deleted", [4, 19])
async def test_a_deleted_receipt_is_missing(
    ledger: Ledger, capsys: pytest.CaptureFixture[str], deleted: int
) -> None:
    with ledger.sql() as conn:
        conn.execute("DELETE FROM receipts WHERE log_index = ?", (deleted,))
    status, out = await ledger.audit(capsys)
    assert status == 1 and f"FAILED at leaf {deleted}" in out
    assert ": receipt_missing: " in out


async def test_two_receipts_swapped_in_the_log_are_reordered(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    with ledger.sql() as conn:  # leaves 2 and 3: receipts of two different customers
        conn.execute("UPDATE receipts SET log_index = -1 WHERE log_index = 2")
        conn.execute("UPDATE receipts SET log_index = 2 WHERE log_index = 3")
        conn.execute("UPDATE receipts SET log_index = 3 WHERE log_index = -1")
    status, out = await ledger.audit(capsys)
    assert status == 1 and "FAILED at leaf 2" in out and ": reordered: " in out


async def test_a_checkpoint_signed_by_an_unknown_key(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    with ledger.sql() as conn:
        size, root, timestamp = conn.execute(
            "SELECT tree_size, root_hash, timestamp FROM log_checkpoints WHERE tree_size = 6"
        ).fetchone()
        forged = sign_checkpoint(
            Checkpoint(ledger.settings.log_origin, size, bytes(root), timestamp),
            SigningKey.generate(),
        )
        conn.execute("UPDATE log_checkpoints SET jws = ? WHERE tree_size = 6", (forged,))
    status, out = await ledger.audit(capsys)
    assert status == 1 and "FAILED at checkpoint 6" in out and ": unknown_kid: " in out


async def test_a_receipt_rewritten_with_its_hash_and_tile_is_a_root_mismatch(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    # Everything but the signed checkpoint rewritten to agree (the last leaf:
    # no later receipt links to it).
    with ledger.sql() as conn:
        (raw,) = conn.execute("SELECT receipt_json FROM receipts WHERE log_index = 19").fetchone()
        receipt = json.loads(raw)
        receipt["amount_minor"] += 1
        receipt["receipt_hash"] = receipt_hash(receipt)
        conn.execute(
            "UPDATE receipts SET receipt_json = ?, receipt_hash = ? WHERE log_index = 19",
            (json.dumps(receipt).encode(), receipt["receipt_hash"]),
        )
        (tile,) = conn.execute("SELECT hashes FROM log_tiles WHERE level = 0").fetchone()
        tile = tile[: 19 * 32] + receipt_leaf(receipt["receipt_hash"]) + tile[20 * 32 :]
        conn.execute("UPDATE log_tiles SET hashes = ? WHERE level = 0", (tile,))
    status, out = await ledger.audit(capsys)
    assert status == 1 and "FAILED at checkpoint 20" in out and ": root_mismatch: " in out


async def test_leaves_no_checkpoint_signs_are_unsigned(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    with ledger.sql() as conn:
        conn.execute("DELETE FROM log_checkpoints WHERE tree_size = 20")
    status, out = await ledger.audit(capsys)
    assert status == 1 and "FAILED at leaf 10" in out and ": unsigned_leaf: " in out


async def test_a_log_restored_from_a_backup_and_regrown_is_a_rollback_then_a_fork(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "backup.sqlite3"
    ledger.backup(backup)  # 20 leaves
    async with serve(ledger.settings) as service:
        customer = await service.create_customer()
        await _charge(service, customer, 5)
        kept = tmp_path / "kept-checkpoint.json"
        async with service.session.get("/v1/log/checkpoint", headers=customer.auth) as response:
            kept.write_text(await response.text())
    assert json.loads(kept.read_text())["tree_size"] == 25
    assert (await ledger.audit(capsys))[0] == 0  # remembers 25

    ledger.restore(backup)  # back to 20 leaves: the last 5 are gone
    async with serve(ledger.settings) as service:
        customer = await service.create_customer()
        await _charge(service, customer, 3)
    status, out = await ledger.audit(capsys)
    assert status == 1 and ": rollback: the log has 23 leaves" in out

    async with serve(ledger.settings) as service:  # regrown past 25, differently
        await _charge(service, customer, 5)
        jwks = await service.jwks()
        export = tmp_path / "export.jsonl"
        argv = ["export", str(export), "--url", service.url, "--api-key", customer.api_key]
        assert await _cli(argv) == 0
        (tmp_path / "jwks.json").write_text(json.dumps(jwks))
        capsys.readouterr()
        # The customer who kept the checkpoint of 25 sees the fork too.
        verify = ["verify", str(export), "--jwks", str(tmp_path / "jwks.json")]
        online = ["--url", service.url, "--api-key", customer.api_key]
        assert await _cli([*verify, "--checkpoint", str(kept), *online]) == 1
        out = capsys.readouterr().out
        assert ": fork: two signed checkpoints of 25 leaves with different roots" in out
    status, out = await ledger.audit(capsys)
    assert status == 1 and "FAILED at checkpoint 25" in out and ": fork: " in out


async def test_a_proof_for_the_wrong_index_is_not_in_log(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(ledger.settings) as service:
        customer = await service.create_customer()
        await _charge(service, customer, 3)
        export = tmp_path / "export.jsonl"
        argv = ["export", str(export), "--url", service.url, "--api-key", customer.api_key]
        assert await _cli(argv) == 0
        jwks = f"{service.url}/.well-known/jwks.json"
        lines = export.read_bytes().splitlines()
        second = json.loads(lines[1])
        second["log"]["index"] -= 1  # the path of leaf 21, claimed for leaf 20
        lines[1] = json.dumps(second).encode()
        export.write_bytes(b"\n".join(lines) + b"\n")
        capsys.readouterr()
        assert await _cli(["verify", str(export), "--jwks", jwks]) == 1
    out = capsys.readouterr().out
    assert "FAILED at line 2" in out and ": not_in_log: " in out
