"""StageOwner: a supervised actor that owns a stage of plain worker threads.

The threads do the work (signing, committing) off the actor's inbox; the
actor gives them a supervised life: started on start, stopped (and their
queued items answered) on stop or failure, and a worker's unexpected error
becomes a crash the supervisor sees and restarts from.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import structlog

from supervisor import Link, SupervisedActor

log = structlog.get_logger(__name__)


class Stage(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout_s: float) -> None: ...


class LoopThread:
    """A stage of one thread running `body(stopping)` until `stopping` is set.
    An exception escaping the body is reported through `on_crash`."""

    def __init__(
        self,
        name: str,
        body: Callable[[threading.Event], None],
        on_crash: Callable[[str], None],
        on_stop_requested: Callable[[], None] = lambda: None,
    ) -> None:
        self.stopping = threading.Event()
        self._body = body
        self._on_crash = on_crash
        self._on_stop_requested = on_stop_requested
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self.stopping.set()
        self._on_stop_requested()

    def stop(self, timeout_s: float) -> None:
        self.request_stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("stage.thread_stop_timeout", thread=self._thread.name)

    def _run(self) -> None:
        try:
            self._body(self.stopping)
        except Exception as error:
            log.exception("stage.thread_crashed", thread=self._thread.name)
            self._on_crash(repr(error))


class LoopThreads:
    """Several LoopThreads as one stage: all asked to stop first, then joined,
    so stopping takes one timeout, not one per thread."""

    def __init__(self, loops: Sequence[LoopThread]) -> None:
        self._loops = list(loops)

    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def stop(self, timeout_s: float) -> None:
        for loop in self._loops:
            loop.request_stop()
        deadline = time.monotonic() + timeout_s
        for loop in self._loops:
            loop.stop(max(0.0, deadline - time.monotonic()))


class StageCrashed(NamedTuple):
    """Told by a worker thread that hit an unexpected error."""

    reason: str


class StageOwner(SupervisedActor):
    name = "stage"

    def __init__(self, link: Link | None, stop_timeout_s: float) -> None:
        super().__init__(link)
        self._stop_timeout_s = stop_timeout_s

    def stage(self) -> Stage:
        raise NotImplementedError

    def attach(self) -> None:
        """Make the running stage reachable (called after it started)."""

    def detach(self) -> None:
        """Make the stage unreachable (called before it stops)."""

    def report_crash(self, reason: str) -> None:
        with contextlib.suppress(Exception):  # the owner is already stopping
            self.actor_ref.tell(StageCrashed(reason))

    def on_start(self) -> None:
        super().on_start()
        self.stage().start()
        self.attach()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StageCrashed):
            raise RuntimeError(f"{self.name} worker failed: {message.reason}")
        return super().on_receive(message)

    def _shutdown(self) -> None:
        self.detach()
        self.stage().stop(self._stop_timeout_s)

    def on_stop(self) -> None:
        self._shutdown()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self._shutdown()
        super().on_failure(*exc_info)
