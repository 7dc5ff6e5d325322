"""CPU time by thread and of child processes, as Prometheus counters.

Why: a charge passes through the event loop, the account scheduler threads,
the signer threads and signing processes, the ledger writer and the archive
feed. `process_cpu_seconds_total` cannot say which of them a busy machine
spends its time on, and `top -H` shows every Python thread as "python". These
counters can (and `loadtest.bench` divides them by the charges of a phase).

Linux only (read from /proc at scrape time, nothing on the hot path); elsewhere
the families are empty. Threads with the same name but a number (`signer-0`,
`signer-1`) are summed under one name. A thread that ended takes its CPU time
with it, so a rate over a restart can dip; the long-lived threads of the
charge path do not end.
"""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_TASKS = Path("/proc/self/task")
_NUMBERED = re.compile(r"[-_ ]\d+$")
# Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted after the
# command name, which is in parentheses and may itself hold spaces.
_UTIME_AFTER_NAME = 11


def thread_group(name: str) -> str:
    """`signer-0` and `signer-1` are both `signer`; pykka's `Actor-3 (urn:…)` is `Actor`."""
    name = name.split(" (", 1)[0]
    return _NUMBERED.sub("", name) or name


def stat_cpu_seconds(stat_path: Path) -> float | None:
    """User plus system CPU seconds from a /proc stat file; None if it is gone."""
    try:
        text = stat_path.read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    try:
        ticks = int(fields[_UTIME_AFTER_NAME]) + int(fields[_UTIME_AFTER_NAME + 1])
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def child_pids() -> list[int]:
    """This process's direct children (any of its threads may have started them)."""
    pids: list[int] = []
    try:
        tasks = list(_TASKS.iterdir())
    except OSError:
        return pids
    for task in tasks:
        try:
            pids.extend(int(pid) for pid in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return pids


def child_name(pid: int) -> str:
    """`python -m crypto.sign_worker` is `crypto.sign_worker`; else the program's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "unknown"
    words = [word.decode(errors="replace") for word in argv if word]
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    return os.path.basename(words[0]) if words else "unknown"


class ThreadCpuCollector(Collector):
    """`billing_thread_cpu_seconds_total{thread}` and
    `billing_child_process_cpu_seconds_total{process}`."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield _family(
            "billing_thread_cpu_seconds",
            "CPU seconds of this process's live threads, by thread name"
            " (the event loop runs on MainThread).",
            "thread",
            self._threads(),
        )
        yield _family(
            "billing_child_process_cpu_seconds",
            "CPU seconds of this process's live child processes (the signing processes).",
            "process",
            self._children(),
        )

    def _threads(self) -> dict[str, float]:
        return _summed(
            (thread_group(thread.name), _TASKS / str(thread.native_id) / "stat")
            for thread in threading.enumerate()
            if thread.native_id is not None
        )

    def _children(self) -> dict[str, float]:
        return _summed((child_name(pid), Path(f"/proc/{pid}/stat")) for pid in child_pids())


def _summed(stats: Iterable[tuple[str, Path]]) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for name, stat_path in stats:
        value = stat_cpu_seconds(stat_path)
        if value is not None:
            seconds[name] += value
    return dict(seconds)


def _family(
    name: str, help_text: str, label: str, seconds: dict[str, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for value_name, value in sorted(seconds.items()):
        family.add_metric([value_name], value)
    return family
