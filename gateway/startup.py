"""Start-up as an ordered list of steps, each with its undo (aiohttp's
`cleanup_ctx`): a step is a generator that starts something, yields it, and
undoes it after the yield. On stop, or when a later step fails to start, the
steps that started unwind in reverse; every undo runs even when one before it
failed, each error is logged, and the first is re-raised once all have run
(a stop that halts at the first error leaks everything after it)."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

Step = Generator[T, None, None]
"""Starts on the first `next`, yields what it started once, undoes on the second."""


class StepYieldedTwice(RuntimeError):
    """A step's generator yielded again where its undo should have ended it."""


class Steps:
    """The steps that have started, in order; `unwind` undoes them in reverse."""

    def __init__(self) -> None:
        self._started: list[tuple[str, Step[object]]] = []

    def enter(self, name: str, step: Step[T]) -> T:
        """Run a step up to its yield and keep it for the unwind. A step that
        raises before yielding started nothing and is not kept."""
        value = next(step)
        self._started.append((name, step))
        return value

    def unwind(self) -> None:
        """Undo every started step in reverse; the first error is raised at
        the end. Idempotent: a step is undone once."""
        first: BaseException | None = None
        while self._started:
            name, step = self._started.pop()
            try:
                next(step)
            except StopIteration:
                continue
            except Exception as error:
                log.exception("runtime.undo_failed", step=name)
                first = first or error
                continue
            step.close()
            log.error("runtime.undo_failed", step=name, error="the step yielded twice")
            first = first or StepYieldedTwice(name)
        if first is not None:
            raise first

    @contextlib.contextmanager
    def starting(self) -> Iterator[Steps]:
        """Unwind what started if the block raises: the start's error is the
        one raised; an undo's error is logged (by `unwind`) and dropped."""
        try:
            yield self
        except BaseException:
            with contextlib.suppress(Exception):
                self.unwind()
            raise
