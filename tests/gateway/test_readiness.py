"""Readiness on the hot path reads flags only; the store is probed elsewhere."""

from __future__ import annotations

from gateway.services import Readiness
from ledger import HaltIncident, StoreUnavailable
from ledger.memory_halts import MemoryHalts


def test_ready_never_probes_the_store_on_the_request_path() -> None:
    probes: list[str] = []

    def store_writable() -> bool:
        probes.append("store")  # in production this waits behind the writer's lock
        return True

    readiness = Readiness(tree_up=True, store_writable=store_writable)
    readiness.refresh()
    probes.clear()
    for _ in range(1_000):
        assert readiness.ready()
    assert probes == []


def test_halt_and_drain_override_a_healthy_probe() -> None:
    readiness = Readiness(tree_up=True, store_writable=lambda: True)
    readiness.refresh()
    readiness.draining = True
    assert not readiness.ready()
    readiness.draining = False
    readiness.halted_reason = "supervision tree stopped: test"
    assert not readiness.ready()


def test_an_unwritable_store_makes_it_unready_after_the_next_probe() -> None:
    writable = [True]
    readiness = Readiness(tree_up=True, store_writable=lambda: writable[0])
    assert readiness.refresh()
    writable[0] = False
    assert readiness.ready()  # until the background probe runs
    assert not readiness.refresh()
    assert not readiness.ready()


def test_an_open_incident_in_the_store_halts_and_its_clearing_resumes() -> None:
    halts = MemoryHalts()
    readiness = Readiness(
        tree_up=True, store_writable=lambda: True, open_halts=halts.open_halts
    )
    assert readiness.refresh() and readiness.ready()
    halts.record_halt(
        HaltIncident("inc_1", "2025-01-01T00:00:00Z", "chain_broken", "cus_a rct_1", "reconciler",
                     customer_id="cus_a", receipt_id="rct_1")
    )
    readiness.refresh()
    assert not readiness.ready()
    assert readiness.public_reason() == "integrity halt: incident inc_1"
    halts.clear_halt("inc_1", "fixed", "2025-01-01T01:00:00Z")
    readiness.refresh()
    assert readiness.ready()


def test_a_store_that_cannot_say_whether_it_is_halted_is_not_ready() -> None:
    def unreadable() -> list[HaltIncident]:
        raise StoreUnavailable("down")

    readiness = Readiness(tree_up=True, store_writable=lambda: True, open_halts=unreadable)
    assert not readiness.refresh()
    assert not readiness.ready()


def test_an_escalation_reason_is_not_shown_in_public() -> None:
    readiness = Readiness(tree_up=True, store_writable=lambda: True)
    readiness.refresh()
    readiness.halted_reason = "supervision tree stopped: account cus_secret crashed"
    assert "cus_secret" not in readiness.public_reason()
