"""Readiness on the hot path reads flags only; the store is probed elsewhere."""

from __future__ import annotations

from gateway.services import Readiness


def test_ready_never_probes_the_store_on_the_request_path() -> None:
    probes: list[str] = []

    def store_writable() -> bool:
        probes.append("store")  # in production this waits behind the writer's lock
        return True

    readiness = Readiness(tree_up=lambda: True, store_writable=store_writable)
    readiness.refresh()
    probes.clear()
    for _ in range(1_000):
        assert readiness.ready()
    assert probes == []


def test_halt_and_drain_override_a_healthy_probe() -> None:
    readiness = Readiness(tree_up=lambda: True, store_writable=lambda: True)
    readiness.refresh()
    readiness.draining = True
    assert not readiness.ready()
    readiness.draining = False
    readiness.halted_reason = "integrity failure: test"
    assert not readiness.ready()


def test_an_unwritable_store_makes_it_unready_after_the_next_probe() -> None:
    writable = [True]
    readiness = Readiness(tree_up=lambda: True, store_writable=lambda: writable[0])
    assert readiness.refresh()
    writable[0] = False
    assert readiness.ready()  # until the background probe runs
    assert not readiness.refresh()
    assert not readiness.ready()
