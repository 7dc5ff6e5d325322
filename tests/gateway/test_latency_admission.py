"""Past its floor, admission bounds charges in flight by latency: while the
charges it admitted take longer than the target, it admits fewer, so under
overload the accepted ones are answered fast and the rest get a 429 at once
instead of all of them waiting ~1,000 / throughput."""

from __future__ import annotations

import pytest

from gateway.admission import LATENCY_WINDOW_S, Admission, LatencyLimit
from gateway.errors import ApiError
from gateway.settings import SettingsError, from_environment


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000.0

    def __call__(self) -> float:
        return self.now_s


def complete(limit: LatencyLimit, clock: Clock, charges: int, latency_s: float) -> None:
    """`charges` charges that each took `latency_s`, then the window ends."""
    for _ in range(charges):
        started = limit.start()
        clock.now_s += latency_s
        limit.finish(started)
        clock.now_s -= latency_s
    clock.now_s += LATENCY_WINDOW_S
    limit.adapt(inflight=0)


def test_slow_charges_shrink_the_bound_to_its_floor_and_fast_ones_grow_it_back() -> None:
    clock = Clock()
    limit = LatencyLimit(target_s=0.05, floor=128, ceiling=1_000, clock=clock)
    complete(limit, clock, 50, latency_s=0.2)
    assert limit.limit == 500  # 4x over the target: at most halved per window
    complete(limit, clock, 50, latency_s=0.075)
    assert limit.limit == pytest.approx(500 * 0.05 / 0.075)
    for _ in range(5):
        complete(limit, clock, 50, latency_s=0.2)
    assert limit.limit == 128
    for _ in range(30):
        complete(limit, clock, 50, latency_s=0.01)
    assert limit.limit == 1_000


def test_a_queue_is_seen_forming_before_any_of_its_charges_completes() -> None:
    clock = Clock()
    limit = LatencyLimit(target_s=0.05, floor=10, ceiling=1_000, clock=clock)
    for _ in range(300):
        limit.start()
    clock.now_s += LATENCY_WINDOW_S  # none answered yet: mean age 0.1 s
    limit.adapt(inflight=300)
    assert limit.limit == 500


def halved() -> tuple[Clock, LatencyLimit]:
    """A limit after one window of charges 20x over the target."""
    clock = Clock()
    limit = LatencyLimit(target_s=0.05, floor=10, ceiling=1_000, clock=clock)
    complete(limit, clock, 10, latency_s=1.0)
    assert limit.limit == 500
    return clock, limit


def test_a_window_with_nothing_in_flight_restores_the_full_bound() -> None:
    clock, limit = halved()
    clock.now_s += LATENCY_WINDOW_S
    limit.adapt(inflight=0)
    assert limit.limit == 1_000


def test_it_acts_once_per_window() -> None:
    clock, limit = halved()
    for _ in range(10):  # loop-lag ticks within the same window
        started = limit.start()
        clock.now_s += 0.001
        limit.finish(started)
        limit.adapt(inflight=0)
    assert limit.limit == 500


def test_past_the_bound_the_heaviest_customer_is_shed_and_a_light_one_served() -> None:
    admission = Admission(1_000, 128, latency_target_s=0.05, latency_inflight_min=6)
    clock = Clock()
    admission.latency_limit = LatencyLimit(0.05, floor=6, ceiling=1_000, clock=clock)
    for _ in range(10):
        complete(admission.latency_limit, clock, 20, latency_s=0.5)
    assert admission.saturation_bound() == 6
    for _ in range(6):
        admission.enter("cus_heavy")
    with pytest.raises(ApiError) as refused:
        admission.enter("cus_heavy")
    assert (refused.value.status, refused.value.code) == (429, "customer_overloaded")
    assert refused.value.retry_after_s == 1
    admission.enter("cus_light")  # fewer than half the heaviest's share
    assert admission.inflight == 7


def test_a_timed_charge_gives_its_slot_back_and_reports_its_latency() -> None:
    admission = Admission(1_000, 128)
    started = admission.enter_timed("cus_a")
    assert admission.inflight == 1
    latency_s = admission.leave_timed("cus_a", started)
    assert admission.inflight == 0 and 0 <= latency_s < 1


def test_the_loop_lag_bound_applies_below_the_latency_bound() -> None:
    admission = Admission(1_000, 128, loop_lag_max_s=0.04, lagging_inflight_max=256)
    assert admission.saturation_bound() == 1_000
    for _ in range(40):
        admission.observe_loop_lag(0.2)
    assert admission.saturation_bound() == 256


def test_the_target_is_a_setting_and_must_be_positive() -> None:
    settings = from_environment({"BILLING_ADMISSION_LATENCY_TARGET_MS": "80"})
    assert settings.admission_latency_target_ms == 80
    with pytest.raises(SettingsError, match="BILLING_ADMISSION_LATENCY_TARGET_MS"):
        from_environment({"BILLING_ADMISSION_LATENCY_TARGET_MS": "0"})


def test_the_floor_is_the_configured_customer_bound() -> None:
    # BILLING_CUSTOMER_INFLIGHT_MAX=32: one customer's full share still fits.
    admission = Admission(1_000, 32, latency_target_s=0.05)
    clock = Clock()
    admission.latency_limit = LatencyLimit(0.05, admission.latency_limit.floor, 1_000, clock=clock)
    for _ in range(10):
        complete(admission.latency_limit, clock, 20, latency_s=0.5)
    assert admission.saturation_bound() == 32
