"""Prometheus counters, one set per registry."""

from __future__ import annotations

import threading
import weakref
from typing import NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter

__all__ = ["Metrics", "metrics_for"]


class Metrics(NamedTuple):
    """The counters a supervisor updates."""

    restarts: Counter
    """Child restarts, labelled by supervisor and child."""
    escalations: Counter
    """Restart intensity exceeded, labelled by supervisor and the child whose exit tipped it."""


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry | None) -> Metrics:
    """The counters registered in `registry` (the global registry if None), made once."""
    target = REGISTRY if registry is None else registry
    with _lock:
        found = _by_registry.get(target)
        if found is None:
            found = Metrics(
                restarts=Counter(
                    "supervisor_child_restarts",
                    "Children restarted by a supervisor.",
                    ["supervisor", "child"],
                    registry=target,
                ),
                escalations=Counter(
                    "supervisor_escalations",
                    "Times a supervisor exceeded its restart intensity and failed upward.",
                    ["supervisor", "child"],
                    registry=target,
                ),
            )
            _by_registry[target] = found
        return found
