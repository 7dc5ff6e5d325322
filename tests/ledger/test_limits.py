"""ledger.limits: every bound is named with its unit.

How the limits fit together is checked at import (ledger/limits.py) and, for
the ones settings can change, at start-up: tests/gateway/test_settings_limits.py.
"""

from __future__ import annotations

from ledger import limits


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

