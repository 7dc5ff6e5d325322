"""`billing export` then `billing verify --known-head`: the README's flow, on a
chain longer than one page of the list."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.cli import main
from tests.integration.conftest import Service


async def test_export_pages_through_the_whole_chain_and_verify_checks_its_head(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = await service.create_customer()
    for _ in range(11):  # 1,100 receipts: more than one page of 1,000
        batch = {"events": [service.event(customer) for _ in range(100)]}
        async with service.session.post(
            "/v1/events/batch", json=batch, headers=customer.auth
        ) as response:
            assert response.status == 200, await response.text()
    output = tmp_path / "receipts.jsonl"
    loop = asyncio.get_running_loop()
    export = ["export", str(output), "--url", service.url, "--api-key", customer.api_key]
    assert await loop.run_in_executor(None, main, export) == 0
    out = capsys.readouterr().out
    head = (tmp_path / "receipts.jsonl.head").read_text().strip()
    assert f"exported 1,100 receipts of customer {customer.customer_id}" in out and head in out
    assert len(output.read_bytes().splitlines()) == 1100

    jwks = f"{service.url}/.well-known/jwks.json"
    verify = ["verify", str(output), "--jwks", jwks, "--known-head", f"{output}.head"]
    assert await loop.run_in_executor(None, main, verify) == 0
    assert "verified 1,100 receipts" in capsys.readouterr().out

    # The README's old flow: one page of 1,000 now fails against the head.
    output.write_bytes(b"\n".join(output.read_bytes().splitlines()[:1000]) + b"\n")
    assert await loop.run_in_executor(None, main, verify) == 1
    assert "truncated" in capsys.readouterr().out
