"""ledger.clock: one fixed, string-comparable RFC 3339 format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.clock import (
    RFC3339_LENGTH,
    format_rfc3339,
    is_fixed_format,
    parse_rfc3339,
    utc_now_rfc3339,
)


def test_format_is_utc_with_microseconds() -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 3, 1, 14, 5, 9, 120, tzinfo=plus_two)
    assert format_rfc3339(moment) == "2026-03-01T12:05:09.000120Z"
    assert format_rfc3339(datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01T00:00:00.000000Z"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_rfc3339(datetime(2026, 1, 1))


def test_now_is_fixed_format_and_string_order_is_time_order() -> None:
    now = utc_now_rfc3339()
    assert len(now) == RFC3339_LENGTH and is_fixed_format(now)
    base = datetime(2026, 1, 1, 23, 59, 59, 999_999, tzinfo=UTC)
    moments = [base + timedelta(microseconds=step) for step in (0, 1, 10**6, 86_400 * 10**6)]
    texts = [format_rfc3339(m) for m in moments]
    assert texts == sorted(texts)


def test_parse_round_trips_and_accepts_offsets() -> None:
    text = "2026-03-01T12:05:09.000120Z"
    assert format_rfc3339(parse_rfc3339(text)) == text
    offset = parse_rfc3339("2026-03-01T14:05:09+02:00")
    assert format_rfc3339(offset) == "2026-03-01T12:05:09.000000Z"
    with pytest.raises(ValueError):
        parse_rfc3339("2026-03-01T12:05:09")
    assert not is_fixed_format("2026-03-01T12:05:09Z")


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T12:05:09Z\n",
        " 2026-03-01T12:05:09Z",
        "20260301T120509Z",  # ISO 8601 basic format
        "2026-03-01 12:05:09Z",
        "2026-W09-7T12:05:09Z",
        "2026-03-01T12:05Z",
        "2026-03-01T12:05:09+0200",
    ],
)
def test_parse_refuses_what_is_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339(text)


def test_parse_accepts_lowercase_separators() -> None:
    assert format_rfc3339(parse_rfc3339("2026-03-01t12:05:09z")) == "2026-03-01T12:05:09.000000Z"


def test_fixed_format_is_exact() -> None:
    text = "2026-03-01T12:05:09.000120Z"
    assert is_fixed_format(text)
    assert not is_fixed_format(text + "\n")
    assert not is_fixed_format("\u0662" + text[1:])  # an Arabic-Indic digit
