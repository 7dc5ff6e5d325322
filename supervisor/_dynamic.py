"""DynamicSupervisor: many children of one kind, started and stopped on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from supervisor._core import Child, SupervisorCore
from supervisor._errors import SupervisorError, SupervisorSpecError
from supervisor._handle import SupervisorHandle, call_timeout_ms_default
from supervisor._launch import EscalationCallback, StartChildren, launch
from supervisor._spec import ChildSpec, StartFunc, validate_intensity, validate_name

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from supervisor._link import Link

__all__ = ["DynamicSupervisor"]

children_max_default = 100_000
start_timeout_ms_default = 30_000
# Metrics label for every dynamic child: per-customer ids would explode
# Prometheus cardinality; logs carry the real child id.
dynamic_child_label = "dynamic"


class _StartChild(NamedTuple):
    """Asked of a dynamic supervisor: start `child_id` unless it is running."""

    child_id: str
    """The new child's id."""
    start: StartFunc
    """Its factory, also used for every restart."""


class _TerminateChild(NamedTuple):
    """Asked of a dynamic supervisor: stop `child_id` for good (it is not restarted)."""

    child_id: str
    """The child to stop."""
    timeout_ms: int
    """How long to wait for it before abandoning it."""


class _TerminateChildren(NamedTuple):
    """Asked of a dynamic supervisor: stop these children for good, all at once."""

    child_ids: tuple[str, ...]
    """The children to stop (unknown ids are skipped)."""
    timeout_ms: int
    """How long to wait for all of them before abandoning those still running."""


class _DynamicSupervisorActor(SupervisorCore):
    _concurrent = True  # children are independent: stop them all at once

    def __init__(self, link: Link, *, template: ChildSpec, children_max: int, **core: Any):
        super().__init__(link, **core)
        self._template = template
        self._children_max = children_max

    def _handle_call(self, message: Any) -> Any:
        if isinstance(message, StartChildren):
            return None
        if isinstance(message, _StartChild):
            return self._start_dynamic(message.child_id, message.start)
        if isinstance(message, _TerminateChild):
            return self._terminate(message.child_id, message.timeout_ms)
        if isinstance(message, _TerminateChildren):
            return self._terminate_many(message.child_ids, message.timeout_ms)
        return super()._handle_call(message)

    def _start_dynamic(self, child_id: str, start: StartFunc) -> pykka.ActorRef[Any]:
        child = self._children.get(child_id)
        if child is not None and child.state == "running" and child.link is not None:
            report = child.link.exit_report
            if report is None:
                return self._ref_of(child)
            # It has exited but its report is still queued: handle it now so the
            # caller gets the next incarnation, not a dead ref.
            self._child_exited(report)
            child = self._children.get(child_id)
            if child is not None and child.state == "running":
                return self._ref_of(child)
        if self._stopping:
            raise SupervisorError(f"supervisor {self._name!r} is stopping")
        if child is None and len(self._children) >= self._children_max:
            raise SupervisorError(
                f"supervisor {self._name!r} has children_max={self._children_max} children"
            )
        spec = ChildSpec(
            child_id,
            start,
            self._template.restart,
            self._template.shutdown_timeout_ms,
            self._template.type,
        )
        spec.validate(self._name)
        # A child waiting to be restarted is replaced: its pending retry becomes stale.
        fresh = Child(spec, restart_count=0 if child is None else child.restart_count)
        self._children[child_id] = fresh
        try:
            self._start_child(fresh)
        except Exception:
            self._remove(fresh)
            raise
        return self._ref_of(fresh)

    @staticmethod
    def _ref_of(child: Child) -> pykka.ActorRef[Any]:
        if child.ref is None:
            raise SupervisorError(f"child {child.spec.id!r} is not running")
        return child.ref

    def _terminate(self, child_id: str, timeout_ms: int) -> bool:
        child = self._children.get(child_id)
        if child is None:
            return False
        was_running = child.state == "running"
        self._stop_children([child], concurrent=False, timeout_ms=timeout_ms)
        self._remove(child)
        return was_running

    def _terminate_many(self, child_ids: tuple[str, ...], timeout_ms: int) -> int:
        known = self._children
        children = [known[cid] for cid in dict.fromkeys(child_ids) if cid in known]
        running = sum(1 for child in children if child.state == "running")
        self._stop_children(children, concurrent=True, timeout_ms=timeout_ms)
        for child in children:
            self._remove(child)
        return running

    def _restart(self, failed: Child, reason: str) -> None:
        self._restart_one(failed, reason, failed.spec.id)

    def _not_restarted(self, child: Child) -> None:
        self._remove(child)  # OTP: a dynamic child that stays down is forgotten

    def _metric_child(self, child: Child) -> str:
        return dynamic_child_label


