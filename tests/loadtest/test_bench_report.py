"""The Spanner serve benchmark reports the outbox under and after the load:
backlog, lag, and when each topic's backlog reached zero."""

from __future__ import annotations

import pytest

from loadtest.bench_spanner_serve import Load, OutboxSample, _report_outbox


def test_reports_backlog_lag_and_drain_time_per_topic(capsys: pytest.CaptureFixture[str]) -> None:
    def sample(
        at_s: float, archive: tuple[float, float], read_model: tuple[float, float]
    ) -> OutboxSample:
        """(backlog, lag_s) of each topic at `at_s`."""
        return OutboxSample(
            at_s,
            {"archive": archive[0], "read_model": read_model[0]},
            {"archive": archive[1], "read_model": read_model[1]},
        )

    load = Load(
        during=[sample(0.5, (10, 0.4), (5, 0.2)), sample(9.5, (900, 7.5), (40, 1))],
        after=[sample(10.2, (700, 8.0), (0, 0)), sample(13.7, (0, 0), (0, 0))],
    )
    _report_outbox(load, elapsed=10.0)
    lines = capsys.readouterr().out.splitlines()

    under = lines.index("  under load (2 polls)")
    assert lines[under + 1].split() == (
        "archive backlog first 10 max 900 mean 455.0 last 900".split()
    )
    assert lines[under + 2].split() == "lag (s) first 0.4 max 7.5 mean 4.0 last 7.5".split()
    after = lines.index("  after the load (2 polls)")
    assert lines[after + 1].split() == "archive backlog first 700 max 700 mean 350.0 last 0".split()
    assert lines[after + 2].split() == "lag (s) first 8.0 max 8.0 mean 4.0 last 0.0".split()
    drained = lines[lines.index("  backlog drained to 0 after the load stopped (at 10.0s):") :]
    assert drained[1].split() == ["archive", "in", "3.7s"]
    assert drained[2].split() == ["read_model", "in", "0.2s"]


def test_a_backlog_that_never_drains_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    load = Load(after=[OutboxSample(12.0, {"receipts": 800}, {"receipts": 30.0})])
    _report_outbox(load, elapsed=10.0)
    assert "    receipts             NOT within 120s" in capsys.readouterr().out
