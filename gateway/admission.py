"""Admission control: a bounded number of charges in flight, globally and per
customer, and fewer while charges are answered slower than a latency target
or the event loop itself is saturated (heaviest customers shed first). Past a
bound the gateway answers 429 with Retry-After at once instead of queueing
without limit (shed load, never collapse).

Used only from the event loop thread, so plain integers suffice.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from gateway.errors import ApiError
from ledger import limits
from ledger.limits import light_inflight_max

RETRY_AFTER_S = 1
LOOP_LAG_INTERVAL_S = 0.01
# Smoothing of the lag samples (one per interval): a single slow callback or
# GC pause moves the average by a tenth; sustained saturation crosses it.
LOOP_LAG_WEIGHT = 0.1
# The latency limit adapts once per window of completed charges.
LATENCY_WINDOW_S = 0.1
# Per window, the limit shrinks at most to this share, and grows by this factor.
LATENCY_SHRINK_MIN = 0.5
LATENCY_GROWTH = 1.1


class LatencyLimit:
    """An in-flight bound that keeps admitted charges near a latency target.

    Why: by Little's law a full in-flight bound makes every charge wait
    bound / throughput, ~0.7-1.1 s here at 1,000 in flight under overload,
    while the service answers the rest 429 at once. Once per window the
    limit is multiplied by target / latency when the latency is over the
    target (at most halved), and grows by a tenth otherwise; never below
    `floor`, which keeps the pipeline fed, nor above `ceiling` (the fixed
    bound). The latency is the larger of the mean of the single charges
    completed in the window and twice the mean age of those still in flight:
    the age sees a queue forming a whole latency before its charges complete.
    A window with nothing in flight resets the limit. A gradient limit, as in
    Netflix's concurrency-limits, on the latency the clients see.
    """

    def __init__(
        self,
        target_s: float,
        floor: int,
        ceiling: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
        self.target_s = target_s
        self.floor = floor
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self._window_started_s = 0.0
        self._latency_sum_s = 0.0
        self._completed = 0
        self._inflight = 0
        self._inflight_started_sum_s = 0.0

    def start(self) -> float:
        now_s = self._clock()
        self._inflight += 1
        self._inflight_started_sum_s += now_s
        return now_s

    def finish(self, started_s: float) -> float:
        """The charge's latency, recorded."""
        latency_s = self._clock() - started_s
        self._inflight -= 1
        self._inflight_started_sum_s -= started_s
        self._latency_sum_s += latency_s
        self._completed += 1
        return latency_s

    def latency_s(self, now_s: float) -> float:
        """This window's latency signal (0 when nothing was measured)."""
        completed_s = self._latency_sum_s / self._completed if self._completed else 0.0
        if not self._inflight:
            return completed_s
        mean_age_s = now_s - self._inflight_started_sum_s / self._inflight
        return max(completed_s, 2 * mean_age_s)

    def adapt(self, inflight: int) -> None:
        """Called often (every loop-lag tick); acts once per window."""
        now_s = self._clock()
        if now_s - self._window_started_s < LATENCY_WINDOW_S:
            return
        latency_s = self.latency_s(now_s)
        if not inflight and not self._completed:
            self.limit = self.ceiling
        elif latency_s > self.target_s:
            self.limit *= max(LATENCY_SHRINK_MIN, self.target_s / latency_s)
        elif self._completed:
            self.limit *= LATENCY_GROWTH
        self.limit = min(float(self.ceiling), max(float(self.floor), self.limit))
        self._window_started_s = now_s
        self._latency_sum_s = 0.0
        self._completed = 0


