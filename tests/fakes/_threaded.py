"""Run an aiohttp app on 127.0.0.1 in its own thread and event loop.

Why a thread: the code under test calls these fakes with blocking clients
(stripe's requests client, urllib) from worker threads and from plain test
functions; a fake on the test's own loop would deadlock against them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Final

from aiohttp import web

START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0


class ThreadedServer:
    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                runner = web.AppRunner(self._app, access_log=None)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                server = site._server
                assert server is not None
                self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                self._runner = runner
            except BaseException as error:
                errors.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-http", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("fake server did not start")
        if errors:
            raise errors[0]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT_S)
        self._thread = None
