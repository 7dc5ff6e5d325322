"""The start-up audit of account heads past its before-ready budget: it goes
on after ready, and an account used before the audit reached it is checked
before its actor starts, so no charge builds on a tampered head."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.integrity.halts import IntegrityFailure
from actors.integrity.startup_audit import AccountHeadAudit
from ledger import limits
from ledger.sqlite import SqliteLedger
from tests.integration.conftest import Customer, base_settings, serve
from tests.integration.test_integrity_halt import (
    LEDGER,
    _admin_halt,
    _charge_some,
    _readyz,
    _tamper_last_amount,
)


async def _ledger_with_a_tampered_head(
    tmp_path: Path, signing_key_file: Path, customers: int
) -> tuple[Path, list[Customer]]:
    """`customers` customers with one receipt each; the first one's last
    receipt altered behind the service's back."""
    settings = base_settings(tmp_path / "data", signing_key_file)
    async with serve(settings) as first:
        made = [await first.create_customer() for _ in range(customers)]
        for customer in made:
            await _charge_some(first, customer, 1)
    made.sort(key=lambda customer: customer.customer_id)
    _tamper_last_amount(settings.data_dir / LEDGER, made[0].customer_id)
    return settings.data_dir, made


async def test_an_account_used_before_the_audit_reaches_it_is_checked_first(
    tmp_path: Path, signing_key_file: Path
) -> None:
    data_dir, made = await _ledger_with_a_tampered_head(tmp_path, signing_key_file, 3)
    found: list[IntegrityFailure] = []
    store = SqliteLedger.open(data_dir / LEDGER)
    try:
        audit = AccountHeadAudit(store, found.append)
        assert audit.run(0.0) is False  # no time before ready: nothing checked
        victim, bystander = made[0], made[2]
        assert audit.check_before_use(bystander.customer_id) is True
        assert audit.check_before_use(victim.customer_id) is False
        assert [(f.reason, f.customer_id) for f in found] == [
            ("receipt_altered", victim.customer_id)
        ]
        assert audit.run(10.0) is True
        # The background pass does not check (nor report) the victim again.
        assert len(found) == 1 and audit.checked == 3
        assert audit.check_before_use(bystander.customer_id) is True
        assert audit.check_before_use(victim.customer_id) is False  # still refused
    finally:
        store.close()


async def test_a_head_the_background_pass_found_broken_is_refused_on_use(
    tmp_path: Path, signing_key_file: Path
) -> None:
    # The race a charge can lose: the background pass finds the head broken
    # just after the charge passed the readiness check.
    data_dir, made = await _ledger_with_a_tampered_head(tmp_path, signing_key_file, 3)
    store = SqliteLedger.open(data_dir / LEDGER)
    try:
        audit = AccountHeadAudit(store, lambda failure: None)
        assert audit.run(10.0) is True
        assert audit.check_before_use(made[0].customer_id) is False
        assert audit.check_before_use(made[1].customer_id) is True
    finally:
        store.close()


async def test_the_audit_before_ready_stops_at_its_time_budget(
    tmp_path: Path, signing_key_file: Path
) -> None:
    data_dir, _ = await _ledger_with_a_tampered_head(tmp_path, signing_key_file, 3)
    ticks = iter(range(100))
    store = SqliteLedger.open(data_dir / LEDGER)
    try:
        audit = AccountHeadAudit(store, lambda failure: None, clock=lambda: float(next(ticks)))
        assert audit.run(2.0, chunk=1) is False  # time for one account
        assert audit.checked == 1
        assert audit.run(100.0, chunk=1) is True and audit.checked == 3
    finally:
        store.close()


async def test_a_charge_never_builds_on_a_tampered_head_left_for_after_ready(
    tmp_path: Path, signing_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, made = await _ledger_with_a_tampered_head(tmp_path, signing_key_file, 2)
    monkeypatch.setattr(limits, "startup_audit_before_ready_ms", 0)
    victim = made[0]
    async with serve(base_settings(data_dir, signing_key_file)) as second:
        status, _, _ = await second.post_event(victim, second.event(victim))
        assert status == 503
        assert len(await second.receipts(victim)) == 1  # nothing built on it
        assert (await _readyz(second))[0] == 503
        (incident,) = (await _admin_halt(second))["open"]
        assert (incident["source"], incident["customer_id"]) == ("startup_audit",
                                                                 victim.customer_id)
