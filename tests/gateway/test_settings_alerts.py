"""Threshold alert settings: BILLING_ALERT_THRESHOLDS_PCT and
BILLING_WEBHOOK_TIMEOUT_MS, validated at start-up in one line."""

from __future__ import annotations

import pytest

from gateway.settings import SettingsError, from_environment


@pytest.mark.parametrize(
    ("raw", "thresholds"),
    [(None, (50, 80, 100)), ("75", (75,)), ("25, 90,150", (25, 90, 150)), ("", ())],
)
def test_thresholds_read(raw: str | None, thresholds: tuple[int, ...]) -> None:
    environ = {} if raw is None else {"BILLING_ALERT_THRESHOLDS_PCT": raw}
    assert from_environment(environ).alert_thresholds_pct == thresholds


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BILLING_ALERT_THRESHOLDS_PCT": "50%"}, "percentages like 50,80,100"),
        ({"BILLING_ALERT_THRESHOLDS_PCT": "0,50"}, "whole percent from 1 to 1000"),
        ({"BILLING_ALERT_THRESHOLDS_PCT": "50,50"}, "listed twice"),
        ({"BILLING_ALERT_THRESHOLDS_PCT": ",".join(map(str, range(1, 12)))}, "at most 10"),
        ({"BILLING_WEBHOOK_TIMEOUT_MS": "0"}, "BILLING_WEBHOOK_TIMEOUT_MS"),
        ({"BILLING_WEBHOOK_TIMEOUT_MS": "60000"}, "BILLING_WEBHOOK_TIMEOUT_MS"),
    ],
)
def test_refused_at_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_environment(environ)
