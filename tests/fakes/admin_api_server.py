"""A fake Admin API on 127.0.0.1: users by email, entitlement patches, Bearer auth.

Records every call; can fail the next N calls (HTTP 500) on demand; refuses a
wrong Bearer token with 401; refuses a second user with the same email (409).
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from tests.fakes._threaded import ThreadedServer

_BODY: web.RequestKey[Any] = web.RequestKey("admin_body", object)


class FakeAdminApi:
    def __init__(self, token: str | None = None) -> None:
        self.token = token or "adm_" + secrets.token_hex(12)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.users: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.create_attempts = 0
        self._fail_remaining = 0
        self._server = ThreadedServer(self._build_app())

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeAdminApi:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def fail_next(self, count: int) -> None:
        """The next `count` requests (any route) answer 500."""
        with self._lock:
            self._fail_remaining = count

    def users_with_email(self, email: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(u) for u in self.users.values() if u["email"] == email]

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/admin/users/email/{email}", self._locked(self._find))
        app.router.add_post("/admin/users", self._locked(self._create))
        app.router.add_patch("/admin/users/{id}", self._locked(self._patch))
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        with self._lock:
            self.calls.append((request.method, request.path, body))
            failing = self._fail_remaining > 0
            if failing:
                self._fail_remaining -= 1
        if failing:
            return web.json_response({"detail": "injected failure"}, status=500)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"detail": "invalid admin token"}, status=401)
        request[_BODY] = body
        result: web.StreamResponse = await handler(request)
        return result

    def _locked(self, fn: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            with self._lock:
                response: web.Response = fn(request)
            return response

        return handle

    def _find(self, request: web.Request) -> web.Response:
        email = unquote(request.match_info["email"])
        for user in self.users.values():
            if user["email"] == email:
                return web.json_response(user)
        return web.json_response({"detail": "User not found"}, status=404)

    def _create(self, request: web.Request) -> web.Response:
        self.create_attempts += 1
        body = request[_BODY] or {}
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email:
            return web.json_response({"detail": "email required"}, status=422)
        if any(u["email"] == email for u in self.users.values()):
            return web.json_response({"detail": "User already exists"}, status=409)
        user_id = next(self._ids)
        user = {"id": user_id, "email": email, "name": None, "max_concurrent_bots": 0, "data": {}}
        self.users[user_id] = user
        return web.json_response(user, status=201)

    def _patch(self, request: web.Request) -> web.Response:
        user = self.users.get(int(request.match_info["id"]))
        if user is None:
            return web.json_response({"detail": "User not found"}, status=404)
        body = request[_BODY] or {}
        bots = body.get("max_concurrent_bots", 0)
        if isinstance(bots, bool) or not isinstance(bots, int) or bots < 0:
            # As the real API's schema: an integer >= 0, never null.
            return web.json_response({"detail": "max_concurrent_bots: integer >= 0"}, status=422)
        if "max_concurrent_bots" in body:
            user["max_concurrent_bots"] = body["max_concurrent_bots"]
        user["data"] = {**user["data"], **(body.get("data") or {})}
        return web.json_response(user)
