"""Restart strategies, restart types and restart intensity of a static supervisor."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from supervisor import Supervisor, SupervisorFlags, SupervisorHandle
from tests.supervisor.conftest import (
    Escalations,
    Journal,
    crash_and_wait,
    ref_of,
    wait_until,
    worker_spec,
)


def start_abc(
    strategy: str,
    journal: Journal,
    registry: CollectorRegistry,
    cleanup: list[SupervisorHandle],
    *,
    intensity: int = 5,
    restart: str = "permanent",
) -> Supervisor:
    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(strategy=strategy, intensity=intensity, period_s=5.0),
        children=[worker_spec(n, journal, restart=restart) for n in ("a", "b", "c")],
        registry=registry,
    )
    cleanup.append(root)
    journal.wait_for(3)
    return root


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", [("crash", "b"), ("start", "b")]),
        (
            "one_for_all",
            [
                ("crash", "b"),
                ("stop", "c"),
                ("stop", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
            ],
        ),
        ("rest_for_one", [("crash", "b"), ("stop", "c"), ("start", "b"), ("start", "c")]),
    ],
)
def test_strategy_restarts_exactly_the_right_children_in_order(
    strategy: str,
    expected: list[tuple[str, str]],
    journal: Journal,
    registry: CollectorRegistry,
    cleanup: list[SupervisorHandle],
) -> None:
    root = start_abc(strategy, journal, registry, cleanup)
    assert journal.events == [("start", "a"), ("start", "b"), ("start", "c")]
    before = {n: ref_of(root, n) for n in "abc"}
    journal.clear()

    before["b"].tell("crash")
    journal.wait_for(len(expected))
    wait_until(lambda: all(i.state == "running" for i in root.which_children()))

    assert journal.events == expected
    restarted = {n for kind, n in expected if kind == "start"}
    for name in "abc":
        assert (ref_of(root, name) is not before[name]) == (name in restarted), name
    counts = {i.id: i.restart_count for i in root.which_children()}
    assert counts == {n: int(n in restarted) for n in "abc"}


def test_transient_child_is_not_restarted_after_normal_exit_but_is_after_crash(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    root = start_abc("one_for_one", journal, registry, cleanup, restart="transient")
    crash_and_wait(root, "a")

    ref_of(root, "b").tell("exit_normal")
    wait_until(lambda: root.which_children()[1].state == "stopped")
    assert root.child("b") is None
    # Give a wrongful restart the chance to happen: the supervisor handles messages in
    # order, so once it has answered for a later crash of "c" it has dealt with "b".
    crash_and_wait(root, "c")
    assert root.child("b") is None
    assert [e for e in journal.events if e == ("start", "b")] == [("start", "b")]


def test_temporary_child_is_never_restarted(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    root = start_abc("one_for_one", journal, registry, cleanup, restart="temporary")
    ref_of(root, "a").tell("crash")
    ref_of(root, "b").tell("exit_normal")
    wait_until(lambda: [i.id for i in root.which_children()] == ["c"])
    assert journal.events.count(("start", "a")) == 1
    assert journal.events.count(("start", "b")) == 1
    assert root.is_running


def test_intensity_restarts_n_crashes_and_escalates_on_the_next(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    escalated = Escalations()
    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(strategy="one_for_one", intensity=3, period_s=30.0),
        children=[worker_spec("a", journal), worker_spec("b", journal)],
        on_escalation=escalated,
        registry=registry,
    )
    cleanup.append(root)
    for _ in range(3):
        crash_and_wait(root, "a")
    assert root.is_running and not escalated.reasons
    assert root.which_children()[0].restart_count == 3

    ref_of(root, "a").tell("crash")
    assert escalated.event.wait(5)
    assert escalated.reasons == ["reached_max_restart_intensity"]
    wait_until(lambda: not root.is_running)
    # Children stopped in reverse order: b (still running) was stopped by the supervisor.
    assert journal.events[-2:] == [("crash", "a"), ("stop", "b")]
    assert root.child("a") is None and root.child("b") is None


def test_restarts_older_than_period_do_not_count(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    escalated = threading.Event()
    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(strategy="one_for_one", intensity=1, period_s=0.2),
        children=[worker_spec("a", journal)],
        on_escalation=lambda reason: escalated.set(),
        registry=registry,
    )
    cleanup.append(root)
    for _ in range(3):
        crash_and_wait(root, "a")
        # Each crash lands in a new period: one restart per period is allowed.
        assert not escalated.wait(0.25)
    assert root.is_running


def test_child_whose_start_fails_on_restart_is_retried_then_escalates(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    from supervisor import ChildSpec, Link
    from tests.supervisor.conftest import Worker

    attempts: list[int] = []
    escalated = threading.Event()

    def start(link: Link) -> object:
        attempts.append(1)
        if len(attempts) > 1:
            raise OSError("cannot open store")
        return Worker.start(link, "a", journal)

    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(intensity=2, period_s=30.0),
        children=[ChildSpec(id="a", start=start)],
        on_escalation=lambda reason: escalated.set(),
        registry=registry,
    )
    cleanup.append(root)
    ref_of(root, "a").tell("crash")
    assert escalated.wait(5)
    # 1 initial start + 2 restarts allowed by intensity; the 3rd restart escalates.
    assert len(attempts) == 3


def test_root_can_be_stopped_from_its_escalation_callback(
    journal: Journal, registry: CollectorRegistry
) -> None:
    results: list[bool] = []
    called = threading.Event()
    holder: list[Supervisor] = []

    def on_escalation(reason: str) -> None:
        # Runs on the root's own thread: stop must neither wait for itself nor raise.
        results.append(holder[0].stop(timeout_ms=5000))
        called.set()

    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(intensity=0),
        children=[worker_spec("a", journal)],
        on_escalation=on_escalation,
        registry=registry,
    )
    holder.append(root)
    ref_of(root, "a").tell("crash")
    assert called.wait(2)  # well under the 5 s a self-wait would take
    assert results == [False]
    assert root.stop(timeout_ms=5000)
    assert not root.is_running
