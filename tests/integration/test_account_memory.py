"""What the service keeps per customer touched is bounded (issue 20): live
account actors past `account_actors_live_max` are passivated least recently
active first, and passivated customers leave nothing behind in the
directory, the accounts supervisor or admission."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from actors.account import AccountActor
from ledger import limits
from tests.integration.conftest import Service


async def _charge(service: Service, customer: Any) -> None:
    status, body, _ = await service.post_event(customer, service.event(customer))
    assert status == 202, body


async def _passivate(service: Service) -> int:
    directory = service.runtime.services.directory
    return await asyncio.get_running_loop().run_in_executor(None, directory.passivate_idle)


def _live(service: Service) -> dict[str, int]:
    directory = service.runtime.services.directory
    supervisor = directory._accounts.current()
    assert supervisor is not None
    return supervisor.count_children()


@pytest.fixture
def live_max_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "account_actors_live_max", 3)


@pytest.mark.usefixtures("live_max_3")
@pytest.mark.parametrize("settings_overrides", [{"account_idle_s": 600.0}])
async def test_past_the_live_bound_the_least_recently_active_are_passivated(
    service: Service,
) -> None:
    customers = [await service.create_customer() for _ in range(6)]
    for customer in customers:
        await _charge(service, customer)
    # None is idle; the bound acts on the next passivation round (every
    # second in the background, or this one).
    await _passivate(service)
    directory = service.runtime.services.directory
    alive = [directory.lookup(c.customer_id) is not None for c in customers]
    assert alive == [False, False, False, True, True, True]
    assert _live(service) == {"specs": 3, "active": 3, "supervisors": 0, "workers": 3}
    # A passivated customer charges on where its chain was.
    await _charge(service, customers[0])
    assert [r["seq"] for r in await service.receipts(customers[0])] == [1, 2]


@pytest.mark.parametrize("settings_overrides", [{"account_idle_s": 0.2}])
async def test_passivated_customers_leave_nothing_behind(service: Service) -> None:
    customers = [await service.create_customer() for _ in range(5)]
    for customer in customers:
        await _charge(service, customer)
    await asyncio.sleep(0.3)
    await _passivate(service)  # the background round may have done some already
    services = service.runtime.services
    assert services.directory._deps.activity == {}
    assert _live(service)["specs"] == 0
    assert services.admission.inflight == 0 and services.admission._per_customer == {}
    async with service.session.get("/metrics") as response:
        assert "billing_live_account_actors 0.0" in await response.text()


def _stopped_actors_in_memory() -> int:
    return sum(1 for o in gc.get_objects()
               if isinstance(o, AccountActor) and o.actor_stopped.is_set())


@pytest.mark.parametrize("settings_overrides", [{"account_idle_s": 0.2}])
async def test_passivated_actors_are_freed_without_waiting_for_the_collector(
    service: Service,
) -> None:
    """A serving process collects cycles rarely (gateway.gc_tuning): a
    passivated actor held in a cycle kept all it had loaded, ~14 KiB per
    customer touched past the live bound (issue 20)."""
    customers = [await service.create_customer() for _ in range(5)]
    gc.collect()
    gc.disable()
    try:
        for customer in customers:
            await _charge(service, customer)
        await asyncio.sleep(0.3)
        await _passivate(service)
        assert _live(service)["specs"] == 0
        assert _stopped_actors_in_memory() == 0
    finally:
        gc.enable()
