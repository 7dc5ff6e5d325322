"""/metrics says which stage of the charge path the CPU went to."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.cpu_budget import parse_cpu_seconds
from tests.integration.conftest import Service

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")


@pytest.mark.parametrize("settings_overrides", [{"receipt_signing": "receipt"}])
async def test_metrics_show_cpu_by_stage_and_of_the_signing_processes(service: Service) -> None:
    customer = await service.create_customer()
    for _ in range(5):
        status, _, _ = await service.post_event(customer, service.event(customer))
        assert status == 202
    async with service.session.get("/metrics") as response:
        assert response.status == 200
        seconds = parse_cpu_seconds(await response.text())
    for stage in ("MainThread", "accounts", "signer", "ledger-writer", "archive-feed"):
        assert stage in seconds, sorted(seconds)
    # Two signing processes (signer_workers=2), each a Python that loaded a key.
    assert seconds["crypto.sign_worker"] > 0


async def test_checkpoint_mode_has_no_signer_stage(service: Service) -> None:
    customer = await service.create_customer()
    status, _, _ = await service.post_event(customer, service.event(customer))
    assert status == 202
    async with service.session.get("/metrics") as response:
        seconds = parse_cpu_seconds(await response.text())
    for stage in ("MainThread", "accounts", "ledger-writer", "archive-feed"):
        assert stage in seconds, sorted(seconds)
    assert "signer" not in seconds and "crypto.sign_worker" not in seconds
