"""Nesting and escalation, introspection, structlog events and Prometheus counters."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from supervisor import (
    ChildSpec,
    DynamicSupervisor,
    Link,
    Supervisor,
    SupervisorFlags,
    SupervisorHandle,
)
from tests.supervisor.conftest import (
    Escalations,
    Journal,
    Worker,
    crash_and_wait,
    ref_of,
    replaced,
    wait_until,
    worker_spec,
)


def test_nested_escalation_reaches_the_root_callback(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    escalated = Escalations()

    def middle(link: Link) -> Supervisor:
        return Supervisor.start(
            name="middle",
            link=link,
            flags=SupervisorFlags(strategy="one_for_one", intensity=0, period_s=5.0),
            children=[worker_spec("leaf", journal)],
        )

    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(strategy="one_for_one", intensity=1, period_s=5.0),
        children=[
            worker_spec("store", journal),
            ChildSpec(id="middle", start=middle, type="supervisor"),
        ],
        on_escalation=escalated,
        registry=registry,
    )
    cleanup.append(root)
    first = root.child("middle")
    assert isinstance(first, Supervisor)

    # The leaf crashes; middle (intensity 0) escalates; root restarts middle once.
    ref_of(first, "leaf").tell("crash")
    wait_until(replaced(root, "middle", first))
    assert not first.is_running
    assert not escalated.reasons and root.is_running
    second = root.child("middle")
    assert isinstance(second, Supervisor) and second.is_running

    # Again: root's intensity (1) is now exceeded, and the root gives up.
    ref_of(second, "leaf").tell("crash")
    assert escalated.event.wait(5)
    assert escalated.reasons == ["reached_max_restart_intensity"]
    wait_until(lambda: not root.is_running)
    assert not second.is_running
    assert ("stop", "store") in journal.events


def test_dynamic_supervisor_under_a_root_escalates_and_is_restarted(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    spec = ChildSpec(
        id="accounts",
        start=lambda link: DynamicSupervisor.start(
            name="accounts",
            link=link,
            child_restart="transient",
            child_shutdown_timeout_ms=1000,
            intensity=0,
            period_s=1.0,
        ),
        restart="permanent",
        shutdown_timeout_ms=5000,
        type="supervisor",
    )
    root = Supervisor.start(
        name="billing",
        flags=SupervisorFlags(strategy="rest_for_one", intensity=3, period_s=5.0),
        children=[worker_spec("store", journal), spec],
        registry=registry,
    )
    cleanup.append(root)
    accounts = root.child("accounts")
    assert isinstance(accounts, DynamicSupervisor)
    ref = accounts.start_child("cust_1", lambda link: Worker.start(link, "cust_1", journal))
    ref.tell("crash")
    wait_until(replaced(root, "accounts", accounts))
    fresh = root.child("accounts")
    assert isinstance(fresh, DynamicSupervisor)
    assert fresh.count_children()["specs"] == 0  # children are started on demand again
    assert root.which_children()[1].restart_count == 1
    assert ref_of(root, "store").is_alive()  # rest_for_one: store comes before accounts


def test_tree_is_a_nested_structure(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    root = Supervisor.start(
        name="billing",
        flags=SupervisorFlags(),
        children=[
            worker_spec("store", journal),
            ChildSpec(
                id="accounts",
                type="supervisor",
                start=lambda link: DynamicSupervisor.start(name="accounts", link=link),
            ),
        ],
        registry=registry,
    )
    cleanup.append(root)
    accounts = root.child("accounts")
    assert isinstance(accounts, DynamicSupervisor)
    accounts.start_child("cust_1", lambda link: Worker.start(link, "cust_1", journal))
    crash_and_wait(root, "store")

    worker: dict[str, Any] = {"type": "worker", "state": "running", "children": []}
    assert root.tree() == {
        "id": "billing",
        "type": "supervisor",
        "kind": "static",
        "state": "running",
        "restart_count": 0,
        "children": [
            {"id": "store", "restart_count": 1, **worker},
            {
                "id": "accounts",
                "type": "supervisor",
                "state": "running",
                "restart_count": 0,
                "children": [{"id": "cust_1", "restart_count": 0, **worker}],
            },
        ],
    }
    root.stop(timeout_ms=5000)
    tree = root.tree()
    assert tree["state"] == "stopped"
    assert [c["state"] for c in tree["children"]] == ["stopped", "stopped"]


def test_events_are_logged_and_counted(journal: Journal, registry: CollectorRegistry) -> None:
    escalated = threading.Event()
    with capture_logs() as logs:
        root = Supervisor.start(
            name="root",
            flags=SupervisorFlags(intensity=1, period_s=30.0),
            children=[worker_spec("a", journal)],
            registry=registry,
            on_escalation=lambda reason: escalated.set(),
        )
        crash_and_wait(root, "a")
        ref_of(root, "a").tell("crash")
        assert escalated.wait(5)

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"supervisor": "root", "child": "a"})

    assert sample("supervisor_child_restarts_total") == 1.0
    assert sample("supervisor_escalations_total") == 1.0
    seen = [(e["event"], e.get("child_id")) for e in logs if e["event"].startswith("supervisor.")]
    assert seen == [
        ("supervisor.child_started", "a"),
        ("supervisor.child_terminated", "a"),
        ("supervisor.child_started", "a"),
        ("supervisor.child_restarted", "a"),
        ("supervisor.child_terminated", "a"),
        ("supervisor.reached_max_restart_intensity", "a"),
    ]
    crashes = [e for e in logs if e["event"] == "supervisor.child_terminated"]
    assert all(e["supervisor"] == "root" and "a crashed" in e["reason"] for e in crashes)
    restarted = next(e for e in logs if e["event"] == "supervisor.child_restarted")
    assert "a crashed" in restarted["reason"]


def test_metrics_default_to_the_global_registry(journal: Journal) -> None:
    from prometheus_client import REGISTRY

    labels = {"supervisor": "global_default", "child": "a"}
    before = REGISTRY.get_sample_value("supervisor_child_restarts_total", labels) or 0.0
    root = Supervisor.start(
        name="global_default", flags=SupervisorFlags(), children=[worker_spec("a", journal)]
    )
    try:
        crash_and_wait(root, "a")
        assert REGISTRY.get_sample_value("supervisor_child_restarts_total", labels) == before + 1
    finally:
        root.stop(timeout_ms=5000)


def test_exit_reason_set_by_the_actor_counts_as_abnormal(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    class Quitter(Worker):
        def on_receive(self, message: Any) -> Any:
            if message == "quit":
                self.exit("lost_connection")
                return None
            return super().on_receive(message)

    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(),
        registry=registry,
        children=[
            ChildSpec(
                id="q", restart="transient", start=lambda link: Quitter.start(link, "q", journal)
            )
        ],
    )
    cleanup.append(root)
    with capture_logs() as logs:
        old = ref_of(root, "q")
        old.tell("quit")
        wait_until(replaced(root, "q", old))
    assert {
        "event": "supervisor.child_terminated",
        "supervisor": "root",
        "child_id": "q",
        "reason": "lost_connection",
        "log_level": "warning",
    } in logs


def test_crash_in_on_start_is_reported_and_restarted(
    journal: Journal, registry: CollectorRegistry, cleanup: list[SupervisorHandle]
) -> None:
    attempts: list[int] = []

    class FlakyStart(Worker):
        def on_start(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("store unavailable")
            super().on_start()

    root = Supervisor.start(
        name="root",
        flags=SupervisorFlags(intensity=3),
        registry=registry,
        children=[ChildSpec(id="f", start=lambda link: FlakyStart.start(link, "f", journal))],
    )
    cleanup.append(root)
    journal.wait_for(1)
    assert journal.events == [("start", "f")]
    assert len(attempts) == 2
    wait_until(lambda: root.which_children()[0] == ("f", "worker", "running", 1))
