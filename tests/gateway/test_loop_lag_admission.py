"""Admission sheds load while the event loop is saturated - the in-flight
bound cannot see requests that wait in the kernel for a busy loop - and sheds
the heaviest customers first, so one customer flooding cannot get the others
refused."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.admission import Admission, watch_loop_lag
from gateway.errors import ApiError


def _lagging(admission: Admission, lag_s: float = 0.2) -> None:
    for _ in range(40):
        admission.observe_loop_lag(lag_s)


def test_a_lagging_loop_refuses_the_heavy_customer_and_serves_a_light_one() -> None:
    rejected: list[int] = []
    admission = Admission(
        1_000,
        128,
        on_reject=lambda: rejected.append(1),
        loop_lag_max_s=0.04,
        lagging_inflight_max=6,
    )
    _lagging(admission)
    for _ in range(6):  # the pipeline is kept busy even while the loop lags
        admission.enter("cus_heavy")
    with pytest.raises(ApiError) as refused:
        admission.enter("cus_heavy")
    assert (refused.value.status, refused.value.code) == (429, "customer_overloaded")
    assert refused.value.retry_after_s == 1
    admission.enter("cus_light")  # below half of the heaviest customer's share
    assert admission.inflight == 7 and rejected == [1]

    _lagging(admission, 0.0)
    admission.enter("cus_heavy")  # recovered: only the ordinary bounds apply
    assert admission.inflight == 8


def test_when_every_customer_is_light_anyone_past_the_bound_is_shed() -> None:
    admission = Admission(1_000, 128, loop_lag_max_s=0.04, lagging_inflight_max=3)
    _lagging(admission)
    for customer in ("cus_a", "cus_b", "cus_c"):
        admission.enter(customer)
    with pytest.raises(ApiError) as refused:
        admission.enter("cus_new")
    assert refused.value.status == 429
    assert admission.inflight == 3


def test_one_customer_flooding_under_lag_does_not_get_a_calm_one_refused() -> None:
    admission = Admission(1_000, 128, loop_lag_max_s=0.04, lagging_inflight_max=64)
    _lagging(admission)
    flooded = 0
    for _ in range(400):
        try:
            admission.enter("cus_flood")
            flooded += 1
        except ApiError:
            pass
    for _ in range(10):
        admission.enter("cus_calm")
    assert 64 <= flooded <= 128
    for _ in range(flooded):
        admission.leave("cus_flood")
    for _ in range(10):
        admission.leave("cus_calm")
    assert admission.inflight == 0


def test_one_slow_callback_alone_does_not_shed() -> None:
    admission = Admission(1_000, 128, loop_lag_max_s=0.04, lagging_inflight_max=0)
    for _ in range(20):
        admission.observe_loop_lag(0.002)
    admission.observe_loop_lag(0.2)  # a GC pause
    for _ in range(5):
        admission.enter("cus_a")


async def test_the_watcher_sees_a_blocked_loop() -> None:
    admission = Admission(1_000, 128, loop_lag_max_s=0.04, lagging_inflight_max=0)
    watcher = asyncio.create_task(watch_loop_lag(admission, interval_s=0.005))
    try:
        await asyncio.sleep(0.05)
        assert admission.loop_lag_s < 0.04
        admission.enter("cus_a")
        admission.enter("cus_a")
        for _ in range(10):  # the loop busy 100 ms at a time
            time.sleep(0.1)
            await asyncio.sleep(0)
        assert admission.loop_lag_s > 0.04
        with pytest.raises(ApiError):
            admission.enter("cus_a")
    finally:
        watcher.cancel()
