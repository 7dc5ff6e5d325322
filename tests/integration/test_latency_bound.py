"""The latency bound end to end: each charge's latency reaches admission, the
loop-lag ticker adapts the bound, and /metrics shows the bound in force."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.admission import LATENCY_WINDOW_S
from ledger import limits
from tests.integration._proc import wait_until
from tests.integration.conftest import Service


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A target every real charge misses, so the bound must come down.
    return {"admission_latency_target_ms": 0.001}


async def _bound(service: Service) -> float:
    async with service.session.get("/metrics") as response:
        text = await response.text()
    match = re.search(r"^billing_admission_bound (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


async def test_slow_charges_lower_the_bound_and_an_idle_service_restores_it(
    service: Service,
) -> None:
    customer = await service.create_customer()
    assert await _bound(service) == limits.admission_queue_max
    floor = limits.customer_inflight_max  # the latency bound's floor: the customer bound
    lowest = float(limits.admission_queue_max)
    for _ in range(200):  # every window sees charges complete
        status, _, _ = await service.post_event(customer, service.event(customer))
        assert status == 202
        lowest = min(lowest, await _bound(service))
        if lowest == floor:
            break
    assert lowest == floor

    async def restored() -> bool:  # after a window with nothing in flight
        return await _bound(service) == limits.admission_queue_max

    assert await wait_until(restored, timeout_s=20 * LATENCY_WINDOW_S)
