"""structlog setup: JSON lines on stderr in Cloud Logging's structured shape.

Each line has `message` (the event name), `severity` (DEBUG ... CRITICAL),
`time`, the request id when there is one, and `logging.googleapis.com/trace`
and `/spanId` from the request's `traceparent` or `X-Cloud-Trace-Context`, so
Cloud Logging groups a request's lines under its trace
(https://cloud.google.com/logging/docs/structured-logging).

Records from the standard library's `logging` (pykka's "Unhandled exception in
actor" with its traceback, aiohttp, ...) are rendered by the same processors,
so stderr carries one JSON object per line and nothing else.

Also here: the sampled access log (one line per request, at most N a second)
and the audit log of operator actions.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

import structlog
from aiohttp import web
from structlog.typing import Processor

TRACE_KEY: Final = "logging.googleapis.com/trace"
SPAN_KEY: Final = "logging.googleapis.com/spanId"
SAMPLED_KEY: Final = "logging.googleapis.com/trace_sampled"

_SEVERITY: Final = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}
# W3C Trace Context: version-traceid-parentid-flags, lower-case hex.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Google's own header: TRACE_ID/SPAN_ID;o=OPTIONS, the span id in decimal.
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?")

audit_log = structlog.get_logger("audit")
access_log = structlog.get_logger("access")


def cloud_logging_shape(project: str | None) -> Processor:
    """structlog's `event`/`level` as Cloud Logging's `message`/`severity`, and
    the bound trace as its trace fields (a full resource name when the
    project is known, which is what links the line to Cloud Trace)."""

    def shape(_: Any, method_name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        event["message"] = event.pop("event", "")
        level = str(event.pop("level", method_name))
        event["severity"] = _SEVERITY.get(level, "DEFAULT")
        trace_id = event.pop("trace_id", None)
        span_id = event.pop("span_id", None)
        sampled = event.pop("trace_sampled", None)
        if trace_id:
            event[TRACE_KEY] = f"projects/{project}/traces/{trace_id}" if project else trace_id
        if span_id:
            event[SPAN_KEY] = span_id
        if sampled is not None:
            event[SAMPLED_KEY] = sampled
        return event

    return shape


def configure_logging(level: str = "info", trace_project: str | None = None) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    ]
    final: list[Processor] = [
        structlog.processors.format_exc_info,
        cloud_logging_shape(trace_project),
        structlog.processors.JSONRenderer(),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def trace_context(headers: Mapping[str, str]) -> dict[str, Any]:
    """The trace a request belongs to, from `traceparent` (W3C, preferred) or
    `X-Cloud-Trace-Context`; {} when neither is well formed."""
    match = _TRACEPARENT.fullmatch(headers.get("traceparent", "").strip())
    if match and match[1] != "0" * 32:
        flags = int(match[3], 16)
        return {"trace_id": match[1], "span_id": match[2], "trace_sampled": bool(flags & 1)}
    match = _CLOUD_TRACE.fullmatch(headers.get("X-Cloud-Trace-Context", "").strip())
    if match is None:
        return {}
    context: dict[str, Any] = {"trace_id": match[1].lower()}
    if match[2]:
        context["span_id"] = f"{int(match[2]) % 2**64:016x}"
    if match[3]:
        context["trace_sampled"] = match[3] == "1"
    return context


class AccessLogSampler:
    """At most `per_s_max` access lines a second (a token bucket holding one
    second's worth); the rest are counted, not written: at 10,000 requests a
    second, a line each would cost more than the charges."""

    def __init__(self, per_s_max: int, on_drop: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = float(per_s_max)
        self._tokens = float(per_s_max)
        self._on_drop = on_drop
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
        self._on_drop()
        return False


def log_access(
    request: web.Request, route: str, status: int, latency_ms: float, sampler: AccessLogSampler
) -> None:
    """One line per request (server errors always; the rest as sampled), with
    Cloud Logging's `httpRequest` so its request view works."""
    if status < 500 and not sampler.admit():
        return
    access_log.info(
        "http.access",
        method=request.method,
        route=route,
        status=status,
        latency_ms=round(latency_ms, 3),
        httpRequest={
            "requestMethod": request.method,
            "requestUrl": request.path,
            "status": status,
            "latency": f"{latency_ms / 1000:.6f}s",
            "userAgent": request.headers.get("User-Agent", ""),
            "remoteIp": request.remote or "",
        },
    )


def audit(request: web.Request, action: str, **target: Any) -> None:
    """One line per operator action that changed something: who (the admin
    token's holder, from where), what, and on what. The admin token is one
    shared secret, so "who" is the address the request came from."""
    audit_log.info(
        "audit",
        action=action,
        actor={
            "credential": "admin_token",
            "remote_ip": request.remote or "",
            "forwarded_for": request.headers.get("X-Forwarded-For", ""),
            "user_agent": request.headers.get("User-Agent", ""),
        },
        target=target,
    )
