"""Tickets: every charge is answered exactly once, from one place.

Each `ChargeCommand` carries a `Ticket`; whoever ends the charge settles it:
the account actor (a refusal, a replay), the ledger writer (committed, or a
store failure), a stopped signer or writer (what its queue still held). The
first settlement wins and later ones return False, so a charge answered by a
failure path cannot be answered again by a late success, nor the reverse.

The tickets of one actor message form a `TicketBatch`, which hands every
outcome over in one call once the last is settled: one thread hop back to the
event loop per batch, not per charge. Two failure paths settle what a batch
still waits for, and live here too:

- the actor failed the message, or died with it queued: `TicketFuture`, the
  pykka future of the ask (see `ask`);
- the request ran out of time: the deadline of `TicketBatch.awaited`.

Stages settle what they hold through `settle_all` and `settle_queue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

import pykka
import structlog

from actors.charges import ACCOUNT_UNAVAILABLE, STORE_UNAVAILABLE, ChargeOutcome, refused

log = structlog.get_logger(__name__)

# The answers of the two failure paths owned here; nothing was charged for
# either as far as the client knows: a retry with the same key is safe.
ACCOUNT_RESTARTING: Final = refused(ACCOUNT_UNAVAILABLE, "the account is restarting; retry")
TIMED_OUT: Final = refused(
    STORE_UNAVAILABLE,
    "the charge did not complete in time; retry with the same idempotency key",
)


class Settles(Protocol):
    """Anything a stage holds that must be answered: a receipt in flight, a barrier."""

    def settle(self, outcome: ChargeOutcome) -> bool: ...


class Ticket:
    """The answer to one charge, settled once. Light (two slots): one is made
    per charge on the event loop's thread."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: TicketBatch, index: int) -> None:
        self._batch = batch
        self._index = index

    def settle(self, outcome: ChargeOutcome) -> bool:
        """Answer the charge; False (and nothing sent) if it was answered already."""
        return self._batch._settle(self._index, outcome)

    @property
    def outcome(self) -> ChargeOutcome | None:
        """The winning answer, None while unsettled."""
        return self._batch._outcomes[self._index]


