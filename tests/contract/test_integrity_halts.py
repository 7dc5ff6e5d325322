"""Contract of the IntegrityHalts port: what every gateway on a store relies
on to stop charging, and what only an operator can undo."""

from __future__ import annotations

import pytest

from ledger import HaltIncident, IntegrityHalts, NotFound, limits


def _incident(incident_id: str, **overrides: str | None) -> HaltIncident:
    fields: dict[str, str | None] = {
        "opened_at": "2025-01-01T00:00:00.000000Z",
        "reason": "chain_broken",
        "detail": "customer cus_a: receipt rct_1 does not hash to its receipt_hash",
        "source": "reconciler",
        "customer_id": "cus_a",
        "receipt_id": "rct_1",
    }
    fields.update(overrides)
    return HaltIncident(incident_id, **fields)  # type: ignore[arg-type]


def test_a_recorded_halt_is_open_until_cleared(integrity_halts: IntegrityHalts) -> None:
    assert integrity_halts.open_halts() == []
    stored = integrity_halts.record_halt(_incident("inc_1"))
    assert stored.incident_id == "inc_1" and stored.is_open
    assert [i.incident_id for i in integrity_halts.open_halts()] == ["inc_1"]
    cleared = integrity_halts.clear_halt("inc_1", "restored from archive", "2025-01-02T00:00:00Z")
    assert cleared.cleared_at == "2025-01-02T00:00:00Z"
    assert cleared.clear_reason == "restored from archive"
    assert integrity_halts.open_halts() == []
    # The clearing is itself kept: the record says who lifted what and why.
    (recent,) = integrity_halts.recent_halts(10)
    assert recent == cleared


def test_the_same_failure_found_again_keeps_one_open_incident(
    integrity_halts: IntegrityHalts,
) -> None:
    first = integrity_halts.record_halt(_incident("inc_1"))
    again = integrity_halts.record_halt(_incident("inc_2", opened_at="2025-01-01T00:01:00Z"))
    assert again.incident_id == first.incident_id
    other = integrity_halts.record_halt(_incident("inc_3", customer_id="cus_b", receipt_id=None))
    assert [i.incident_id for i in integrity_halts.open_halts()] == ["inc_1", "inc_3"]
    assert other.customer_id == "cus_b" and other.receipt_id is None


def test_a_failure_found_after_its_clearing_opens_a_new_incident(
    integrity_halts: IntegrityHalts,
) -> None:
    integrity_halts.record_halt(_incident("inc_1"))
    integrity_halts.clear_halt("inc_1", "false alarm", "2025-01-01T01:00:00Z")
    reopened = integrity_halts.record_halt(_incident("inc_2", opened_at="2025-01-01T02:00:00Z"))
    assert reopened.incident_id == "inc_2"
    assert [i.incident_id for i in integrity_halts.recent_halts(10)] == ["inc_2", "inc_1"]


def test_clearing_twice_keeps_the_first_clearing(integrity_halts: IntegrityHalts) -> None:
    integrity_halts.record_halt(_incident("inc_1"))
    first = integrity_halts.clear_halt("inc_1", "first", "2025-01-01T01:00:00Z")
    second = integrity_halts.clear_halt("inc_1", "second", "2025-01-01T02:00:00Z")
    assert second == first


def test_clearing_an_unknown_incident_is_not_found(integrity_halts: IntegrityHalts) -> None:
    with pytest.raises(NotFound):
        integrity_halts.clear_halt("inc_nope", "typo", "2025-01-01T01:00:00Z")


def test_every_store_keeps_a_recorded_halt_open_and_its_texts_cut_to_their_limits(
    integrity_halts: IntegrityHalts,
) -> None:
    """One rule for what is kept (HaltIncident.as_recorded): an incident handed
    in already cleared is still recorded open, and a detail or clearing
    reason past its limit is cut, the same on every store."""
    handed_in = _incident("inc_1", detail="d" * (limits.halt_detail_chars_max + 1),
                          cleared_at="2025-01-01T00:00:01Z", clear_reason="not yet")
    stored = integrity_halts.record_halt(handed_in)
    assert stored.is_open and stored.clear_reason is None
    assert stored.detail == "d" * limits.halt_detail_chars_max
    cleared = integrity_halts.clear_halt(
        "inc_1", "r" * (limits.halt_clear_reason_chars_max + 1), "2025-01-02T00:00:00Z")
    assert cleared.clear_reason == "r" * limits.halt_clear_reason_chars_max
    assert integrity_halts.recent_halts(10) == [cleared]
    assert integrity_halts.recent_halts(-1) == []
