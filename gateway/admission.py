"""Admission control: a bounded number of charges in flight, globally and per
customer. Past the bound the gateway answers 429 with Retry-After at once
instead of queueing without limit (shed load, never collapse).

Used only from the event loop thread, so plain integers suffice.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.errors import ApiError

RETRY_AFTER_S = 1


class Admission:
    def __init__(
        self,
        inflight_max: int,
        customer_inflight_max: int,
        on_reject: Callable[[], None] = lambda: None,
    ) -> None:
        self.inflight_max = inflight_max
        self.customer_inflight_max = customer_inflight_max
        self.inflight = 0
        self._per_customer: dict[str, int] = {}
        self._on_reject = on_reject  # counts rejections (a Prometheus counter)

    def enter(self, customer_id: str, count: int = 1) -> None:
        """Take `count` slots for this customer or raise a 429 ApiError."""
        if self.inflight + count > self.inflight_max:
            self._on_reject()
            raise ApiError(
                429,
                "overloaded",
                "too many charges in flight; retry after the delay",
                retry_after_s=RETRY_AFTER_S,
            )
        mine = self._per_customer.get(customer_id, 0)
        if mine + count > self.customer_inflight_max:
            self._on_reject()
            raise ApiError(
                429,
                "customer_overloaded",
                "too many charges in flight for this customer; retry after the delay",
                retry_after_s=RETRY_AFTER_S,
            )
        self.inflight += count
        self._per_customer[customer_id] = mine + count

    def leave(self, customer_id: str, count: int = 1) -> None:
        self.inflight -= count
        mine = self._per_customer[customer_id] - count
        if mine:
            self._per_customer[customer_id] = mine
        else:
            del self._per_customer[customer_id]
