"""SupervisedActor: a pykka actor that reports its exit to its supervisor."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pykka

if TYPE_CHECKING:
    from types import TracebackType

    from supervisor._link import Link

__all__ = ["SupervisedActor"]


class SupervisedActor(pykka.ThreadingActor):
    """Base class of supervised workers.

    When the actor's thread ends it reports exactly once, through its `Link`:
    `normal` after a normal stop, the reason given to `exit()`, or the exception
    that stopped it (a failure in `on_start`, in handling a `tell`, in `on_stop`
    or in `on_failure`). Subclasses overriding `on_start`/`on_stop`/`on_failure`
    call `super()`.
    """

    def __init__(self, link: Link | None) -> None:
        super().__init__()
        self.link = link
        self._exit_reason: str | None = None
        self._exit_error: BaseException | None = None

    def exit(self, reason: str) -> None:
        """Stop after the messages already queued, and report `reason` to the supervisor.

        A reason other than `normal`/`shutdown` counts as an abnormal exit.
        """
        self._exit_reason = reason
        self.stop()

    # pykka 4 routes every failure (on_start, a failed tell, on_stop, on_failure)
    # through this private method; it is the only place that sees them all,
    # including a failing on_start, for which pykka calls no public hook.
    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._exit_error is None and exception_value is not None:
            self._exit_error = exception_value
        super()._handle_failure(exception_type, exception_value, traceback)

    def _actor_loop(self) -> None:
        if self.link is not None:
            self.link.owner_thread = threading.current_thread()
        try:
            super()._actor_loop()
        finally:
            self._report_exit()

    def _report_exit(self) -> None:
        if self.link is None:
            return
        error = self._exit_error
        if error is not None:
            self.link.report_exit(repr(error), error)
        else:
            self.link.report_exit(self._exit_reason or "normal")
