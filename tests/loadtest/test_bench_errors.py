"""The bench says which transport errors a phase had: a timeout is a request
the service left unanswered, a read error mostly wrk closing at the end."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from loadtest.bench import PhaseResult, _error_kinds, run_trivial


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


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_the_trivial_handler_is_measured_at_any_concurrency(tmp_path: Path) -> None:
    # The overload baseline: the same wrk load on a handler that does nothing.
    result = run_trivial(tmp_path, "triv-ovl", connections=200, duration_s=1.0, threads=2)
    assert result.connections == 200
    assert result.statuses[202] > 0 and result.requests_per_s > 0
    assert sum(result.error_kinds.values()) == result.errors
