"""ledger.limits: every bound is named and consistent with the others."""

from __future__ import annotations

from ledger import limits


def test_money_bounds_stay_json_exact() -> None:
    assert limits.amount_minor_max < limits.balance_minor_max < limits.json_safe_integer_max
    assert limits.json_safe_integer_max == 2**53 - 1
    # Many maximal charges fit in a balance before it could leave the JSON range.
    assert limits.balance_minor_max // limits.amount_minor_max > 1_000


def test_limits_are_positive_integers_named_with_their_unit() -> None:
    public = {name: value for name, value in vars(limits).items() if not name.startswith("_")}
    bounds = {
        name: value
        for name, value in public.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    assert bounds
    for name, value in bounds.items():
        assert value > 0, name
        assert name.endswith(("_max", "_ms", "_s", "_per_cpu")), name


def test_batches_fit_their_queues() -> None:
    assert limits.commit_batch_receipts_max <= limits.writer_queue_max
    assert limits.customer_inflight_max <= limits.admission_queue_max
