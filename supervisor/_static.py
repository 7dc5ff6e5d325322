"""Supervisor: a fixed list of children restarted by strategy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from supervisor._core import Child, SupervisorCore
from supervisor._errors import ChildStartError, SupervisorSpecError, invariant
from supervisor._handle import SupervisorHandle
from supervisor._launch import EscalationCallback, StartChildren, launch
from supervisor._spec import ChildSpec, SupervisorFlags, validate_children, validate_name

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from supervisor._link import Link

__all__ = ["Supervisor"]

start_timeout_ms_default = 30_000


class _SupervisorActor(SupervisorCore):
    def __init__(
        self, link: Link, *, flags: SupervisorFlags, specs: tuple[ChildSpec, ...], **core: Any
    ) -> None:
        super().__init__(link, intensity=flags.intensity, period_s=flags.period_s, **core)
        self._strategy = flags.strategy
        for spec in specs:
            child = Child(spec)
            self._children[spec.id] = child
            self._set_state(child, "stopped")

    def _handle_call(self, message: Any) -> Any:
        if isinstance(message, StartChildren):
            for child in self._children.values():
                try:
                    self._start_child(child)
                except ChildStartError:
                    self._shutdown()
                    raise
            return None
        return super()._handle_call(message)

    def _restart(self, failed: Child, reason: str) -> None:
        order = list(self._children.values())
        if self._strategy == "one_for_one":
            group = [failed]
        elif self._strategy == "one_for_all":
            group = order
        else:
            invariant(self._strategy == "rest_for_one", f"unknown strategy {self._strategy!r}")
            group = order[order.index(failed) :]
        # Children waiting in "restarting" are part of an earlier, unfinished group restart.
        members = [c for c in group if c is failed or c.state in ("running", "restarting")]
        self._stop_children(reversed(members), concurrent=False)
        for child in members:
            if child is not failed and child.spec.restart == "temporary":
                self._remove(child)  # OTP: a temporary child is never restarted
                continue
            self._set_state(child, "restarting")
        pending = [c for c in members if c.state == "restarting"]
        for child in pending:
            if not self._restart_one(child, reason, failed.spec.id):
                return  # it retries (a new restart); the rest of the group waits in "restarting"


class Supervisor(SupervisorHandle):
    """Handle of a supervisor with a fixed list of children; thread-safe."""

    _kind = "static"

    @classmethod
    def start(
        cls,
        *,
        name: str,
        flags: SupervisorFlags,
        children: Iterable[ChildSpec],
        on_escalation: EscalationCallback | None = None,
        link: Link | None = None,
        registry: CollectorRegistry | None = None,
        start_timeout_ms: int = start_timeout_ms_default,
    ) -> Supervisor:
        """Validate the specs, start the children in order, return the handle.

        `link=None` makes a root, which calls `on_escalation(reason)` when it gives
        up; a child supervisor passes the `Link` its factory received. `registry`
        defaults to the parent's (through the link), else the global one.
        Raises `SupervisorSpecError` for a bad spec, `ChildStartError` if a child's
        factory fails (the children already started are stopped first).
        """
        validate_name("supervisor_name", name)
        if not isinstance(flags, SupervisorFlags):
            raise SupervisorSpecError(
                "invalid_flags", f"{flags!r} is not SupervisorFlags", supervisor=name
            )
        flags.validate(name)
        specs = validate_children(name, children)
        return launch(
            _SupervisorActor,
            cls,
            name=name,
            link=link,
            on_escalation=on_escalation,
            registry=registry,
            start_timeout_ms=start_timeout_ms,
            flags=flags,
            specs=specs,
        )
