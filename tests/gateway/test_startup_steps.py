"""Start-up steps unwind in reverse, every undo runs, the first error is raised
last (aiohttp's cleanup_ctx). Real resources: a listening socket and a file."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import IO

import pytest
from structlog.testing import capture_logs

from gateway.startup import Step, Steps


def _listening() -> Step[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def _open_file(path: Path) -> Step[IO[str]]:
    handle = path.open("w")
    yield handle
    handle.close()


def _failing_undo(message: str, undone: list[str]) -> Step[None]:
    yield None
    undone.append(message)
    raise OSError(message)


def _port_is_free(port: int) -> bool:
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True


def test_a_failing_undo_does_not_stop_the_undos_after_it(tmp_path: Path) -> None:
    steps = Steps()
    undone: list[str] = []
    sock = steps.enter("listener", _listening())
    port = sock.getsockname()[1]
    steps.enter("first failure", _failing_undo("first to start", undone))
    handle = steps.enter("file", _open_file(tmp_path / "held"))
    steps.enter("second failure", _failing_undo("last to start", undone))

    with capture_logs() as logs, pytest.raises(OSError, match="last to start"):
        steps.unwind()

    # Both failing undos ran, in reverse order, and so did every other one.
    assert undone == ["last to start", "first to start"]
    assert handle.closed
    assert _port_is_free(port)
    failed = [entry["step"] for entry in logs if entry["event"] == "runtime.undo_failed"]
    assert failed == ["second failure", "first failure"]


def test_unwinding_twice_undoes_each_step_once() -> None:
    steps = Steps()
    undone: list[str] = []
    steps.enter("failing", _failing_undo("once", undone))
    with pytest.raises(OSError):
        steps.unwind()
    steps.unwind()  # nothing left: no second undo, no error
    assert undone == ["once"]


def test_a_failed_start_unwinds_what_started_and_raises_the_start_error(
    tmp_path: Path,
) -> None:
    def broken() -> Step[None]:
        raise ValueError("cannot start")
        yield None  # a generator: never reached

    steps = Steps()
    undone: list[str] = []
    with pytest.raises(ValueError, match="cannot start"), steps.starting():
        sock = steps.enter("listener", _listening())
        steps.enter("failing undo", _failing_undo("undo failed too", undone))
        steps.enter("broken", broken())
    # The step that never started is not undone; those before it are, even
    # past a failing undo; the start's error is the one the caller sees.
    assert undone == ["undo failed too"]
    assert sock.fileno() == -1
