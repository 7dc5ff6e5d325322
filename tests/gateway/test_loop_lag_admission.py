"""Admission sheds load while the event loop is saturated: the in-flight
bound cannot see requests that wait in the kernel for a busy loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.admission import Admission, watch_loop_lag
from gateway.errors import ApiError


def test_a_lagging_loop_gets_429_past_a_few_in_flight_and_admits_again_once_recovered() -> None:
    rejected: list[int] = []
    admission = Admission(
        1_000,
        128,
        on_reject=lambda: rejected.append(1),
        loop_lag_max_s=0.04,
        lagging_inflight_max=3,
    )
    for _ in range(30):
        admission.observe_loop_lag(0.2)
    for _ in range(3):  # the pipeline is kept busy even while the loop lags
        admission.enter("cus_a")
    with pytest.raises(ApiError) as refused:
        admission.enter("cus_b")
    assert (refused.value.status, refused.value.code) == (429, "overloaded")
    assert refused.value.retry_after_s == 1
    assert admission.inflight == 3 and rejected == [1]

    for _ in range(60):
        admission.observe_loop_lag(0.0)
    admission.enter("cus_b")
    assert admission.inflight == 4


def test_one_slow_callback_alone_does_not_shed() -> None:
    admission = Admission(1_000, 128, loop_lag_max_s=0.04, lagging_inflight_max=0)
    for _ in range(20):
        admission.observe_loop_lag(0.002)
    admission.observe_loop_lag(0.2)  # a GC pause
    admission.enter("cus_a")


async def test_the_watcher_sees_a_blocked_loop() -> None:
    admission = Admission(1_000, 128, loop_lag_max_s=0.04, lagging_inflight_max=0)
    watcher = asyncio.create_task(watch_loop_lag(admission, interval_s=0.005))
    try:
        await asyncio.sleep(0.05)
        assert admission.loop_lag_s < 0.04
        for _ in range(10):  # the loop busy 100 ms at a time
            time.sleep(0.1)
            await asyncio.sleep(0)
        assert admission.loop_lag_s > 0.04
        with pytest.raises(ApiError):
            admission.enter("cus_a")
    finally:
        watcher.cancel()
