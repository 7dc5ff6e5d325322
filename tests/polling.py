"""Waiting, boundedly, for something another thread does."""

from __future__ import annotations

import time
from collections.abc import Callable

poll_interval_s = 0.05


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """True as soon as `predicate()` is; its last answer once `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_interval_s)
    return predicate()
