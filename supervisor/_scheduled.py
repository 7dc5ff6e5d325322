"""Supervised actors that share a few scheduler threads.

A `SupervisedActor` owns a thread. With one actor per customer that is a
thousand threads under load, each woken for one message: every wake-up is a
context switch and a wait to retake the GIL (measured: ~20% fewer charges/s
with 1,000 live accounts than with 100 for the same load). A
`ScheduledActor` keeps pykka's model (its own inbox, messages one at a time
and in order, `tell`/`ask`, the same failure and stop semantics and the same
exit report to its supervisor) but runs on an `ActorScheduler`: a put to an
idle actor's inbox queues the actor once on the scheduler's run queue, and a
scheduler thread handles up to `slice_messages_max` of its messages before
it takes the next runnable actor. An actor is never on two threads at once.
Handlers may block briefly (a store read); each blocked one holds a thread.
"""

from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import pykka

from supervisor._actor import SupervisedActor

if TYPE_CHECKING:
    from supervisor._link import Link

__all__ = ["ActorScheduler", "ScheduledActor"]

logger = logging.getLogger("pykka")


class ActorScheduler:
    """A fixed set of daemon threads running whichever actors have messages."""

    def __init__(self, threads: int, name: str = "actors") -> None:
        if threads < 1:
            raise ValueError("an ActorScheduler needs at least one thread")
        self._runnable: queue.SimpleQueue[ScheduledActor | None] = queue.SimpleQueue()
        self._threads_count = threads
        self._name = name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def schedule(self, actor: ScheduledActor) -> None:
        """Queue a runnable actor; starts the threads on first use."""
        if not self._threads:
            self._start_threads()
        self._runnable.put(actor)

    def runnable(self) -> int:
        """Actors waiting for a thread: grows when every thread is busy or blocked."""
        return self._runnable.qsize()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Let the threads end once the actors queued before this have run (a
        later `schedule` starts new ones): called after the actors stopped."""
        with self._lock:
            threads, self._threads = self._threads, []
            for _ in threads:
                self._runnable.put(None)
        for thread in threads:
            thread.join(timeout_s)

    def _start_threads(self) -> None:
        with self._lock:
            if self._threads:
                return
            threads = [
                threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)
                for i in range(self._threads_count)
            ]
            for thread in threads:
                thread.start()
            self._threads = threads

    def _run(self) -> None:
        while True:
            actor = self._runnable.get()
            if actor is None:
                return
            try:
                actor._run_slice()
            except BaseException as error:  # e.g. SystemExit in on_start
                # pykka lets these end an actor's own thread; here they would
                # end a thread every actor shares. End just the actor.
                logger.exception("%s stopped by %r outside a handler", actor, error)
                actor._abandon(error)
            # Not kept while waiting for the next one: an ended actor would
            # stay in memory (with what it loaded) until this thread is busy again.
            del actor


class _Inbox:
    """pykka's inbox interface (put, get, empty), plus the scheduling flag:
    `scheduled` is True while the actor is on the run queue or running, so a
    put to a busy actor only queues the message."""

    __slots__ = ("_items", "_lock", "_scheduled", "actor")

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = True  # until the actor starts: puts only queue
        self.actor: ScheduledActor | None = None

    def put(self, envelope: Any, block: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            self._items.append(envelope)
            if self._scheduled:
                return
            self._scheduled = True
        actor = self.actor
        assert actor is not None
        actor._scheduler.schedule(actor)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self._lock:
            return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def take(self) -> Any:
        """The next message, or None after marking the actor idle."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._scheduled = False
            return None


class ScheduledActor(SupervisedActor):
    """A `SupervisedActor` run by an `ActorScheduler` instead of a thread."""

    slice_messages_max: ClassVar[int] = 32

    def __init__(self, link: Link | None, scheduler: ActorScheduler) -> None:
        super().__init__(link)
        self._scheduler = scheduler
        self._set_up = False
        inbox = self.actor_inbox
        assert isinstance(inbox, _Inbox)
        inbox.actor = self

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _Inbox()

    def _start_actor_loop(self) -> None:
        self._scheduler.schedule(self)

    def _run_slice(self) -> None:
        if not self._set_up:
            self._set_up = True
            self._actor_loop_setup()
        inbox: _Inbox = self.actor_inbox  # type: ignore[assignment]
        for _ in range(self.slice_messages_max):
            if self.actor_stopped.is_set():
                break
            envelope = inbox.take()
            if envelope is None:
                return  # idle: the next put schedules it again
            self._handle_envelope(envelope)
        if self.actor_stopped.is_set():
            self._end()  # still marked scheduled, so nothing schedules it again
            return
        self._scheduler.schedule(self)  # more queued: to the back of the line

    def _abandon(self, error: BaseException) -> None:
        """End this actor as its own thread would have ended, reporting `error`."""
        self._handle_failure(type(error), error, error.__traceback__)
        self._end()

    def _end(self) -> None:
        """What pykka's actor loop does last: tear down, then report the exit.

        Then the inbox lets go of the actor: the inbox and the actor refer to
        each other, and every `ActorRef` holds the inbox, so an ended actor
        (with all it loaded) waited for a full garbage collection; passivating
        10,000 customers a minute kept ~15 KiB per customer touched (issue 20).
        Nothing schedules an ended actor again (its inbox stays marked
        scheduled), so the inbox never needs it after this."""
        try:
            self._actor_loop_teardown()
        finally:
            try:
                self._report_exit()
            finally:
                inbox: _Inbox = self.actor_inbox  # type: ignore[assignment]
                inbox.actor = None

    def _handle_envelope(self, envelope: Any) -> None:
        """One message, as pykka's ThreadingActor loop handles it.

        A copy of the loop body of pykka 4.5.0's private
        `Actor._actor_loop_running` (pinned in pyproject.toml; checked by
        tests/supervisor/test_pykka_pin.py), except `stop_all(block=False)`:
        a scheduler thread must not wait for actors it may itself run.
        """
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                logger.info(f"Exception returned from {self} to caller:", exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            exception_value = sys.exc_info()[1]
            logger.debug(f"{exception_value!r} in {self}. Stopping all actors.")
            self._stop()
            pykka.ActorRegistry.stop_all(block=False)
