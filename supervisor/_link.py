"""The link between one incarnation of a child and its supervisor."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ChildExited", "Link"]


class ChildExited(NamedTuple):
    """Told to a supervisor when one incarnation of a child has exited."""

    child_id: str
    """The child's id in its supervisor."""
    link: Link
    """The incarnation's link: a report whose link is not the child's current one is stale."""
    reason: str
    """`normal`, an exit reason set with `SupervisedActor.exit()`, or the repr of the
    exception that stopped the actor."""
    error: BaseException | None
    """The exception that stopped the actor, if any."""


class Link:
    """Given to a child's start factory; the child reports its exit through it.

    A link belongs to one incarnation: a restart creates a new one. Reporting never
    blocks (it is a `tell` to the supervisor) and happens at most once. `exited`
    is set once the child's thread has finished its last hook, which is what a
    supervisor waits on when it stops the child.
    """

    __slots__ = (
        "_closed",
        "_exit",
        "_lock",
        "_notify",
        "child_id",
        "exited",
        "owner_thread",
        "registry",
    )

    def __init__(
        self,
        child_id: str,
        notify: Callable[[ChildExited], None],
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.child_id = child_id
        self.registry = registry
        """Prometheus registry inherited by child supervisors started with this link."""
        self.exited = threading.Event()
        self.owner_thread: threading.Thread | None = None
        """The child's actor thread, once it runs (lets a handle refuse to wait on itself)."""
        self._notify = notify
        self._lock = threading.Lock()
        # (reason, error) once exited. Not the ChildExited itself: it refers
        # back to this link, and that cycle kept every passivated child's link
        # for the garbage collector (issue 20).
        self._exit: tuple[str, BaseException | None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Link {self.child_id!r}>"

    @property
    def exit_report(self) -> ChildExited | None:
        """The exit report, once the child has exited."""
        if self._exit is None:
            return None
        return ChildExited(self.child_id, self, *self._exit)

    def report_exit(self, reason: str, error: BaseException | None = None) -> None:
        """Report this incarnation's exit to the supervisor; later calls do nothing."""
        with self._lock:
            if self._exit is not None:
                return
            self._exit = (reason, error)
            report = ChildExited(self.child_id, self, reason, error)
            closed = self._closed
        try:
            if not closed:
                self._notify(report)
        finally:
            self.exited.set()

    def close(self) -> None:
        """Drop any later report: the supervisor has already dealt with this incarnation."""
        with self._lock:
            self._closed = True
