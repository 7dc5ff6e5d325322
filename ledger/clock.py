"""Timestamps as RFC 3339 strings in one fixed UTC format.

Every stored due time and every receipt timestamp uses
`YYYY-MM-DDTHH:MM:SS.ffffffZ`: fixed width, always UTC, always microseconds.
Why: adapters compare due times as plain strings (SQLite, Spanner, Firestore
all order strings the same way), which is only correct when every writer uses
exactly this format. Never floats or epoch nanoseconds (see DESIGN.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "RFC3339_LENGTH",
    "format_rfc3339",
    "is_fixed_format",
    "parse_rfc3339",
    "utc_now_rfc3339",
]

RFC3339_LENGTH: Final = len("2000-01-01T00:00:00.000000Z")

# Both used with fullmatch (`$` also matches before a final "\n") and ASCII
# digits only (`\d` alone also matches other scripts' digits).
_FIXED_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)
# RFC 3339 section 5.6 date-time; fromisoformat alone also takes ISO 8601
# forms RFC 3339 does not (week dates, basic format, no seconds, a space).
_RFC3339_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def format_rfc3339(moment: datetime) -> str:
    """An aware datetime -> `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.

    Naive datetimes are refused: guessing their zone is how ledgers end up
    with events an hour in the future.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("format_rfc3339 needs a timezone-aware datetime")
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}Z"
    )


def utc_now_rfc3339() -> str:
    """Now, in the fixed format."""
    return format_rfc3339(datetime.now(UTC))


def parse_rfc3339(text: str) -> datetime:
    """Any RFC 3339 timestamp with an offset (`Z` or `+hh:mm`) -> aware UTC datetime."""
    if _RFC3339_RE.fullmatch(text) is None:
        raise ValueError(f"not an RFC 3339 timestamp with an offset: {text!r}")
    # The pattern requires an offset, so the result is aware.
    return datetime.fromisoformat(text.upper()).astimezone(UTC)  # 3.11 takes `Z`, not `z`


def is_fixed_format(text: str) -> bool:
    """True if `text` is already in the fixed, string-comparable format."""
    return _FIXED_RE.fullmatch(text) is not None
