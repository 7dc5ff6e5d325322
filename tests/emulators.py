"""The official Google Cloud emulators as session-scoped pytest fixtures.

Each fixture starts its emulator on a free port the first time a test asks
for it, waits until it answers, sets the `*_EMULATOR_HOST` variable the google
clients read when they are constructed, yields `127.0.0.1:PORT`, and at the
end of the session stops the whole process group (gcloud starts a JVM child
that would otherwise outlive it).

A missing Google Cloud CLI FAILS the fixture: CI must notice that emulator
tests did not run, so nothing here skips.

Use from a conftest: `pytest_plugins = ["tests.emulators"]`. The plain
`start_*` functions serve scripts such as `loadtest.bench_spanner`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

__all__ = [
    "EmulatorMissing",
    "EmulatorProcess",
    "firestore_emulator",
    "pubsub_emulator",
    "spanner_emulator",
    "start_firestore",
    "start_pubsub",
    "start_spanner",
    "start_storage",
    "storage_emulator",
]

startup_timeout_s = 90.0
stop_timeout_s = 10.0
_probe_timeout_s = 1.0
_poll_interval_s = 0.2

# gcloud must neither prompt nor try the network to look for updates.
_GCLOUD_ENV = {
    "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
    "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
}


class EmulatorMissing(RuntimeError):
    """The Google Cloud CLI (or one of its emulator components) is not installed."""


@dataclass
class EmulatorProcess:
    name: str
    host_port: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process group, wait, then SIGKILL it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=stop_timeout_s)
        # Children (the JVM under gcloud) may ignore the parent's exit.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=stop_timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorMissing(
            "the Google Cloud CLI (`gcloud`) is not on PATH: install it with the "
            "spanner, firestore and pubsub emulator components to run emulator tests"
        )
    return gcloud


def _sdk_root() -> Path:
    """The SDK root: from gcloud's resolved path, else `gcloud info`."""
    gcloud = _gcloud()
    root = Path(gcloud).resolve().parent.parent
    if (root / "bin").is_dir() and (root / "bin" / "gcloud").exists():
        return root
    result = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **_GCLOUD_ENV},
        check=False,
    )
    text = result.stdout.strip()
    if result.returncode != 0 or not text:
        raise EmulatorMissing(f"`gcloud info` could not locate the SDK: {result.stderr.strip()}")
    return Path(text)


def _spanner_binary() -> Path:
    binary = _sdk_root() / "bin" / "cloud_spanner_emulator" / "emulator_main"
    if not binary.exists():
        raise EmulatorMissing(
            "the Cloud Spanner emulator is not installed "
            "(`gcloud components install cloud-spanner-emulator`)"
        )
    return binary


def _tcp_ready(host_port: str) -> bool:
    host, port = host_port.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=_probe_timeout_s):
            return True
    except OSError:
        return False


def _http_ready(url: str) -> Callable[[str], bool]:
    def probe(host_port: str) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{host_port}{url}", timeout=_probe_timeout_s
            ) as response:
                return int(response.status) < 500
        except urllib.error.HTTPError as error:
            return error.code < 500
        except OSError:
            return False

    return probe


def _start(
    name: str,
    argv: list[str],
    port: int,
    ready: Callable[[str], bool],
    log_dir: Path | None = None,
) -> EmulatorProcess:
    host_port = f"127.0.0.1:{port}"
    directory = log_dir or Path(tempfile.mkdtemp(prefix=f"{name}-emulator-"))
    log_path = directory / f"{name}-emulator.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=directory,
        env={**os.environ, **_GCLOUD_ENV},
        start_new_session=True,  # its own process group: stop() kills the JVM too
    )
    emulator = EmulatorProcess(name, host_port, process, log_path, log)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            emulator.stop()
            raise RuntimeError(
                f"the {name} emulator exited with {process.returncode}:\n{emulator.log_tail()}"
            )
        if ready(host_port):
            return emulator
        time.sleep(_poll_interval_s)
    emulator.stop()
    raise RuntimeError(
        f"the {name} emulator did not answer on {host_port} within "
        f"{startup_timeout_s:.0f}s:\n{emulator.log_tail()}"
    )


def start_spanner(log_dir: Path | None = None) -> EmulatorProcess:
    # The emulator binary itself: no gcloud wrapper, no REST gateway, faster start.
    port = free_port()
    argv = [str(_spanner_binary()), f"--host_port=127.0.0.1:{port}"]
    return _start("spanner", argv, port, _tcp_ready, log_dir)


def start_firestore(log_dir: Path | None = None) -> EmulatorProcess:
    port = free_port()
    argv = [_gcloud(), "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]
    return _start("firestore", argv, port, _http_ready("/"), log_dir)


def start_pubsub(log_dir: Path | None = None) -> EmulatorProcess:
    port = free_port()
    argv = [_gcloud(), "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}"]
    return _start("pubsub", argv, port, _http_ready("/"), log_dir)


def start_storage(log_dir: Path | None = None) -> EmulatorProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        "--in-memory",
    ]
    return _start("storage", argv, port, _http_ready("/storage/v1/b"), log_dir)


@dataclass
class _Shared:
    emulator: EmulatorProcess
    previous_env: str | None
    users: int = 0


# Several conftests import these fixtures (tests/gcp, tests/contract); pytest
# then sees one session fixture per conftest. They share one process each.
_shared: dict[str, _Shared] = {}


def _fixture(
    starter: Callable[[Path | None], EmulatorProcess],
    env_var: str,
    tmp_path_factory: pytest.TempPathFactory,
    scheme: str = "",
) -> Iterator[str]:
    shared = _shared.get(env_var)
    if shared is None:
        try:
            emulator = starter(tmp_path_factory.mktemp(env_var.lower()))
        except EmulatorMissing as error:
            pytest.fail(f"{env_var}: {error}", pytrace=False)
        shared = _shared[env_var] = _Shared(emulator, os.environ.get(env_var))
        os.environ[env_var] = scheme + emulator.host_port
    shared.users += 1
    try:
        yield shared.emulator.host_port
    finally:
        shared.users -= 1
        if shared.users == 0:
            del _shared[env_var]
            if shared.previous_env is None:
                os.environ.pop(env_var, None)
            else:
                os.environ[env_var] = shared.previous_env
            shared.emulator.stop()


@pytest.fixture(scope="session")
def spanner_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Cloud Spanner emulator; SPANNER_EMULATOR_HOST points at it."""
    yield from _fixture(start_spanner, "SPANNER_EMULATOR_HOST", tmp_path_factory)


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Firestore emulator; FIRESTORE_EMULATOR_HOST points at it."""
    yield from _fixture(start_firestore, "FIRESTORE_EMULATOR_HOST", tmp_path_factory)


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Pub/Sub emulator; PUBSUB_EMULATOR_HOST points at it."""
    yield from _fixture(start_pubsub, "PUBSUB_EMULATOR_HOST", tmp_path_factory)


@pytest.fixture(scope="session")
def storage_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of gcp-storage-emulator; STORAGE_EMULATOR_HOST points at it
    (with `http://`: the storage client, unlike the others, wants a scheme)."""
    yield from _fixture(start_storage, "STORAGE_EMULATOR_HOST", tmp_path_factory, "http://")
