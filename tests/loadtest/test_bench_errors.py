"""The bench says which transport errors a phase had: a timeout is a request
the service left unanswered, a read error mostly wrk closing at the end."""

from __future__ import annotations

from collections import Counter

from loadtest.bench import PhaseResult, _error_kinds


def test_transport_errors_are_split_by_kind_largest_first() -> None:
    result = PhaseResult(
        "overload",
        "3000 conns",
        15.0,
        errors=32,
        error_kinds=Counter({"connect": 0, "read": 20, "write": 0, "timeout": 12}),
    )
    assert _error_kinds(result) == " (20 read, 12 timeout)"


def test_no_errors_adds_nothing() -> None:
    assert _error_kinds(PhaseResult("sustained", "64 conns", 30.0)) == ""
