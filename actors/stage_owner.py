"""StageOwner: a supervised actor that owns a stage of plain worker threads.

The threads do the work (signing, committing) off the actor's inbox; the
actor gives them a supervised life: started on start, stopped (and their
queued items answered) on stop or failure, and a worker's unexpected error
becomes a crash the supervisor sees and restarts from.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple, Protocol

from supervisor import Link, SupervisedActor


class Stage(Protocol):
    def start(self) -> None: ...
    def stop(self, timeout_s: float) -> None: ...


class StageCrashed(NamedTuple):
    """Told by a worker thread that hit an unexpected error."""

    reason: str


class StageOwner(SupervisedActor):
    name = "stage"

    def __init__(self, link: Link, stop_timeout_s: float) -> None:
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
