"""The supervisor actor's common core: start/stop children, intensity, escalation."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka
import structlog

from supervisor._actor import SupervisedActor
from supervisor._errors import ChildStartError, present
from supervisor._handle import ChildView, Published, SupervisorHandle
from supervisor._link import ChildExited, Link
from supervisor._spec import ChildInfo, ChildSpec, is_normal_exit

if TYPE_CHECKING:
    from types import TracebackType

    from prometheus_client import CollectorRegistry

    from supervisor._metrics import Metrics

__all__ = ["ESCALATION_REASON", "Child", "SupervisorCore"]

ESCALATION_REASON = "reached_max_restart_intensity"

_log = structlog.get_logger("supervisor")


class _RetryStart(NamedTuple):
    """Told by a supervisor to itself when restarting a child failed in its factory."""

    child_id: str
    """The child that failed to start."""
    link: Link
    """The link of the failed attempt: stale if the child has been started since."""


@dataclass(slots=True, eq=False)
class Child:
    """A supervisor's own record of one child (mutated on the supervisor thread only)."""

    spec: ChildSpec
    link: Link | None = None
    ref: pykka.ActorRef[Any] | None = None
    obj: object | None = None
    state: str = "stopped"
    restart_count: int = 0


def actor_ref_of(obj: object) -> pykka.ActorRef[Any]:
    """The actor ref behind what a start factory returned; TypeError if unsupervisable."""
    if isinstance(obj, SupervisorHandle):
        return obj.actor_ref
    if not isinstance(obj, pykka.ActorRef):
        raise TypeError(f"start factory returned {obj!r}, not an ActorRef or supervisor handle")
    if not issubclass(obj.actor_class, SupervisedActor):
        obj.stop(block=False)  # it would never report its exit: do not leave it running
        raise TypeError(f"start factory returned {obj!r}, which is not a SupervisedActor")
    return obj


