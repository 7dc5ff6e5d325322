"""A supervised actor that polls durable work: woken by a doorbell or a timer.

Why a doorbell instead of a message per event: the gateway may ring it for
every webhook, and pykka inboxes are unbounded; ringing a `threading.Event`
any number of times leaves at most one tick queued (the bound is 1).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import structlog

from ledger.clock import format_rfc3339, parse_rfc3339
from supervisor import Link, SupervisedActor

log = structlog.get_logger(__name__)

_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for durable work: base, 2*base, 4*base ... capped."""

    base_s: float = 2.0
    max_s: float = 3600.0

    def delay_s(self, attempts: int) -> float:
        return float(min(self.max_s, self.base_s * (2 ** min(max(attempts, 0), 30))))

    def next_attempt_at(self, now: str, attempts: int) -> str:
        """When to try again after `attempts` failures so far (RFC 3339, fixed format)."""
        return format_rfc3339(parse_rfc3339(now) + timedelta(seconds=self.delay_s(attempts)))


class Doorbell:
    """Coalescing wake-up shared by the gateway and one polling actor; it
    outlives actor restarts, so the composition root creates it once."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def ring(self) -> None:
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        rang = self._event.wait(timeout_s)
        self._event.clear()
        return rang


class _Tick(NamedTuple):
    """Look for due work now."""


class PollingActor(SupervisedActor):
    """Runs `poll_once()` on its own actor thread whenever the doorbell rings or
    `poll_interval_s` passes. A helper thread only rings; all the work (and so
    every failure, which the supervisor sees) happens on the actor thread."""

    def __init__(self, link: Link | None, doorbell: Doorbell, poll_interval_s: float) -> None:
        super().__init__(link)
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self._doorbell = doorbell
        self._poll_interval_s = poll_interval_s
        self._stopping = threading.Event()
        self._tick_queued = threading.Event()
        self._timer: threading.Thread | None = None

    def poll_once(self) -> bool:
        """Process one bounded batch; True if more work is already due."""
        raise NotImplementedError

    def _queue_tick(self) -> None:
        if self._tick_queued.is_set():
            return
        self._tick_queued.set()
        try:
            self.actor_ref.tell(_Tick())
        except Exception:  # the actor is stopping: its successor polls on start
            self._tick_queued.clear()

    def _run_timer(self) -> None:
        while not self._stopping.is_set():
            self._doorbell.wait(self._poll_interval_s)
            if self._stopping.is_set():
                return
            self._queue_tick()

    def on_start(self) -> None:
        super().on_start()
        self._timer = threading.Thread(
            target=self._run_timer, name=f"{type(self).__name__}-timer", daemon=True
        )
        self._timer.start()
        self._queue_tick()  # work may have piled up while we were down

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            self._tick_queued.clear()
            if self.poll_once():
                self._queue_tick()
            return None
        return super().on_receive(message)

    def _stop_timer(self) -> None:
        self._stopping.set()
        self._doorbell.ring()  # wake the timer so it sees `_stopping`
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join(_JOIN_TIMEOUT_S)

    def on_stop(self) -> None:
        self._stop_timer()
        super().on_stop()

    def on_failure(self, *exc_info: Any) -> None:
        self._stop_timer()
        super().on_failure(*exc_info)
