"""Ordered shutdown, abandoning children that ignore stop, and no leftover threads."""

from __future__ import annotations

import functools
import threading

from structlog.testing import capture_logs

from supervisor import ChildSpec, DynamicSupervisor, Supervisor, SupervisorFlags
from tests.supervisor.conftest import (
    Journal,
    Worker,
    new_threads,
    ref_of,
    terminated_reasons,
    wait_until,
    worker_spec,
)


def test_children_start_in_order_and_stop_in_reverse(journal: Journal) -> None:
    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(),
        children=[worker_spec(n, journal) for n in ("a", "b", "c")],
    )
    journal.wait_for(3)
    assert root.stop(timeout_ms=5000)
    assert journal.events == [
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("stop", "c"),
        ("stop", "b"),
        ("stop", "a"),
    ]
    assert not root.is_running
    assert [i.state for i in root.which_children()] == ["stopped"] * 3
    assert root.stop(timeout_ms=1000)  # idempotent


def test_child_blocking_in_on_stop_is_abandoned_and_shutdown_finishes(journal: Journal) -> None:
    release = threading.Event()
    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(),
        children=[
            worker_spec("a", journal),
            worker_spec("stuck", journal, shutdown_timeout_ms=100, stop_blocker=release),
            worker_spec("c", journal),
        ],
    )
    try:
        journal.wait_for(3)
        with capture_logs() as logs:
            assert root.stop(timeout_ms=5000)
        assert journal.events[3:] == [("stop", "c"), ("stop", "stuck"), ("stop", "a")]
        reasons = dict(terminated_reasons(logs))
        assert reasons == {"c": "shutdown", "stuck": "shutdown_timeout", "a": "shutdown"}
        states = {i.id: i.state for i in root.which_children()}
        assert states == {"a": "stopped", "stuck": "dead", "c": "stopped"}
    finally:
        release.set()


def test_child_blocking_in_a_message_is_abandoned(journal: Journal) -> None:
    release = threading.Event()
    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(),
        children=[worker_spec("busy", journal, shutdown_timeout_ms=100)],
    )
    try:
        ref_of(root, "busy").tell(("block", release))
        with capture_logs() as logs:
            assert root.stop(timeout_ms=5000)
        assert terminated_reasons(logs) == [("busy", "shutdown_timeout")]
    finally:
        release.set()


def test_no_thread_is_left_after_stopping_a_tree(journal: Journal) -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    accounts_spec = ChildSpec(
        id="accounts",
        start=lambda link: DynamicSupervisor.start(name="accounts", link=link),
        type="supervisor",
    )
    sub_spec = ChildSpec(
        id="sub",
        start=lambda link: Supervisor.start(
            name="sub",
            flags=SupervisorFlags(),
            link=link,
            children=[worker_spec("x", journal), worker_spec("y", journal)],
        ),
        type="supervisor",
    )
    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(),
        children=[
            worker_spec("a", journal),
            sub_spec,
            accounts_spec,
            worker_spec("stuck", journal, shutdown_timeout_ms=50, stop_blocker=release),
        ],
    )
    accounts = root.child("accounts")
    assert isinstance(accounts, DynamicSupervisor)
    for n in range(20):
        name = f"cust_{n}"
        accounts.start_child(name, functools.partial(Worker.start, name=name, journal=journal))
    # root, sub, accounts, a, x, y, stuck and 20 accounts
    assert len(new_threads(before)) == 3 + 4 + 20

    assert root.stop(timeout_ms=5000)
    # Only the abandoned child may still run (a thread cannot be killed) ...
    wait_until(lambda: new_threads(before) == {journal.threads["stuck"]})
    # ... and it ends once whatever blocks it lets go.
    release.set()
    wait_until(lambda: not new_threads(before))
