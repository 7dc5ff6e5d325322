"""Log lines in Cloud Logging's structured shape, the trace taken from either
header, and the access log's sampling."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from gateway.logs import (
    SPAN_KEY,
    TRACE_KEY,
    AccessLogSampler,
    configure_logging,
    trace_context,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def configured() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_lines_have_severity_message_time_request_id_and_trace(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", trace_project="vexa-prod")
    log = structlog.get_logger("t")
    with structlog.contextvars.bound_contextvars(
        request_id="req_1", **trace_context({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    ):
        log.warning("billing.something", customer_id="cus_1")
    logging.getLogger("aiohttp.server").error("from the standard library")
    structured, foreign = _lines(capsys.readouterr().err)
    assert structured["message"] == "billing.something"
    assert structured["severity"] == "WARNING"
    assert structured["request_id"] == "req_1" and structured["customer_id"] == "cus_1"
    assert structured[TRACE_KEY] == f"projects/vexa-prod/traces/{TRACE}"
    assert structured[SPAN_KEY] == "00f067aa0ba902b7"
    assert str(structured["time"]).endswith("Z")
    assert "event" not in structured and "level" not in structured
    assert (foreign["message"], foreign["severity"]) == ("from the standard library", "ERROR")


def test_the_cloud_trace_header_is_read_when_there_is_no_traceparent() -> None:
    assert trace_context({"X-Cloud-Trace-Context": f"{TRACE}/1;o=1"}) == {
        "trace_id": TRACE, "span_id": "0000000000000001", "trace_sampled": True,
    }
    both = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-00",
            "X-Cloud-Trace-Context": "0" * 31 + "1/5"}
    assert trace_context(both)["trace_id"] == TRACE
    for bad in ({"traceparent": "garbage"}, {"X-Cloud-Trace-Context": "not-a-trace"},
                {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}, {}):
        assert trace_context(bad) == {}


def test_access_lines_above_the_rate_are_dropped_and_counted() -> None:
    now = [0.0]
    dropped: list[int] = []
    sampler = AccessLogSampler(3, lambda: dropped.append(1), clock=lambda: now[0])
    assert [sampler.admit() for _ in range(5)] == [True, True, True, False, False]
    assert len(dropped) == 2
    now[0] = 0.5  # half a second refills half the rate
    assert [sampler.admit() for _ in range(2)] == [True, False]
    now[0] = 10.0  # idle time never banks more than a second's worth
    assert sum(sampler.admit() for _ in range(10)) == 3
