"""Shared test doubles: a recording worker and wait-with-timeout helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pykka
import pytest
from prometheus_client import CollectorRegistry

from supervisor import ChildSpec, DynamicSupervisor, Link, SupervisedActor, SupervisorHandle

WAIT_S = 5.0


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Poll `predicate` until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.002)


def new_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    """Threads alive now that were not alive in `before`."""
    return {t for t in threading.enumerate() if t not in before and t.is_alive()}


class Journal:
    """Thread-safe record of (event, name) pairs, in the order they happened."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str]] = []
        self.threads: dict[str, threading.Thread] = {}
        """The thread of the latest incarnation of each worker, by name."""
        self._cond = threading.Condition()

    def add(self, event: str, name: str) -> None:
        with self._cond:
            self._events.append((event, name))
            self._cond.notify_all()

    @property
    def events(self) -> list[tuple[str, str]]:
        with self._cond:
            return list(self._events)

    def clear(self) -> None:
        with self._cond:
            self._events.clear()

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[tuple[str, str]]:
        """Wait until at least `count` events are recorded; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._events) >= count, timeout_s):
                pytest.fail(f"expected {count} events, got {self._events}")
            return list(self._events)


class Worker(SupervisedActor):
    """Records start/stop/crash; `tell("crash")` raises, ("block", event) blocks."""

    def __init__(
        self,
        link: Link,
        name: str,
        journal: Journal,
        stop_blocker: threading.Event | None = None,
    ) -> None:
        super().__init__(link)
        self.name = name
        self.journal = journal
        self.stop_blocker = stop_blocker
        self.value = 0

    def on_start(self) -> None:
        super().on_start()
        self.journal.threads[self.name] = threading.current_thread()
        self.journal.add("start", self.name)

    def on_stop(self) -> None:
        self.journal.add("stop", self.name)
        if self.stop_blocker is not None:
            self.stop_blocker.wait(WAIT_S * 2)
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self.journal.add("crash", self.name)
        super().on_failure(*exc_info)

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError(f"{self.name} crashed")
        if message == "exit_normal":
            self.stop()
            return None
        if message == "get":
            return self.value
        if isinstance(message, tuple) and message[0] == "set":
            self.value = message[1]
            return None
        if isinstance(message, tuple) and message[0] == "block":
            message[1].wait(WAIT_S * 2)
            return None
        return super().on_receive(message)


def worker_spec(
    name: str,
    journal: Journal,
    *,
    restart: str = "permanent",
    shutdown_timeout_ms: int = 1000,
    stop_blocker: threading.Event | None = None,
) -> ChildSpec:
    return ChildSpec(
        id=name,
        start=lambda link: Worker.start(link, name, journal, stop_blocker),
        restart=restart,
        shutdown_timeout_ms=shutdown_timeout_ms,
        type="worker",
    )


def ref_of(handle: SupervisorHandle, child_id: str) -> pykka.ActorRef[Any]:
    child = handle.child(child_id)
    assert isinstance(child, pykka.ActorRef), child
    return child


def replaced(handle: SupervisorHandle, child_id: str, old: object) -> Callable[[], bool]:
    """Predicate: the child runs again, as a new incarnation."""

    def check() -> bool:
        child = handle.child(child_id)
        return (
            child is not None
            and child is not old
            and (not isinstance(child, pykka.ActorRef) or child.is_alive())
        )

    return check


def crash_and_wait(handle: SupervisorHandle, child_id: str) -> None:
    """Crash a worker child and wait until its supervisor runs a new incarnation."""
    old = ref_of(handle, child_id)
    old.tell("crash")
    wait_until(replaced(handle, child_id, old))


def terminated_reasons(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(child_id, reason) of every `supervisor.child_terminated` event, in order."""
    return [
        (e["child_id"], e["reason"]) for e in logs if e["event"] == "supervisor.child_terminated"
    ]


class Escalations:
    """An `on_escalation` callback that records reasons and can be waited on."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.event.set()


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def cleanup() -> Iterator[list[SupervisorHandle]]:
    """Supervisors to stop after the test, even when it fails."""
    handles: list[SupervisorHandle] = []
    yield handles
    for handle in reversed(handles):
        handle.stop(timeout_ms=5000)


@pytest.fixture
def accounts(registry: CollectorRegistry, cleanup: list[SupervisorHandle]) -> DynamicSupervisor:
    dyn = DynamicSupervisor.start(
        name="accounts",
        child_restart="transient",
        child_shutdown_timeout_ms=1000,
        intensity=10,
        period_s=5.0,
        registry=registry,
    )
    cleanup.append(dyn)
    return dyn
