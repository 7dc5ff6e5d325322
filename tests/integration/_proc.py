"""Run `billing serve` as a real subprocess for process-level tests.

The server listens on 127.0.0.1 with `--port 0` (the OS picks a free port,
so parallel test runs never collide) and the URL is read from the banner it
prints once ready; then /readyz is polled. It runs in its own session so a
kill reaches the whole process group, and teardown always kills that group.
stdout and stderr go to files in the test's temp dir: nothing blocks on a
full pipe, and tests can read the structlog JSON lines afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson

from gateway.compose import Runtime
from tests.integration.conftest import ADMIN_TOKEN, Service

_URL_RE = re.compile(r"serving on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 30.0


def billing_command() -> list[str]:
    """The installed `billing` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("billing")
    if script.exists():
        return [str(script)]
    found = shutil.which("billing")
    if found:
        return [found]
    return [sys.executable, "-m", "gateway.cli"]


def server_env(key_file: Path | None, **extra: str) -> dict[str, str]:
    """A clean environment: no inherited BILLING_* setting leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(
        BILLING_SIGNER_WORKERS="2",
        BILLING_DRAIN_TIMEOUT_S="5",
        BILLING_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    if key_file is not None:
        env["BILLING_ADMIN_TOKEN"] = ADMIN_TOKEN
        env["BILLING_SIGNING_KEY_FILE"] = str(key_file)
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """One `billing serve` child process and where its output goes."""

    data_dir: Path
    env: dict[str, str]
    log_dir: Path
    args: tuple[str, ...] = ()
    name: str = "server"
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    _starts: int = field(default=0)

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self._starts}.out"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self._starts}.err"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (see `start`)."""
        self._starts += 1
        self.url = ""
        command = [
            *billing_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # its own process group, killed as one
            )
        return self.proc

    def start(
        self, timeout_s: float = START_TIMEOUT_S, *, until_ready: bool = True
    ) -> ServerProcess:
        """Spawn, read the URL from the banner, and wait until /readyz is 200
        (unless not `until_ready`: a server that must come up unready)."""
        proc = self.spawn()
        deadline = time.monotonic() + timeout_s
        while not self.url:
            if proc.poll() is not None:
                raise AssertionError(
                    f"billing serve exited {proc.returncode} before serving:\n{self.stderr()}"
                )
            match = _URL_RE.search(self.stdout())
            if match:
                self.url = match.group(1)
                break
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no banner within {timeout_s}s:\n{self.stderr()}")
            time.sleep(0.05)
        if until_ready:
            wait_ready(self.url, deadline)
        return self

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr (anything else is skipped)."""
        records = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def signal(self, signum: int) -> None:
        """Signal the main process only (as an orchestrator's SIGTERM would)."""
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)


def wait_ready(url: str, deadline: float) -> None:
    """Poll GET /readyz (plain sockets via urllib: no event loop needed)."""
    import urllib.error
    import urllib.request

    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as error:
            last = repr(error)
        time.sleep(0.05)
    raise AssertionError(f"{url}/readyz never became ready: {last}")


@contextlib.contextmanager
def running_server(
    tmp_path: Path,
    key_file: Path | None,
    *,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    name: str = "server",
    start: bool = True,
) -> Iterator[ServerProcess]:
    """A started server (unless `start=False`); killed with its group at exit."""
    server = ServerProcess(
        data_dir=tmp_path / "data",
        env=server_env(key_file, **dict(env or {})),
        log_dir=tmp_path,
        args=args,
        name=name,
    )
    try:
        if start:
            server.start()
        yield server
    finally:
        server.kill()


def remote_service(url: str, session: aiohttp.ClientSession) -> Service:
    """The charge-path helpers of conftest's `Service`, against a subprocess.

    Its helpers use only the session and the admin token; a subprocess has no
    in-process runtime, so none is given.
    """
    return Service(url=url, session=session, runtime=cast(Runtime, None))


def client_session(url: str, **connector: Any) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=200, **connector),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll an async predicate until it is true or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(await predicate())
