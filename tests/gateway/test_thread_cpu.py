"""CPU by thread and child process, as an SRE reads it from /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.thread_cpu import ThreadCpuCollector, stat_cpu_seconds, thread_group
from loadtest.cpu_budget import parse_cpu_seconds

REPO = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")


def _scrape() -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(ThreadCpuCollector())
    return parse_cpu_seconds(generate_latest(registry).decode())


def test_numbered_threads_share_a_name() -> None:
    assert thread_group("signer-0") == thread_group("signer-11") == "signer"
    assert thread_group("blocking_3") == "blocking"
    assert thread_group("MainThread") == "MainThread"
    assert thread_group("ledger-writer") == "ledger-writer"
    assert thread_group("StripeSyncActor-2 (urn:uuid:1234)") == "StripeSyncActor"


def test_stat_file_with_spaces_and_parentheses_in_the_name(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # pid (comm) state ppid ... then utime=250 stime=50 ticks (fields 14, 15)
    stat.write_text("42 (a (b) c) S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0\n")
    assert stat_cpu_seconds(stat) == pytest.approx(300 / os.sysconf("SC_CLK_TCK"))
    assert stat_cpu_seconds(tmp_path / "gone") is None


@linux_only
def test_a_busy_thread_shows_its_cpu_under_its_name() -> None:
    release = threading.Event()
    spun = [threading.Event() for _ in range(2)]

    def burn(done: threading.Event) -> None:
        deadline = time.thread_time() + 0.3
        while time.thread_time() < deadline:
            pass
        done.set()
        release.wait(10)  # alive (and listed) until scraped

    threads = [
        threading.Thread(target=burn, args=(done,), name=f"burner-{i}")
        for i, done in enumerate(spun)
    ]
    for thread in threads:
        thread.start()
    try:
        assert all(done.wait(30) for done in spun)
        seconds = _scrape()
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert seconds["burner"] >= 0.5  # both threads, summed under one name
    assert "MainThread" in seconds


@linux_only
def test_a_child_process_shows_its_cpu_under_its_module() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway._cpu_child"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == b"spun\n"
        seconds = _scrape()
    finally:
        child.stdin.close()
        child.wait(10)
    assert seconds["tests.gateway._cpu_child"] >= 0.25
    # Once it has exited and been waited for, it is no longer listed.
    assert "tests.gateway._cpu_child" not in _scrape()
