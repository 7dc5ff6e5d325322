"""Limits that settings can change are checked together at start-up, on the
values in effect: a bad combination is one line and a non-zero exit."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.settings import Settings, SettingsError, from_environment
from ledger import limits


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
        # Below a full batch: the batch route takes at most that many events.
        {"BILLING_CUSTOMER_INFLIGHT_MAX": "4"},
    ],
)
def test_combinations_that_work_are_accepted(environ: dict[str, str]) -> None:
    from_environment(environ)
