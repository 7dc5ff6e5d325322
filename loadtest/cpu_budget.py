"""Where a phase's CPU went, per charge: the service's threads and signing
processes (its `billing_*_cpu_seconds_total` counters) and the load generator
(this process and the wrk runs it waited for).

Why: on a machine whose two CPUs the service, its signing processes and the
generator share, the CPU each charge costs is what bounds throughput; this
prints that cost by part, so a change can be judged by it and not only by a
noisy rate.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

_THREAD_SAMPLE = "billing_thread_cpu_seconds_total"
_CHILD_SAMPLE = "billing_child_process_cpu_seconds_total"
GENERATOR = "load generator"
scrape_timeout_s = 10.0
# Parts are shown in this order, then any others by cost.
_KNOWN_ORDER = (
    "MainThread",
    "accounts",
    "signer",
    "crypto.sign_worker",
    "ledger-writer",
    "archive-feed",
    "outbox-relay",
    GENERATOR,
)


@dataclass(frozen=True)
class CpuSample:
    taken_at_s: float  # time.monotonic() when scraped
    seconds_by_part: dict[str, float]


def parse_cpu_seconds(metrics_text: str) -> dict[str, float]:
    """The service's CPU seconds by thread name and child process name."""
    seconds: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == _THREAD_SAMPLE:
                seconds[sample.labels["thread"]] = sample.value
            elif sample.name == _CHILD_SAMPLE:
                seconds[sample.labels["process"]] = sample.value
    return seconds


def generator_cpu_s() -> float:
    """CPU of this process and of the children it has waited for (wrk)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def sample(service_url: str) -> CpuSample | None:
    """None if /metrics cannot be read: the bench then reports no budget."""
    try:
        with urllib.request.urlopen(f"{service_url}/metrics", timeout=scrape_timeout_s) as answer:
            seconds = parse_cpu_seconds(answer.read().decode())
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return None
    seconds[GENERATOR] = generator_cpu_s()
    return CpuSample(time.monotonic(), seconds)


@dataclass(frozen=True)
class CpuBudget:
    """One phase's CPU: microseconds per charge by part, and CPUs busy."""

    phase: str
    charges: int
    wall_s: float
    us_per_charge: dict[str, float]

    @property
    def total_us(self) -> float:
        return sum(self.us_per_charge.values())

    @property
    def cpus_busy(self) -> float:
        return self.total_us * self.charges / 1e6 / self.wall_s if self.wall_s else 0.0

    def charges_per_s_max(self, cpus: int) -> float:
        """What `cpus` allow at this cost per charge, with nothing else running."""
        return cpus * 1e6 / self.total_us if self.total_us else 0.0


def budget(
    phase: str, before: CpuSample | None, after: CpuSample | None, charges: int
) -> CpuBudget | None:
    """None without charges (a cost per charge needs some) or without samples."""
    if charges <= 0 or before is None or after is None:
        return None
    us: dict[str, float] = {}
    for part, seconds in after.seconds_by_part.items():
        spent_s = seconds - before.seconds_by_part.get(part, 0.0)
        if spent_s > 0:
            us[part] = spent_s * 1e6 / charges
    return CpuBudget(phase, charges, after.taken_at_s - before.taken_at_s, us)


def format_budgets(budgets: Sequence[CpuBudget], cpus: int) -> str:
    """A table: one row per part, one column per phase."""
    parts = [p for p in _KNOWN_ORDER if any(p in b.us_per_charge for b in budgets)]
    others = {p for b in budgets for p in b.us_per_charge if p not in _KNOWN_ORDER}
    parts += sorted(others, key=lambda p: -max(b.us_per_charge.get(p, 0.0) for b in budgets))
    label = "CPU us per charge"
    width = max(12, *(len(b.phase) + 2 for b in budgets))  # a column fits its phase's name
    lines = [f"{label:<22}" + "".join(f"{b.phase:>{width}}" for b in budgets)]
    lines.append("-" * len(lines[0]))
    for part in parts:
        lines.append(
            f"{part:<22}"
            + "".join(f"{b.us_per_charge.get(part, 0.0):>{width}.0f}" for b in budgets)
        )
    lines.append("-" * len(lines[0]))
    lines.append(f"{'total':<22}" + "".join(f"{b.total_us:>{width}.0f}" for b in budgets))
    busy = "".join(f"{b.cpus_busy:>{width}.2f}" for b in budgets)
    lines.append(f"{f'CPUs busy (of {cpus})':<22}{busy}")
    ceiling = "".join(f"{b.charges_per_s_max(cpus):>{width}.0f}" for b in budgets)
    lines.append(f"{f'{cpus} CPUs allow /s':<22}{ceiling}")
    return "\n".join(lines)
