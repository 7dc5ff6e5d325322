"""DynamicSupervisor: start/terminate/lookup by id, isolation, counts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from supervisor import ChildStartError, DynamicSupervisor, Link, SupervisorError, SupervisorHandle
from tests.supervisor.conftest import Journal, Worker, wait_until


def factory(name: str, journal: Journal) -> Callable[[Link], Any]:
    return lambda link: Worker.start(link, name, journal)


def test_start_child_lookup_and_start_again_returns_the_running_one(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    assert accounts.lookup("cust_1") is None
    ref = accounts.start_child("cust_1", factory("cust_1", journal))
    assert accounts.lookup("cust_1") is ref
    assert accounts.start_child("cust_1", factory("other", journal)) is ref
    journal.wait_for(1)
    assert journal.events == [("start", "cust_1")]


def test_lookup_is_a_plain_read_that_works_while_the_supervisor_is_busy(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    ref = accounts.start_child("cust_1", factory("cust_1", journal))
    release = threading.Event()
    entered = threading.Event()

    def slow(link: Link) -> Any:
        entered.set()
        release.wait(5)
        return Worker.start(link, "slow", journal)

    starter = threading.Thread(target=accounts.start_child, args=("slow", slow))
    starter.start()
    try:
        assert entered.wait(5)  # the supervisor's thread is now blocked in a factory
        assert accounts.lookup("cust_1") is ref
        assert accounts.lookup("slow") is None
    finally:
        release.set()
        starter.join(5)


def test_crash_of_one_child_leaves_the_others_and_their_state(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    refs = {n: accounts.start_child(n, factory(n, journal)) for n in ("c1", "c2", "c3")}
    for value, ref in enumerate(refs.values(), start=10):
        ref.ask(("set", value), timeout=5)
    refs["c2"].tell("crash")
    wait_until(lambda: accounts.lookup("c2") not in (None, refs["c2"]))

    assert accounts.lookup("c1") is refs["c1"] and accounts.lookup("c3") is refs["c3"]
    assert refs["c1"].ask("get", timeout=5) == 10
    assert refs["c3"].ask("get", timeout=5) == 12
    new = accounts.lookup("c2")
    assert new is not None and new.ask("get", timeout=5) == 0  # a fresh incarnation
    assert journal.events.count(("start", "c2")) == 2
    assert ("stop", "c1") not in journal.events and ("stop", "c3") not in journal.events
    info = {i.id: i.restart_count for i in accounts.which_children()}
    assert info == {"c1": 0, "c2": 1, "c3": 0}


def test_terminate_child_is_a_normal_stop_and_transient_is_not_restarted(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    ref = accounts.start_child("c1", factory("c1", journal))
    accounts.start_child("c2", factory("c2", journal))
    assert accounts.terminate_child("c1", timeout_ms=2000)
    assert not ref.is_alive()
    assert accounts.lookup("c1") is None
    assert [i.id for i in accounts.which_children()] == ["c2"]
    assert accounts.terminate_child("c1", timeout_ms=2000) is False
    # Started again later (reactivation), it is a new incarnation.
    again = accounts.start_child("c1", factory("c1", journal))
    assert again is not ref and again.is_alive()


def test_child_exiting_normally_by_itself_is_forgotten(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    ref = accounts.start_child("c1", factory("c1", journal))
    ref.tell("exit_normal")
    wait_until(lambda: accounts.count_children()["specs"] == 0)
    assert journal.events == [("start", "c1"), ("stop", "c1")]


def test_count_children(accounts: DynamicSupervisor, journal: Journal) -> None:
    assert accounts.count_children() == {"specs": 0, "active": 0, "supervisors": 0, "workers": 0}
    for n in range(3):
        accounts.start_child(f"c{n}", factory(f"c{n}", journal))
    assert accounts.count_children() == {"specs": 3, "active": 3, "supervisors": 0, "workers": 3}


def test_failing_factory_raises_and_leaves_no_child(accounts: DynamicSupervisor) -> None:
    def broken(link: Link) -> Any:
        raise KeyError("no such customer")

    with pytest.raises(ChildStartError):
        accounts.start_child("ghost", broken)
    assert accounts.lookup("ghost") is None
    assert accounts.count_children()["specs"] == 0


def test_children_max_bounds_the_number_of_children(
    registry: CollectorRegistry, cleanup: list[SupervisorHandle], journal: Journal
) -> None:
    dyn = DynamicSupervisor.start(name="small", children_max=2, registry=registry)
    cleanup.append(dyn)
    dyn.start_child("a", factory("a", journal))
    dyn.start_child("b", factory("b", journal))
    with pytest.raises(SupervisorError, match="children_max"):
        dyn.start_child("c", factory("c", journal))


def test_start_child_from_the_supervisor_thread_is_refused_not_deadlocked(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    errors: list[BaseException] = []

    def nested(link: Link) -> Any:
        try:
            accounts.start_child("inner", factory("inner", journal))
        except SupervisorError as exc:
            errors.append(exc)
        return Worker.start(link, "outer", journal)

    accounts.start_child("outer", nested)
    assert len(errors) == 1 and "own thread" in str(errors[0])


def test_terminate_children_stops_many_at_once_and_forgets_them(
    accounts: DynamicSupervisor, journal: Journal
) -> None:
    refs = [accounts.start_child(f"c{n}", factory(f"c{n}", journal)) for n in range(5)]
    assert accounts.terminate_children(("c0", "c1", "c2", "c2", "nope"), timeout_ms=2000) == 3
    assert [ref.is_alive() for ref in refs] == [False, False, False, True, True]
    assert [i.id for i in accounts.which_children()] == ["c3", "c4"]
    assert accounts.count_children()["specs"] == 2
    assert accounts.terminate_children((), timeout_ms=2000) == 0