class TicketBatch:
    """The tickets of one actor message. `on_all` runs once, on the thread of
    the last settlement, with the outcomes in ticket order."""

    def __init__(self, count: int, on_all: Callable[[Sequence[ChargeOutcome]], object]) -> None:
        self._outcomes: list[ChargeOutcome | None] = [None] * count
        self._remaining = count
        self._lock = threading.Lock()
        self._on_all = on_all

    def issue(self) -> tuple[Ticket, ...]:
        """The batch's tickets, one per charge in order. Not kept by the
        batch: each ticket refers to it, and the reverse reference made every
        request a cycle only the garbage collector could free (its full passes
        stalled every thread: p99 250-800 ms instead of ~40 ms in the bench)."""
        return tuple([Ticket(self, index) for index in range(len(self._outcomes))])

    def __len__(self) -> int:
        return len(self._outcomes)

    @classmethod
    def awaited(
        cls, count: int, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> tuple[TicketBatch, asyncio.Future[list[ChargeOutcome]]]:
        """Tickets whose outcomes resolve a future on `loop` in one thread hop;
        those not settled within `timeout_s` are settled as TIMED_OUT."""
        future: asyncio.Future[list[ChargeOutcome]] = loop.create_future()

        def resolve(outcomes: Sequence[ChargeOutcome]) -> None:
            deadline.cancel()
            if not future.done():  # the waiting request may have been cancelled
                future.set_result(list(outcomes))

        batch = cls(count, lambda outcomes: loop.call_soon_threadsafe(resolve, outcomes))
        deadline = loop.call_later(timeout_s, batch.fail_unsettled, TIMED_OUT)
        return batch, future

    def fail_unsettled(self, outcome: ChargeOutcome) -> int:
        """Settle every ticket still waiting (the actor failed, the deadline
        passed); returns how many were."""
        return sum(self._settle(index, outcome) for index in range(len(self._outcomes)))

    def _settle(self, index: int, outcome: ChargeOutcome) -> bool:
        with self._lock:
            if self._outcomes[index] is not None:
                return False
            self._outcomes[index] = outcome
            self._remaining -= 1
            if self._remaining:
                return True
            outcomes = [o for o in self._outcomes if o is not None]
        on_all, self._on_all = self._on_all, _handed_over
        try:
            on_all(outcomes)
        except Exception:
            # The waiter is gone (say, its event loop closed at shutdown); the
            # stage that settled must go on answering the others.
            log.exception("tickets.handover_failed", charges=len(outcomes))
        return True


def _handed_over(outcomes: Sequence[ChargeOutcome]) -> None:
    """A settled batch's hand-over: the real one (its request's future, the
    deadline's timer and context) is let go once called, since a remembered
    receipt keeps its ticket until the customer's next charge (issue 20)."""


def settle_all(items: Iterable[Settles], outcome: ChargeOutcome) -> None:
    """Answer items that will not go on (a stage failed them)."""
    for item in items:
        item.settle(outcome)


def settle_queue(q: queue.Queue[Any], outcome: ChargeOutcome, stop_marker: object) -> None:
    """Answer whatever a stopped stage's queue still holds: never drop it.

    The stop marker is put back: a worker still stuck in its last batch when
    the stage gave up waiting for it finds it once it is free, and ends."""
    stopped = False
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is stop_marker:
            stopped = True
        else:
            item.settle(outcome)
    if stopped:
        with contextlib.suppress(queue.Full):  # just emptied: full only by a racing put
            q.put_nowait(stop_marker)


class TicketFuture(pykka.Future[Any]):
    """The future pykka attaches to an ask of an account actor: if the message
    fails in the actor, or the actor dies with it still queued, the batch
    bound to it (see `ask`) has every ticket not yet settled answered
    ACCOUNT_RESTARTING.

    One is made per charge request on the event loop's thread, so it is light:
    a plain lock (a C object) instead of pykka's ThreadingFuture and its
    Condition, which cost ~6% of the GIL's time under load (py-spy). `get`
    still blocks, for the supervisor's own asks (stop, reload).
    """

    def __init__(self) -> None:
        super().__init__()
        self._batch: TicketBatch | None = None
        self._value: Any = None
        self._exc_info: Any = None
        self._ready = threading.Lock()
        self._ready.acquire()

    def get(self, *, timeout: float | None = None) -> Any:
        if self._get_hook is not None:  # a derived future, e.g. ActorRef.stop()'s
            return super().get(timeout=timeout)
        if not self._ready.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise pykka.Timeout(f"{timeout} seconds")
        self._ready.release()
        if self._exc_info is not None:
            _, value, traceback = self._exc_info
            raise value.with_traceback(traceback)
        return self._value

    def set(self, value: Any = None) -> None:
        self._value = value
        self._ready.release()

    def bind(self, batch: TicketBatch) -> None:
        # Either this sees the exception or set_exception sees the batch (or
        # both: settling twice is harmless).
        self._batch = batch
        if self._exc_info is not None:
            batch.fail_unsettled(ACCOUNT_RESTARTING)

    def set_exception(self, exc_info: Any = None) -> None:
        exc_type, value, traceback = exc_info if exc_info is not None else sys.exc_info()
        if value is None and exc_type is not None:
            value = exc_type()
        self._exc_info = (exc_type, value, traceback)
        self._ready.release()
        batch = self._batch
        if batch is not None:
            batch.fail_unsettled(ACCOUNT_RESTARTING)


def ask(ref: pykka.ActorRef[Any], message: object, batch: TicketBatch) -> None:
    """Queue a message whose charges hold `batch`'s tickets on an account
    actor, without waiting: the answers come through the tickets, those the
    actor leaves unsettled by failing (or dying) through the ask's future."""
    future = ref.ask(message, block=False)
    if isinstance(future, TicketFuture):  # else only the deadline answers a crash
        future.bind(batch)
