"""The yardstick for `make bench`: the cheapest aiohttp + uvloop handler there is.

It answers `POST /v1/events` (and `/v1/events/batch`) with a fixed 202 after
reading the body, so wrk drives it with exactly the requests it sends the real
service; the ratio of the two throughputs is the cost of everything billing does.

`python -m loadtest.trivial_server --port 8081` (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web

_ACCEPTED = b'{"receipt_id":"rcpt_trivial","status":"accepted"}'
_BATCH = b'{"results":[]}'


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202, body=_ACCEPTED, content_type="application/json")


async def accept_batch(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200, body=_BATCH, content_type="application/json")


async def ready(_request: web.Request) -> web.Response:
    return web.Response(status=200, text="ok")


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/events", accept)
    app.router.add_post("/v1/events/batch", accept_batch)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.trivial_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(build_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
