"""The open-loop generator against loopback servers that misbehave on purpose:
every request it offers ends counted exactly once (answered by status,
failed by kind, dropped, or unfinished), and a latency includes every wait
since the request's intended send time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from loadtest.open_loop import (
    CONNECT,
    TIMEOUT,
    UNREADABLE,
    OpenLoopCounts,
    _status_and_length,
    offer_open_loop,
)
from loadtest.run_locust import free_port

Reply = Callable[[int], Awaitable[bytes | None]]  # request number -> raw answer, None: no answer
REQUEST = b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"


def answer(status: int, body: bytes = b"{}", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class RawServer:
    """Reads each request (head + Content-Length body) and writes what `reply` says."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                raw = await self.reply(self.requests)
                if raw is None:
                    await reader.read()  # no answer, until the client hangs up
                    return
                writer.write(raw or b"")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Starter = Callable[[Reply], Awaitable[tuple["RawServer", int]]]


@pytest.fixture
async def serve() -> AsyncIterator[Starter]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> tuple[RawServer, int]:
        raw = RawServer(reply)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(server)
        return raw, server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


async def offer(port: int, rate: float, duration_s: float, **options: object) -> OpenLoopCounts:
    settings: dict[str, object] = {
        "connections_max": 8,
        "inflight_max": 100,
        "timeout_s": 5.0,
        "drain_s": 5.0,
    }
    settings.update(options)
    return await offer_open_loop(
        "127.0.0.1",
        port,
        lambda index: REQUEST,
        rate,
        duration_s,
        **settings,  # type: ignore[arg-type]
    )


def accounted(counts: OpenLoopCounts) -> int:
    return sum(counts.statuses.values()) + counts.errors + counts.dropped + counts.unfinished


async def test_answers_are_counted_by_status_and_2xx_latencies_apart(serve: Starter) -> None:
    async def reply(n: int) -> bytes:
        return answer(429, extra="Retry-After: 1\r\n") if n % 2 else answer(202)

    _, port = await serve(reply)
    counts = await offer(port, rate=200, duration_s=0.2)
    assert counts.statuses[202] == 20 and counts.statuses[429] == 20
    assert len(counts.latencies_ms) == 40 and len(counts.accepted_latencies_ms) == 20
    assert counts.errors == 0 and accounted(counts) == 40


async def test_a_request_waiting_for_a_busy_connection_counts_that_wait(serve: Starter) -> None:
    # One connection, answers take 50 ms, 20 requests offered in 0.2 s: the
    # last one waits behind the others, so its latency is far above 50 ms.
    async def reply(n: int) -> bytes:
        await asyncio.sleep(0.05)
        return answer(202)

    _, port = await serve(reply)
    counts = await offer(port, rate=100, duration_s=0.2, connections_max=1)
    assert counts.statuses[202] == 20
    assert counts.latencies_ms[0] >= 45
    assert counts.latencies_ms[-1] >= 700  # ~20 x 50 ms - 190 ms of offering


async def test_an_answer_it_cannot_read_is_an_error_never_a_success(serve: Starter) -> None:
    async def reply(n: int) -> bytes:
        return b"HTTP/1.1 202 X\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"

    _, port = await serve(reply)
    counts = await offer(port, rate=100, duration_s=0.05)
    assert not counts.statuses
    assert counts.error_kinds[UNREADABLE] == 5 and accounted(counts) == 5


async def test_unanswered_requests_time_out_sent_or_still_waiting(serve: Starter) -> None:
    async def reply(n: int) -> None:
        return None

    raw, port = await serve(reply)
    counts = await offer(port, rate=50, duration_s=0.2, connections_max=2, timeout_s=0.3)
    assert raw.requests >= 2
    assert counts.error_kinds[TIMEOUT] == 10 and accounted(counts) == 10


async def test_sends_past_the_inflight_bound_are_dropped_not_queued(serve: Starter) -> None:
    async def reply(n: int) -> None:
        return None

    _, port = await serve(reply)
    counts = await offer(
        port, rate=100, duration_s=0.2, connections_max=2, inflight_max=5, timeout_s=0.5
    )
    assert counts.dropped == 15
    assert counts.errors + counts.unfinished == 5 and accounted(counts) == 20


async def test_a_closed_port_is_a_connect_error() -> None:
    counts = await offer(free_port(), rate=100, duration_s=0.05, connections_max=1)
    assert counts.error_kinds[CONNECT] == 5 and not counts.statuses


async def test_a_dropped_connection_is_replaced(serve: Starter) -> None:
    async def reply(n: int) -> bytes:
        return answer(202, extra="Connection: close\r\n")

    raw, port = await serve(reply)
    counts = await offer(port, rate=100, duration_s=0.1, connections_max=1)
    assert counts.statuses[202] == 10 and raw.connections == 10


async def test_prewarm_opens_every_connection_before_the_first_request(serve: Starter) -> None:
    async def reply(n: int) -> bytes:
        return answer(202)

    raw, port = await serve(reply)
    counts = await offer(port, rate=100, duration_s=0.05, connections_max=6, prewarm=True)
    assert raw.connections == 6 and counts.statuses[202] == 5


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 202 Accepted\r\nContent-Length: 12", (202, 12, False)),
        (b"HTTP/1.1 429 Too Many\r\ncontent-length: 3\r\nConnection: close", (429, 3, True)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0", (200, 0, True)),
        (b"HTTP/1.1 204 No Content", (204, 0, False)),
    ],
)
def test_status_and_length_of_an_answer_head(head: bytes, expected: tuple[int, int, bool]) -> None:
    assert _status_and_length(head) == expected


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 202 Accepted", b"SSH-2.0-OpenSSH", b"HTTP/1.1 abc X\r\nContent-Length: 1"],
)
def test_an_unreadable_head_is_refused(head: bytes) -> None:
    with pytest.raises(ValueError):
        _status_and_length(head)