class Admission:
    def __init__(
        self,
        inflight_max: int,
        customer_inflight_max: int,
        on_reject: Callable[[], None] = lambda: None,
        loop_lag_max_s: float = float("inf"),
        lagging_inflight_max: int = limits.lagging_inflight_max,
        latency_target_s: float = float("inf"),
        latency_inflight_min: int | None = None,
    ) -> None:
        self.inflight_max = inflight_max
        self.customer_inflight_max = customer_inflight_max
        self.loop_lag_max_s = loop_lag_max_s
        self.lagging_inflight_max = lagging_inflight_max
        self.loop_lag_s = 0.0  # smoothed, see watch_loop_lag
        self.inflight = 0
        self._per_customer: dict[str, int] = {}
        # How many customers have each in-flight count: the heaviest customer
        # is its largest key, read only while the loop lags.
        self._customers_at: collections.Counter[int] = collections.Counter()
        self._on_reject = on_reject  # counts rejections (a Prometheus counter)
        # The latency limit never goes below the customer bound (one customer's
        # full share always fits), so ordinary concurrency is not shed by it:
        # a floor of 64 shed a 64-connection load whose latency sat near the
        # target, 16 spiralled (wrk's instant retry of each 429 slowed the
        # loop, which shrank the bound further: 1,438 -> 212 charges/s), and
        # 256 no longer helped under overload.
        floor = customer_inflight_max if latency_inflight_min is None else latency_inflight_min
        self.latency_limit = LatencyLimit(latency_target_s, floor, inflight_max)

    def refuse_if_saturated(self, customer_id: str, count: int = 1) -> None:
        """Raise the 429 that `enter` would, without taking a slot: lets a
        handler refuse before reading a body."""
        if self.inflight + count > self.inflight_max:
            self._reject("overloaded", "too many charges in flight; retry after the delay")
        mine = self._per_customer.get(customer_id, 0)
        if mine + count > self.customer_inflight_max:
            self._reject(
                "customer_overloaded",
                "too many charges in flight for this customer; retry after the delay",
            )
        if self.inflight + count > self.saturation_bound() and self._sheds(mine + count):
            # Shed the heaviest customers first: while one customer has many
            # charges in flight, a customer with fewer than half as many is
            # still served, so one customer flooding cannot get everyone shed.
            # When every customer is light, anyone past the bound is shed.
            self._reject(
                "customer_overloaded",
                "the service is saturated and this customer has more than its share"
                " in flight; retry after the delay",
            )

    def saturation_bound(self) -> int:
        """In flight past which charges are shed: the latency limit, and at
        most `lagging_inflight_max` while the event loop lags."""
        bound = int(self.latency_limit.limit)
        if self.loop_lag_s > self.loop_lag_max_s:
            bound = min(bound, self.lagging_inflight_max)
        return bound

    def enter(self, customer_id: str, count: int = 1) -> None:
        """Take `count` slots for this customer or raise a 429 ApiError."""
        self.refuse_if_saturated(customer_id, count)
        mine = self._per_customer.get(customer_id, 0)
        self._move(mine, mine + count)
        self.inflight += count
        self._per_customer[customer_id] = mine + count

    def enter_timed(self, customer_id: str) -> float:
        """`enter` one single charge whose latency feeds the latency limit (a
        batch is slow by its size, not by load); returns its start for `leave`."""
        self.enter(customer_id)
        return self.latency_limit.start()

    def leave_timed(self, customer_id: str, started_s: float) -> float:
        """`leave` for a charge from `enter_timed`; returns its latency."""
        self.leave(customer_id)
        return self.latency_limit.finish(started_s)

    def leave(self, customer_id: str, count: int = 1) -> None:
        self.inflight -= count
        before = self._per_customer[customer_id]
        mine = before - count
        self._move(before, mine)
        if mine:
            self._per_customer[customer_id] = mine
        else:
            del self._per_customer[customer_id]

    def _sheds(self, mine_after: int) -> bool:
        heaviest = max(self._customers_at, default=0)
        return heaviest <= light_inflight_max or mine_after > heaviest // 2

    def _move(self, before: int, after: int) -> None:
        levels = self._customers_at
        if before:
            levels[before] -= 1
            if not levels[before]:
                del levels[before]
        if after:
            levels[after] += 1

    def _reject(self, code: str, message: str) -> None:
        self._on_reject()
        raise ApiError(429, code, message, retry_after_s=RETRY_AFTER_S)

    def observe_loop_lag(self, lag_s: float) -> None:
        self.loop_lag_s += LOOP_LAG_WEIGHT * (max(0.0, lag_s) - self.loop_lag_s)
        self.latency_limit.adapt(self.inflight)


async def watch_loop_lag(admission: Admission, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
    """Measure how late the event loop runs a timer, forever: the cheapest
    signal that it has more ready work than it can do (toobusy-style)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        admission.observe_loop_lag(loop.time() - due)
