"""Start-up and stop of the composed service: a stop whose step fails still
stops everything else and then raises; a start that fails after the tree came
up takes the tree down again. What a user notices: the data dir's lock is
free (another server can start on it), and no thread or signing process of
the failed service is left running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import gateway.compose
from gateway.compose import build_runtime
from gateway.settings import Settings
from gateway.storage import LEDGER_FILE, open_store
from supervisor import ActorScheduler
from tests.integration.conftest import base_settings

SETTLE_S = 10.0


def _child_pids() -> set[int]:
    """This process's child processes (the signing processes among them)."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


def _gone(threads_before: set[threading.Thread], children_before: set[int]) -> bool:
    """Every thread and child process started since `before` has ended."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        threads = {t for t in threading.enumerate() if t not in threads_before}
        if not threads and _child_pids() <= children_before:
            return True
        time.sleep(0.05)
    return False


def _data_dir_is_free(settings: Settings) -> bool:
    """Another server could open the ledger (its exclusive lock is released)."""
    try:
        open_store(f"sqlite:{settings.data_dir / LEDGER_FILE}").close()
    except Exception:
        return False
    return True


def test_a_failing_stop_step_still_stops_the_rest_then_raises(
    tmp_path: Path, signing_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = base_settings(tmp_path / "data", signing_key_file)
    threads_before, children_before = set(threading.enumerate()), _child_pids()
    runtime = build_runtime(settings)
    assert not _data_dir_is_free(settings)  # the running service holds it
    # Give the executor a thread to stop, as a request would.
    runtime.services.executor.submit(runtime.adapters.store.check_writable).result(5)

    def stop_fails(self: ActorScheduler, timeout_s: float = 5.0) -> None:
        raise RuntimeError("account threads did not stop")

    # The account scheduler stops after the tree and before the executor,
    # the signing key and the store.
    monkeypatch.setattr(ActorScheduler, "stop", stop_fails)
    with pytest.raises(RuntimeError, match="account threads did not stop"):
        runtime.stop()
    monkeypatch.undo()

    assert _data_dir_is_free(settings)
    assert not runtime.root.is_running
    # The scheduler's threads are daemons that were never started (no
    # customer charged): everything else this start made has ended.
    assert _gone(threads_before, children_before)


def test_a_start_that_fails_after_the_tree_is_up_stops_the_tree(
    tmp_path: Path, signing_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = base_settings(tmp_path / "data", signing_key_file)
    threads_before, children_before = set(threading.enumerate()), _child_pids()

    def metrics_fail(registry: object) -> None:
        raise RuntimeError("metrics could not be registered")

    # The HTTP metrics are built right after the tree started.
    monkeypatch.setattr(gateway.compose, "HttpMetrics", metrics_fail)
    with capture_logs() as logs:
        with pytest.raises(RuntimeError, match="metrics could not be registered"):
            build_runtime(settings)
        monkeypatch.undo()
        assert _gone(threads_before, children_before)  # tree, signers, writer

    # Stopped in order, not left to crash on a closed store until it gave up.
    levels = {(entry["event"], entry["log_level"]) for entry in logs}
    assert ("supervisor.child_terminated", "info") in levels
    assert not {event for event, level in levels if level in ("error", "critical")}
    assert _data_dir_is_free(settings)
    # ... and the service starts again on the same data dir.
    runtime = build_runtime(settings)
    try:
        assert runtime.root.is_running
    finally:
        runtime.stop()
