"""The error model: Stripe-shaped JSON errors,
`{"error": {type, code, message, param, doc_url}}`.

Handlers raise `ApiError`; the error middleware renders it. Any other
exception becomes a 500 `api_error` with no internals leaked.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

# HTTP status -> Stripe error type.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "quota_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "idempotency_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
}
# Every `type` an error may have (the OpenAPI document's enum).
ERROR_TYPES = frozenset({*_TYPE_BY_STATUS.values(), "api_error"})


def error_type(status: int) -> str:
    """Stripe's error `type` for an HTTP status."""
    return _TYPE_BY_STATUS.get(status, "api_error")


# The docs page (gateway/openapi.py renders it); every error code has an anchor.
DOCS_PATH = "/docs"


def doc_url(code: str) -> str:
    """Where a code is explained, as Stripe's `doc_url`: a path on this
    server, so it is right behind any proxy without knowing the public URL."""
    return f"{DOCS_PATH}#error-{code}"


class ApiError(Exception):
    """A failure to report to the client with a status and a stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": error_type(self.status),
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "doc_url": doc_url(self.code),
            }
        }

    def response(self) -> web.Response:
        headers = dict(self.headers)
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return web.Response(
            status=self.status,
            body=orjson.dumps(self.body()),
            content_type="application/json",
            headers=headers,
        )


def bad_request(code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(400, code, message, param=param)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON via orjson (fast, never emits NaN/Infinity)."""
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )
