"""State a supervisor publishes, and the thread-safe handle that reads it."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from supervisor._errors import SupervisorError
from supervisor._spec import ChildInfo

if TYPE_CHECKING:
    from supervisor._link import Link

__all__ = ["ChildView", "Published", "SupervisorHandle"]

call_timeout_ms_default = 5000


class ChildView(NamedTuple):
    """What a supervisor publishes about one child (replaced whole on every change)."""

    info: ChildInfo
    """Id, type, state and restart count."""
    child: object | None
    """The current incarnation: the `ActorRef` or supervisor handle; None if not running."""
    ref: pykka.ActorRef[Any] | None
    """The current incarnation's actor ref; None if not running."""


class Published:
    """Written only by the supervisor's thread; read by handles from any thread.

    Readers copy or `get` the dict (atomic under the GIL) and never see a
    half-updated child because each entry is an immutable `ChildView`.
    """

    __slots__ = ("children", "running")

    def __init__(self) -> None:
        self.children: dict[str, ChildView] = {}
        self.running = True


class SupervisorHandle:
    """Base of `Supervisor` and `DynamicSupervisor`: safe to use from any thread."""

    _kind = "supervisor"

    def __init__(self, name: str, ref: pykka.ActorRef[Any], link: Link, published: Published):
        self._name = name
        self._ref = ref
        self._link = link
        self._published = published

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"

    @property
    def name(self) -> str:
        """The supervisor's name (label in logs and metrics)."""
        return self._name

    @property
    def actor_ref(self) -> pykka.ActorRef[Any]:
        """The supervisor's own actor."""
        return self._ref

    @property
    def is_running(self) -> bool:
        """False once the supervisor is stopping, stopped, or has escalated."""
        return self._published.running and self._ref.is_alive()

    def child(self, child_id: str) -> object | None:
        """The child's current incarnation (`ActorRef` or handle), None if not running."""
        view = self._published.children.get(child_id)
        return None if view is None else view.child

    def which_children(self) -> list[ChildInfo]:
        """Every child, in start order."""
        return [view.info for view in self._published.children.copy().values()]

    def tree(self) -> dict[str, Any]:
        """The supervision tree below this supervisor, as nested dicts."""
        children = []
        for view in self._published.children.copy().values():
            node: dict[str, Any] = view.info._asdict()
            node["children"] = (
                view.child.tree()["children"] if isinstance(view.child, SupervisorHandle) else []
            )
            children.append(node)
        return {
            "id": self._name,
            "type": "supervisor",
            "kind": self._kind,
            "state": "running" if self.is_running else "stopped",
            "restart_count": 0,
            "children": children,
        }

    def stop(self, timeout_ms: int = 10_000) -> bool:
        """Stop the children in reverse order, then the supervisor; idempotent.

        Returns True once the supervisor's thread has finished, False if it did not
        within `timeout_ms` (or if called from the supervisor's own thread, which
        cannot wait for itself: the stop then happens after the current message).
        """
        self._ref.stop(block=False)
        if threading.current_thread() is self._link.owner_thread:
            return False
        return self._link.exited.wait(timeout_ms / 1000)

    def _call(self, message: object, timeout_ms: int) -> Any:
        """Ask the supervisor's actor, refusing to deadlock on its own thread."""
        if threading.current_thread() is self._link.owner_thread:
            raise SupervisorError(f"{self!r}: cannot call the supervisor from its own thread")
        try:
            return self._ref.ask(message, timeout=timeout_ms / 1000)
        except pykka.ActorDeadError as exc:
            raise SupervisorError(f"{self!r} is not running") from exc
        except pykka.Timeout as exc:
            raise SupervisorError(f"{self!r} did not answer within {timeout_ms} ms") from exc
