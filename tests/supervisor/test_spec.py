"""Bad specs and flags are rejected at start with a precise error."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from supervisor import (
    ChildSpec,
    ChildStartError,
    DynamicSupervisor,
    Link,
    Supervisor,
    SupervisorFlags,
    SupervisorSpecError,
)
from tests.supervisor.conftest import Journal, new_threads, wait_until, worker_spec


def noop(link: Link) -> None:
    return None


def ok(child_id: str = "a") -> ChildSpec:
    return ChildSpec(id=child_id, start=lambda link: None)


@pytest.mark.parametrize(
    ("flags", "children", "reason", "child_id", "value"),
    [
        (SupervisorFlags(), [ok("a"), ok("b"), ok("a")], "duplicate_child_id", "a", "a"),
        (
            SupervisorFlags(),
            [ChildSpec(id="a", start=noop, restart="forever")],
            "invalid_restart_type",
            "a",
            "forever",
        ),
        (
            SupervisorFlags(),
            [ChildSpec(id="a", start=noop, type="daemon")],
            "invalid_child_type",
            "a",
            "daemon",
        ),
        (
            SupervisorFlags(),
            [ChildSpec(id="a", start=noop, shutdown_timeout_ms=-1)],
            "invalid_shutdown_timeout",
            "a",
            -1,
        ),
        (
            SupervisorFlags(),
            [ChildSpec(id="a", start=noop, shutdown_timeout_ms=1.5)],  # type: ignore[arg-type]
            "invalid_shutdown_timeout",
            "a",
            1.5,
        ),
        (
            SupervisorFlags(),
            [ChildSpec(id="a", start="not callable")],  # type: ignore[arg-type]
            "invalid_start",
            "a",
            "not callable",
        ),
        (SupervisorFlags(), [ChildSpec(id="", start=noop)], "invalid_child_id", None, ""),
        (SupervisorFlags(), ["not a spec"], "invalid_child_spec", None, "not a spec"),
        (SupervisorFlags(strategy="one_for_some"), [], "invalid_strategy", None, "one_for_some"),
        (SupervisorFlags(intensity=-1), [], "invalid_intensity", None, -1),
        (SupervisorFlags(intensity=True), [], "invalid_intensity", None, True),
        (SupervisorFlags(period_s=0), [], "invalid_period", None, 0),
        (SupervisorFlags(period_s=float("nan")), [], "invalid_period", None, None),
    ],
)
def test_bad_spec_is_rejected_at_start_with_a_precise_error(
    flags: SupervisorFlags, children: list[Any], reason: str, child_id: str | None, value: object
) -> None:
    threads_before = threading.active_count()
    with pytest.raises(SupervisorSpecError) as caught:
        Supervisor.start(name="billing", flags=flags, children=children)
    error = caught.value
    assert error.reason == reason
    assert error.supervisor == "billing"
    assert error.child_id == child_id
    if value is not None:
        assert error.value == value
        assert repr(value) in str(error)
    assert "billing" in str(error) and reason in str(error)
    assert threading.active_count() == threads_before  # rejected before any thread starts


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"child_restart": "sometimes"}, "invalid_restart_type"),
        ({"child_type": "process"}, "invalid_child_type"),
        ({"child_shutdown_timeout_ms": -5}, "invalid_shutdown_timeout"),
        ({"intensity": -1}, "invalid_intensity"),
        ({"period_s": -1.0}, "invalid_period"),
        ({"children_max": 0}, "invalid_children_max"),
        ({"name": ""}, "invalid_supervisor_name"),
    ],
)
def test_bad_dynamic_supervisor_parameters_are_rejected(
    kwargs: dict[str, Any], reason: str
) -> None:
    arguments: dict[str, Any] = {"name": "accounts", **kwargs}
    with pytest.raises(SupervisorSpecError) as caught:
        DynamicSupervisor.start(**arguments)
    assert caught.value.reason == reason


def test_on_escalation_is_only_for_a_root() -> None:
    link = Link("sub", lambda report: None)
    with pytest.raises(SupervisorSpecError) as caught:
        Supervisor.start(
            name="sub",
            flags=SupervisorFlags(),
            children=[],
            link=link,
            on_escalation=lambda reason: None,
        )
    assert caught.value.reason == "invalid_on_escalation"


def test_failing_child_factory_fails_start_and_stops_started_children(journal: Journal) -> None:
    threads_before = set(threading.enumerate())

    def broken(link: object) -> object:
        raise OSError("disk full")

    with pytest.raises(ChildStartError) as caught:
        Supervisor.start(
            name="billing",
            flags=SupervisorFlags(),
            children=[
                worker_spec("a", journal),
                worker_spec("b", journal),
                ChildSpec(id="c", start=broken),
            ],
        )
    assert caught.value.child_id == "c"
    assert isinstance(caught.value.cause, OSError)
    events = journal.wait_for(4)
    assert events[2:] == [("stop", "b"), ("stop", "a")]
    wait_until(lambda: not new_threads(threads_before))


def test_factory_must_return_a_supervised_actor() -> None:
    import pykka

    class Plain(pykka.ThreadingActor):
        pass

    with pytest.raises(ChildStartError) as caught:
        Supervisor.start(
            name="billing",
            flags=SupervisorFlags(),
            children=[ChildSpec(id="plain", start=lambda link: Plain.start())],
        )
    assert isinstance(caught.value.cause, TypeError)
    assert "SupervisedActor" in str(caught.value)