class DynamicSupervisor(SupervisorHandle):
    """Handle of a supervisor of many children of one kind (OTP simple_one_for_one).

    Children are independent (one_for_one): a crash of one never touches the others.
    `lookup` is a dict read, cheap from any thread.
    """

    _kind = "dynamic"

    @classmethod
    def start(
        cls,
        *,
        name: str,
        link: Link | None = None,
        child_restart: str = "transient",
        child_shutdown_timeout_ms: int = 5000,
        child_type: str = "worker",
        intensity: int = 1,
        period_s: float = 5.0,
        children_max: int = children_max_default,
        on_escalation: EscalationCallback | None = None,
        registry: CollectorRegistry | None = None,
        start_timeout_ms: int = start_timeout_ms_default,
    ) -> DynamicSupervisor:
        """Validate the child template and flags, start with no children.

        Raises `SupervisorSpecError` naming the bad parameter.
        """
        validate_name("supervisor_name", name)
        template = ChildSpec(
            "template", lambda link: None, child_restart, child_shutdown_timeout_ms, child_type
        )
        template.validate(name)
        validate_intensity(name, intensity, period_s)
        if not isinstance(children_max, int) or children_max < 1:
            raise SupervisorSpecError(
                "invalid_children_max",
                f"{children_max!r} (expected an int >= 1)",
                supervisor=name,
                value=children_max,
            )
        return launch(
            _DynamicSupervisorActor,
            cls,
            name=name,
            link=link,
            on_escalation=on_escalation,
            registry=registry,
            start_timeout_ms=start_timeout_ms,
            template=template,
            children_max=children_max,
            intensity=intensity,
            period_s=period_s,
        )

    def lookup(self, child_id: str) -> pykka.ActorRef[Any] | None:
        """The running child's actor ref, or None. No actor round trip."""
        view = self._published.children.get(child_id)
        if view is None or view.ref is None or not view.ref.is_alive():
            return None
        return view.ref

    def start_child(
        self, child_id: str, start: StartFunc, *, timeout_ms: int = call_timeout_ms_default
    ) -> pykka.ActorRef[Any]:
        """Start `child_id` with factory `start` (reused for restarts); if it is
        already running return its ref. Raises `ChildStartError` if the factory fails."""
        found = self.lookup(child_id)
        if found is not None:
            return found
        ref: pykka.ActorRef[Any] = self._call(_StartChild(child_id, start), timeout_ms)
        return ref

    def terminate_child(
        self,
        child_id: str,
        timeout_ms: int = 5000,
        *,
        call_timeout_ms: int = call_timeout_ms_default,
    ) -> bool:
        """Stop `child_id` for good (passivation): it is not restarted, whatever its
        restart type. Waits up to `timeout_ms` for it, then abandons it. Returns
        whether it was running. Do not call it from the child itself: an actor
        passivates itself with `self.stop()` (a normal exit)."""
        stopped: bool = self._call(
            _TerminateChild(child_id, timeout_ms), timeout_ms + call_timeout_ms
        )
        return stopped

    def terminate_children(
        self,
        child_ids: tuple[str, ...],
        timeout_ms: int = 5000,
        *,
        call_timeout_ms: int = call_timeout_ms_default,
    ) -> int:
        """`terminate_child` for many at once: all are asked to stop, then
        waited for together up to `timeout_ms`. One at a time, passivating
        under load stopped ~50 children a second (a round trip through two
        busy threads each), fewer than were started. Returns how many were
        running."""
        stopped: int = self._call(
            _TerminateChildren(tuple(child_ids), timeout_ms), timeout_ms + call_timeout_ms
        )
        return stopped

    def count_children(self) -> dict[str, int]:
        """OTP count_children: specs, active (running), supervisors, workers."""
        views = list(self._published.children.copy().values())
        supervisors = sum(1 for view in views if view.info.type == "supervisor")
        return {
            "specs": len(views),
            "active": sum(1 for view in views if view.info.state == "running"),
            "supervisors": supervisors,
            "workers": len(views) - supervisors,
        }
