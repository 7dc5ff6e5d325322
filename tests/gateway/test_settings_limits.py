"""Limits that settings can change are checked together at start-up, on the
values in effect: a bad combination is one line and a non-zero exit."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError, from_environment
from ledger import limits
from tests.integration._proc import billing_command, server_env


def test_serve_refuses_a_customer_bound_below_a_full_batch(tmp_path: Path) -> None:
    env = server_env(None, BILLING_CUSTOMER_INFLIGHT_MAX=str(limits.batch_events_max - 1))
    finished = subprocess.run(
        [*billing_command(), "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert finished.returncode == 2, finished.stderr
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert "customer_inflight_max 99" in lines[0] and "batch" in lines[0]
    assert not (tmp_path / "ledger.sqlite3").exists(), "it started before refusing"


def test_a_commit_batch_below_a_signed_batch_is_refused() -> None:
    settings = dataclasses.replace(
        Settings(), commit_batch_receipts_max=limits.sign_batch_receipts_max - 1
    )
    with pytest.raises(SettingsError, match="commit_batch_receipts_max 63"):
        settings.validate()


@pytest.mark.parametrize(
    "environ",
    [
        {},
        # Overload tests and small instances run a bound smaller than one
        # customer's: the smaller bound wins, nothing breaks.
        {"BILLING_ADMISSION_QUEUE_MAX": "16"},
        {"BILLING_CUSTOMER_INFLIGHT_MAX": str(limits.batch_events_max)},
    ],
)
def test_combinations_that_work_are_accepted(environ: dict[str, str]) -> None:
    from_environment(environ)