class SupervisorCore(SupervisedActor):
    """What both supervisor kinds share. Runs on its own pykka thread; every state
    change happens there, serialized, and is published for handles to read."""

    def __init__(
        self,
        link: Link,
        *,
        name: str,
        intensity: int,
        period_s: float,
        metrics: Metrics,
        registry: CollectorRegistry | None,
        published: Published,
    ) -> None:
        super().__init__(link)
        self._name = name
        self._intensity = intensity
        self._period_s = period_s
        self._metrics = metrics
        self._registry = registry
        self._published = published
        self._children: dict[str, Child] = {}
        # Only the last intensity+1 restart times matter: bounded by construction.
        self._restart_times: deque[float] = deque(maxlen=intensity + 1)
        self._stopping = False

    # -- messages ---------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildExited):
            self._child_exited(message)
            return None
        if isinstance(message, _RetryStart):
            child = self._children.get(message.child_id)
            if (
                not self._stopping
                and child is not None
                and child.link is message.link
                and child.state == "restarting"
            ):
                self._after_exit(child, "start_failed")
            return None
        return self._handle_call(message)

    def _handle_call(self, message: Any) -> Any:
        return super().on_receive(message)

    def on_stop(self) -> None:
        self._shutdown()
        super().on_stop()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A supervisor that crashes takes its children down with it, as in OTP.
        self._shutdown()
        super().on_failure(exception_type, exception_value, traceback)

    # -- exits and restarts -------------------------------------------------------

    def _child_exited(self, report: ChildExited) -> None:
        child = self._children.get(report.child_id)
        if (
            self._stopping
            or child is None
            or child.link is not report.link
            or child.state != "running"
        ):
            return  # stale: an earlier incarnation, or one we stopped ourselves
        self._set_state(child, "stopped")
        self._log_terminated(child, report.reason)
        self._after_exit(child, report.reason)

    def _after_exit(self, child: Child, reason: str) -> None:
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and is_normal_exit(reason)):
            self._not_restarted(child)
            return
        now = time.monotonic()
        self._restart_times.append(now)
        window_start = now - self._period_s
        if len(self._restart_times) > self._intensity and self._restart_times[0] > window_start:
            self._escalate(child, reason)
            return
        self._restart(child, reason)

    def _not_restarted(self, child: Child) -> None:
        """A child exited for good (temporary, or transient after a normal exit)."""
        if child.spec.restart == "temporary":
            self._remove(child)

    def _restart(self, failed: Child, reason: str) -> None:
        raise NotImplementedError

    def _restart_one(self, child: Child, reason: str, cause_child_id: str) -> bool:
        """Start a new incarnation; on failure schedule a retry (which counts as a restart)."""
        child.restart_count += 1
        self._metrics.restarts.labels(self._name, self._metric_child(child)).inc()
        try:
            self._start_child(child)
        except ChildStartError as exc:
            self._set_state(child, "restarting")
            _log.error(
                "supervisor.child_start_failed",
                supervisor=self._name,
                child_id=child.spec.id,
                reason=repr(exc.cause),
            )
            link = present(child.link, "a start attempt always creates a link")
            self.actor_ref.tell(_RetryStart(child.spec.id, link))
            return False
        _log.info(
            "supervisor.child_restarted",
            supervisor=self._name,
            child_id=child.spec.id,
            reason=reason,
            cause_child_id=cause_child_id,
            restart_count=child.restart_count,
        )
        return True

    def _metric_child(self, child: Child) -> str:
        return child.spec.id

    def _escalate(self, child: Child, reason: str) -> None:
        _log.error(
            "supervisor.reached_max_restart_intensity",
            supervisor=self._name,
            child_id=child.spec.id,
            reason=reason,
            intensity=self._intensity,
            period_s=self._period_s,
        )
        self._metrics.escalations.labels(self._name, self._metric_child(child)).inc()
        self._shutdown()
        self.exit(ESCALATION_REASON)

    # -- starting and stopping children -----------------------------------------

    def _notify(self, report: ChildExited) -> None:
        # Runs on the child's thread: a tell never blocks (unbounded inbox).
        # If we are gone, our own shutdown already dealt with the child.
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(report)

    def _start_child(self, child: Child) -> None:
        link = Link(child.spec.id, self._notify, registry=self._registry)
        child.link = link
        try:
            obj = child.spec.start(link)
            ref = actor_ref_of(obj)
        except Exception as exc:
            link.close()
            raise ChildStartError(self._name, child.spec.id, exc) from exc
        child.obj, child.ref = obj, ref
        self._set_state(child, "running")
        _log.info(
            "supervisor.child_started",
            supervisor=self._name,
            child_id=child.spec.id,
            child_type=child.spec.type,
        )

    def _stop_children(
        self, children: Iterable[Child], *, concurrent: bool, timeout_ms: int | None = None
    ) -> None:
        """Ask each running child to stop and wait for it, up to its shutdown timeout.

        Sequential mode stops one after the other (ordered shutdown); concurrent mode
        asks all first, then waits (many independent children, e.g. dynamic ones).
        """
        running = [child for child in children if child.state == "running"]
        if concurrent:
            for child in running:
                self._request_stop(child)
        started = time.monotonic()
        for child in running:
            if not concurrent:
                started = time.monotonic()
                self._request_stop(child)
            limit_ms = child.spec.shutdown_timeout_ms if timeout_ms is None else timeout_ms
            remaining_s = max(0.0, started + limit_ms / 1000 - time.monotonic())
            exited = present(child.link, "a running child has a link").exited.wait(remaining_s)
            self._finish_stop(child, exited)

    def _request_stop(self, child: Child) -> None:
        present(child.ref, "a running child has a ref").stop(block=False)

    def _finish_stop(self, child: Child, exited: bool) -> None:
        present(child.link, "a stopped child had a link").close()
        # A thread cannot be killed: a child that did not stop in time is abandoned.
        self._set_state(child, "stopped" if exited else "dead")
        self._log_terminated(child, "shutdown" if exited else "shutdown_timeout")

    def _shutdown(self) -> None:
        """Stop every child in reverse start order (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        self._published.running = False
        self._stop_children(reversed(list(self._children.values())), concurrent=self._concurrent)

    _concurrent = False

    # -- publishing ----------------------------------------------------------------

    def _set_state(self, child: Child, state: str) -> None:
        child.state = state
        if state != "running":
            child.obj = child.ref = None
        self._published.children[child.spec.id] = ChildView(
            ChildInfo(child.spec.id, child.spec.type, state, child.restart_count),
            child.obj,
            child.ref,
        )

    def _remove(self, child: Child) -> None:
        self._children.pop(child.spec.id, None)
        self._published.children.pop(child.spec.id, None)

    def _log_terminated(self, child: Child, reason: str) -> None:
        log = _log.info if is_normal_exit(reason) else _log.warning
        log(
            "supervisor.child_terminated",
            supervisor=self._name,
            child_id=child.spec.id,
            reason=reason,
        )
