"""The bench's open-loop generator against a loopback server: answers are
counted by status, and requests that get no answer are counted by the kind
of failure, so a reader can tell a service's 429 from a dropped connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from loadtest.bench import open_loop


@pytest.fixture
async def flaky_server() -> AsyncIterator[str]:
    seen = 0

    async def events(request: web.Request) -> web.StreamResponse:
        nonlocal seen
        seen += 1
        await request.read()
        if seen % 4 == 0:
            assert request.transport is not None
            request.transport.close()  # hang up without an answer
            return web.Response(status=202)
        if seen % 4 == 1:
            return web.json_response({"error": {}}, status=429, headers={"Retry-After": "1"})
        return web.json_response({"receipt_id": "rcpt_x"}, status=202)

    app = web.Application()
    app.router.add_post("/v1/events", events)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_statuses_and_failure_kinds_are_counted(flaky_server: str) -> None:
    result = await open_loop(flaky_server, [("cus_a", "sk_test_a")], rate=200, duration_s=0.2)
    answered = result.statuses[202] + result.statuses[429]
    assert result.statuses[429] > 0 and result.statuses[202] > 0
    assert result.errors > 0
    assert answered + result.errors == 40
    assert "failed requests:" in result.note and "disconnected" in result.note
