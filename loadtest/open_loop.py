"""The bench's open-loop generator: it offers a fixed request rate whatever the
answers do, and counts each latency from the request's intended send time, so
a slow server cannot hide behind a slow client (no coordinated omission).

Why not aiohttp's client, as before: at 1,000 req/s it used 0.37 of this
machine's 2 CPUs, taken from the service it measures, and it could not offer
3x the service's rate at all. This one writes pre-built HTTP/1.1 requests on
kept-alive connections and reads only each answer's status line and
Content-Length. It is for loopback servers that answer with a Content-Length
(aiohttp does): an answer it cannot read counts as an error, never as a success.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

# Error kinds, so a reader can tell a service's 429 from a dropped connection.
CONNECT = "connect"
CONNECT_TIMEOUT = "connect_timeout"  # no connection within the request's timeout
DISCONNECTED = "disconnected"  # the server closed the connection without an answer
TIMEOUT = "timeout"
UNREADABLE = "unreadable_answer"
_HEAD_END = b"\r\n\r\n"
_SWEEP_S = 0.1
_TICK_S = 0.001
_PREWARM_SETTLE_S = 1.0


@dataclass
class OpenLoopCounts:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)  # every answer's, sorted
    accepted_latencies_ms: list[float] = field(default_factory=list)  # 2xx answers', sorted
    error_kinds: Counter[str] = field(default_factory=Counter)
    # Not sent: `inflight_max` requests were already waiting.
    dropped: int = 0
    # Sent, but neither answered nor failed by the end of the drain.
    unfinished: int = 0
    sent_for_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(self.error_kinds.values())


def _status_and_length(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length, server closes) of a response head; ValueError if unreadable."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError("not an HTTP/1.x status line")
    status = int(parts[1])
    length: int | None = None
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked answers are not read")
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            return status, 0, close
        raise ValueError("an answer without Content-Length")
    return status, length, close


@dataclass(slots=True)
class _Request:
    data: bytes
    intended_s: float


class _Connection(asyncio.Protocol):
    def __init__(self, generator: _Generator) -> None:
        self._generator = generator
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: _Request | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: _Request) -> None:
        assert self.transport is not None
        self.pending = request
        self.transport.write(request.data)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self.pending is None:
            return
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            return
        try:
            status, length, close = _status_and_length(bytes(self._buffer[:end]))
        except ValueError:
            self.fail(UNREADABLE)
            return
        if len(self._buffer) < end + 4 + length:
            return
        del self._buffer[: end + 4 + length]
        request, self.pending = self.pending, None
        self._generator.answered(self, request, status, close or bool(self._buffer))

    def connection_lost(self, exc: Exception | None) -> None:
        self._generator.lost(self)
        if self.pending is not None:
            self.fail(DISCONNECTED)

    def fail(self, kind: str) -> None:
        """Count the pending request as failed and drop the connection."""
        request, self.pending = self.pending, None
        if request is not None:
            self._generator.failed(self, kind)
        if self.transport is not None:
            self.transport.abort()


class _Generator:
    """At most `connections_max` kept-alive connections, as a fleet of clients
    with connection pools has; a request finding them all busy waits here, in
    order, and that wait counts in its latency."""

    def __init__(
        self, host: str, port: int, connections_max: int, inflight_max: int, timeout_s: float
    ) -> None:
        self._host, self._port = host, port
        self._connections_max = connections_max
        self._inflight_max = inflight_max
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts = OpenLoopCounts()

    @property
    def inflight(self) -> int:
        return len(self._busy) + len(self._waiting)

    @property
    def full(self) -> bool:
        """`inflight_max` requests outstanding: the next one is dropped."""
        return self.inflight >= self._inflight_max

    def offer(self, request: _Request) -> None:
        self._waiting.append(request)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiting:
            if not self._idle:
                if len(self._open) + self._connecting < self._connections_max:
                    self._connecting += 1
                    task = self._loop.create_task(self._connect())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                return
            connection = self._idle.pop()
            if connection.transport is None or connection.transport.is_closing():
                continue
            self._busy.add(connection)
            connection.send(self._waiting.popleft())

    async def prewarm(self, settle_s: float) -> None:
        """Open every connection before the clock starts, as long-running
        clients have them, then give the server `settle_s` to accept them."""
        chunk = 100
        for start in range(len(self._open), self._connections_max, chunk):
            count = min(chunk, self._connections_max - start)
            self._connecting += count
            await asyncio.gather(*(self._connect() for _ in range(count)))
        await asyncio.sleep(settle_s)

    async def _connect(self) -> None:
        try:
            _, connection = await asyncio.wait_for(
                self._loop.create_connection(lambda: _Connection(self), self._host, self._port),
                self._timeout_s,
            )
        except (OSError, TimeoutError) as error:
            # Nothing to send on: the oldest waiting request fails with the connection.
            if self._waiting:
                self._waiting.popleft()
                kind = CONNECT_TIMEOUT if isinstance(error, TimeoutError) else CONNECT
                self.counts.error_kinds[kind] += 1
            return
        finally:
            self._connecting -= 1
        self._open.add(connection)
        self._idle.append(connection)
        self._dispatch()

    def answered(
        self, connection: _Connection, request: _Request, status: int, close: bool
    ) -> None:
        latency_ms = (time.perf_counter() - request.intended_s) * 1000
        self.counts.statuses[status] += 1
        self.counts.latencies_ms.append(latency_ms)
        if 200 <= status < 300:
            self.counts.accepted_latencies_ms.append(latency_ms)
        self._busy.discard(connection)
        if close:
            assert connection.transport is not None
            connection.transport.close()
        else:
            self._idle.append(connection)
        self._dispatch()

    def failed(self, connection: _Connection, kind: str) -> None:
        self.counts.error_kinds[kind] += 1
        self._busy.discard(connection)

    def lost(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        self._open.discard(connection)
        self._loop.call_soon(self._dispatch)  # a replacement may be opened

    def sweep(self) -> None:
        """Fail the requests unanswered for `timeout_s`, sent or still waiting."""
        deadline = time.perf_counter() - self._timeout_s
        for connection in list(self._busy):
            pending = connection.pending
            if pending is not None and pending.intended_s < deadline:
                connection.fail(TIMEOUT)
        while self._waiting and self._waiting[0].intended_s < deadline:
            self._waiting.popleft()
            self.counts.error_kinds[TIMEOUT] += 1

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for connection in list(self._open):
            if connection.transport is not None:
                connection.transport.abort()


async def offer_open_loop(
    host: str,
    port: int,
    build_request: Callable[[int], bytes],
    rate: float,
    duration_s: float,
    *,
    connections_max: int,
    inflight_max: int,
    timeout_s: float,
    drain_s: float,
    prewarm: bool = False,
) -> OpenLoopCounts:
    """Send `build_request(i)` at `rate` per second for `duration_s`, then wait
    up to `drain_s` for the answers still outstanding. With `prewarm`, all
    `connections_max` connections are open before the first request."""
    generator = _Generator(host, port, connections_max, inflight_max, timeout_s)
    total = int(rate * duration_s)
    index = 0
    try:
        if prewarm:
            await generator.prewarm(_PREWARM_SETTLE_S)
        start = next_sweep = time.perf_counter()
        while index < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            while index < due:
                if generator.full:  # dropped: not even built
                    generator.counts.dropped += 1
                else:
                    generator.offer(_Request(build_request(index), start + index / rate))
                index += 1
            if now >= next_sweep:
                generator.sweep()
                next_sweep = now + _SWEEP_S
            if index < total:
                # The loop's timers tick in whole milliseconds: sleeping less
                # would spin. A request sent late counts its delay as latency.
                await asyncio.sleep(max(_TICK_S, start + index / rate - time.perf_counter()))
        generator.counts.sent_for_s = time.perf_counter() - start
        drain_until = time.perf_counter() + drain_s
        while generator.inflight and time.perf_counter() < drain_until:
            generator.sweep()
            await asyncio.sleep(_SWEEP_S / 4)
        generator.counts.unfinished = generator.inflight
        generator.counts.elapsed_s = time.perf_counter() - start
    finally:
        generator.close()
    generator.counts.latencies_ms.sort()
    generator.counts.accepted_latencies_ms.sort()
    return generator.counts
