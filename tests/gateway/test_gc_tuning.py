"""The serving process's collector settings (see gateway.gc_tuning)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.gc_tuning import tune_gc_for_serving
from ledger.limits import gc_young_allocations_max


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_serving_freezes_start_up_objects_and_collects_young_ones_rarely() -> None:
    tune_gc_for_serving()
    assert gc.get_freeze_count() > 0  # what start-up built is out of the way
    assert gc.get_threshold()[0] == gc_young_allocations_max

    collections_before = gc.get_stats()[0]["collections"]
    # What a thousand requests in flight hold at once (~100 containers each),
    # then free: under CPython's default (700) this ran 128 young collections.
    for _ in range(10):
        held = [{"event": [i]} for i in range(5_000)]
        del held
    assert gc.get_stats()[0]["collections"] - collections_before <= 1


class _Node:
    other: object


def _garbage_cycle() -> None:
    first, second = _Node(), _Node()
    first.other, second.other = second, first


@pytest.mark.usefixtures("restored_gc")
def test_cyclic_garbage_is_still_collected_without_an_explicit_collect() -> None:
    tune_gc_for_serving()
    collected: list[str] = []
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    weakref.finalize(first, collected.append, "cycle")
    del first, second
    for _ in range(gc_young_allocations_max):  # more garbage, never freed by refcount
        _garbage_cycle()
    assert collected == ["cycle"]
