"""The background audit in its own process (issue 17): a real service on a
SQLite file, rounds every half second, the hashing done by a spawned child
that reads the ledger read-only beside the serving process; the halt, the
metrics and the last verified checkpoint stay with the gateway."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from typing import Any

import pytest

import actors.integrity.reconciler as reconciler_module
from actors.integrity._audit_process import audit_process_nice
from tests.integration.conftest import Customer, Service
from tests.integration.test_integrity_halt import LEDGER, _tamper_last_amount

# Rounds every half second: a round audits the whole (small) ledger.
pytestmark = pytest.mark.parametrize("settings_overrides", [{"reconcile_interval_s": 0.5}])

# A spawn imports the audit's modules afresh (~1 s); rounds are 0.5 s apart.
FOUND_WITHIN_S = 30.0


def _audit_children() -> list[multiprocessing.process.BaseProcess]:
    """The service runs in this process: its audit child is ours."""
    return [p for p in multiprocessing.active_children() if p.name == "billing-audit"]


async def _eventually(predicate: Any, timeout_s: float = FOUND_WITHIN_S) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return bool(await predicate())


async def _halted(service: Service) -> bool:
    async with service.session.get("/readyz") as response:
        return response.status == 503


async def _metric(service: Service, name: str) -> float:
    async with service.session.get("/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def _charged(service: Service, count: int) -> Customer:
    customer = await service.create_customer()
    for _ in range(count):
        assert (await service.post_event(customer, service.event(customer)))[0] == 202
    return customer


async def _one_child(service: Service) -> int:
    async def started() -> bool:
        return bool(_audit_children()) and await _metric(
            service, "billing_reconciler_last_pass_seconds") > 0
    assert await _eventually(started), "no background pass in an audit process"
    (child,) = _audit_children()
    assert child.pid is not None and child.pid != os.getpid()
    return child.pid


async def test_a_receipt_altered_in_the_file_is_found_by_the_audit_process_and_halts(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = await _charged(service, 3)
    await _charged(service, 1)
    await _one_child(service)
    # From here on, this process audits nobody: a finding is the child's.
    audited_here: list[str] = []

    def in_this_process(*args: Any, **kwargs: Any) -> Any:
        audited_here.append(str(args[2]))
        raise AssertionError("the background audit ran in the gateway's process")

    monkeypatch.setattr(reconciler_module, "audit_customer", in_this_process)
    receipt_id = _tamper_last_amount(service.runtime.settings.data_dir / LEDGER,
                                     victim.customer_id)

    assert await _eventually(lambda: _halted(service)), "the tamper was not found"
    async with service.session.get("/v1/admin/halt", headers=service.admin) as response:
        halt = await response.json()
    incident = halt["open"][0]
    assert incident["source"] == "reconciler"
    assert (incident["customer_id"], incident["receipt_id"]) == (victim.customer_id, receipt_id)
    assert audited_here == []
    assert await _metric(service, "billing_reconciler_integrity_failures_total") >= 1


async def test_an_audit_process_killed_is_started_again_and_still_finds_a_tamper(
    service: Service,
) -> None:
    victim = await _charged(service, 2)
    first = await _one_child(service)
    os.kill(first, signal.SIGKILL)

    async def restarted() -> bool:
        children = [p.pid for p in _audit_children() if p.is_alive()]
        restarts = await _metric(service, "billing_reconciler_audit_process_restarts_total")
        return restarts >= 1 and bool(children) and first not in children
    assert await _eventually(restarted), "the killed audit process was not replaced"
    assert not await _halted(service)  # a lost child is not a finding

    _tamper_last_amount(service.runtime.settings.data_dir / LEDGER, victim.customer_id)
    assert await _eventually(lambda: _halted(service)), "the new child did not find the tamper"


async def test_the_audit_process_yields_the_cpu_to_the_gateway(service: Service) -> None:
    """On a 2-core machine the child's hashing competed with the charges:
    it runs at a lower priority (a higher niceness) than the gateway."""
    await _charged(service, 1)
    child = await _one_child(service)

    gateway = os.getpriority(os.PRIO_PROCESS, os.getpid())
    assert os.getpriority(os.PRIO_PROCESS, child) == min(
        19, gateway + audit_process_nice
    )
