"""Admission control: a bounded number of charges in flight, globally and per
customer, and fewer while the event loop itself is saturated (heaviest
customers shed first). Past a bound the
gateway answers 429 with Retry-After at once instead of queueing without
limit (shed load, never collapse).

Used only from the event loop thread, so plain integers suffice.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from gateway.errors import ApiError
from ledger import limits

RETRY_AFTER_S = 1
LOOP_LAG_INTERVAL_S = 0.01
# Smoothing of the lag samples (one per interval): a single slow callback or
# GC pause moves the average by a tenth; sustained saturation crosses it.
LOOP_LAG_WEIGHT = 0.1
# In flight per customer up to which nobody counts as heavy (see refuse_if_saturated).
LIGHT_INFLIGHT_MAX = 4


class Admission:
    def __init__(
        self,
        inflight_max: int,
        customer_inflight_max: int,
        on_reject: Callable[[], None] = lambda: None,
        loop_lag_max_s: float = float("inf"),
        lagging_inflight_max: int = limits.lagging_inflight_max,
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
        if (
            self.loop_lag_s > self.loop_lag_max_s
            and self.inflight + count > self.lagging_inflight_max
            and self._sheds(mine + count)
        ):
            # Shed the heaviest customers first: while one customer has many
            # charges in flight, a customer with fewer than half as many is
            # still served, so one customer flooding cannot get everyone shed.
            # When every customer is light, anyone past the bound is shed.
            self._reject(
                "customer_overloaded",
                "the service is saturated and this customer has more than its share"
                " in flight; retry after the delay",
            )

    def enter(self, customer_id: str, count: int = 1) -> None:
        """Take `count` slots for this customer or raise a 429 ApiError."""
        self.refuse_if_saturated(customer_id, count)
        mine = self._per_customer.get(customer_id, 0)
        self._move(mine, mine + count)
        self.inflight += count
        self._per_customer[customer_id] = mine + count

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
        return heaviest <= LIGHT_INFLIGHT_MAX or mine_after > heaviest // 2

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


async def watch_loop_lag(admission: Admission, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
    """Measure how late the event loop runs a timer, forever: the cheapest
    signal that it has more ready work than it can do (toobusy-style)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        admission.observe_loop_lag(loop.time() - due)
