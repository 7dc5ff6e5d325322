"""`billing verify --checkpoint`: every receipt of an export is in one
checkpoint the customer holds, offline when the export was proved against it,
through the service's consistency proofs otherwise."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from crypto import Checkpoint, SigningKey, sign_checkpoint, verify_checkpoint
from gateway.cli import main
from tests.integration.conftest import Customer, Service


async def _charges(service: Service, customer: Customer, count: int) -> None:
    for _ in range(count):
        status, body, _ = await service.post_event(customer, service.event(customer))
        assert status == 202, body


async def _cli(argv: list[str]) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, main, argv)


async def _export(service: Service, customer: Customer, output: Path) -> None:
    argv = ["export", str(output), "--url", service.url, "--api-key", customer.api_key]
    assert await _cli(argv) == 0


async def _customer_export(service: Service, tmp_path: Path, charges: int) -> tuple[Customer, Path]:
    """A new customer with `charges` receipts, exported to receipts.jsonl."""
    customer = await service.create_customer()
    await _charges(service, customer, charges)
    export = tmp_path / "receipts.jsonl"
    await _export(service, customer, export)
    return customer, export


async def _keep_checkpoint(service: Service, customer: Customer, path: Path) -> dict[str, Any]:
    async with service.session.get("/v1/log/checkpoint", headers=customer.auth) as response:
        assert response.status == 200
        checkpoint: dict[str, Any] = await response.json()
    path.write_text(json.dumps(checkpoint))
    return checkpoint


def _verify(service: Service, export: Path, checkpoint: str, *extra: str) -> list[str]:
    jwks = f"{service.url}/.well-known/jwks.json"
    return ["verify", str(export), "--jwks", jwks, "--checkpoint", checkpoint, *extra]


async def test_an_export_verifies_offline_against_the_checkpoint_written_with_it(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customer, other = await service.create_customer(), await service.create_customer()
    await _charges(service, customer, 4)
    await _charges(service, other, 3)  # the log moves on with other customers' charges
    export = tmp_path / "receipts.jsonl"
    await _export(service, customer, export)
    written = json.loads((tmp_path / "receipts.jsonl.checkpoint").read_text())
    assert written["tree_size"] == 7
    assert all(
        json.loads(line)["log"]["tree_size"] == 7 for line in export.read_bytes().splitlines()
    )
    capsys.readouterr()
    assert await _cli(_verify(service, export, f"{export}.checkpoint")) == 0
    assert "verified 4 receipts" in capsys.readouterr().out

    # The bare JWS is accepted as well as the JSON document.
    (tmp_path / "bare.jws").write_text(written["checkpoint"] + "\n")
    assert await _cli(_verify(service, export, str(tmp_path / "bare.jws"))) == 0


async def test_another_checkpoint_needs_the_services_consistency_proof(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customer, export = await _customer_export(service, tmp_path, 3)  # proved against 3
    await _charges(service, customer, 2)
    newer = tmp_path / "newer.json"
    await _keep_checkpoint(service, customer, newer)  # 5 leaves
    capsys.readouterr()

    # Offline, nothing links the export's checkpoint (3) to the one held (5).
    assert await _cli(_verify(service, export, str(newer))) == 1
    out = capsys.readouterr().out
    assert "FAILED at line 1" in out and "not_in_checkpoint" in out

    # With the service, a consistency proof 3 -> 5 does.
    online = ("--url", service.url, "--api-key", customer.api_key)
    assert await _cli(_verify(service, export, str(newer), *online)) == 0
    # A checkpoint URL is its own service (and needs the API key).
    url = f"{service.url}/v1/log/checkpoint"
    assert await _cli(_verify(service, export, url, "--api-key", customer.api_key)) == 0
    capsys.readouterr()

    # Receipts after the checkpoint held are not in it, wherever proofs come from.
    older = tmp_path / "older.json"
    older.write_text(json.dumps({"checkpoint": json.loads(newer.read_text())["checkpoint"]}))
    later = tmp_path / "later.jsonl"
    await _export(service, customer, later)
    await _charges(service, customer, 1)
    await _keep_checkpoint(service, customer, older)  # 6 leaves, export at 5: fine
    assert await _cli(_verify(service, later, str(older), *online)) == 0
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"checkpoint": _checkpoint_of_size(later, 5)}))
    await _charges(service, customer, 1)
    await _export(service, customer, later)  # now 7 receipts, proved against 7
    capsys.readouterr()
    assert await _cli(_verify(service, later, str(first), *online)) == 1
    out = capsys.readouterr().out
    assert "FAILED at line 6" in out and "not_in_checkpoint" in out


def _checkpoint_of_size(export: Path, size: int) -> str:
    for line in export.read_bytes().splitlines():
        block = json.loads(line)["log"]
        if block["tree_size"] == size:
            return str(block["checkpoint"])
    raise AssertionError(f"no receipt proved against {size}")


async def test_a_checkpoint_signed_by_an_unknown_key_fails(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, export = await _customer_export(service, tmp_path, 2)
    genuine = verify_checkpoint(
        json.loads((tmp_path / "receipts.jsonl.checkpoint").read_text())["checkpoint"],
        await service.jwks(),
    )
    # Same size and root, signed by someone else's key.
    forged = sign_checkpoint(
        Checkpoint(genuine.origin, genuine.tree_size, genuine.root_hash, genuine.timestamp),
        SigningKey.generate(),
    )
    (tmp_path / "forged.jws").write_text(forged)
    capsys.readouterr()
    assert await _cli(_verify(service, export, str(tmp_path / "forged.jws"))) == 1
    assert "unknown_kid" in capsys.readouterr().out
    (tmp_path / "junk").write_text("not a checkpoint")
    assert await _cli(_verify(service, export, str(tmp_path / "junk"))) == 2
