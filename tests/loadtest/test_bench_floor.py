"""The floor benchmark measures each part with the real code; here, on a small
scale, that each part runs and yields a CPU cost per charge."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from loadtest.bench_floor import handoff_floor, http_floor, ledger_floor


def test_the_ledger_part_commits_real_batches(tmp_path: Path) -> None:
    cost_us = ledger_floor(tmp_path, batches=3)
    assert math.isfinite(cost_us) and cost_us > 0
    assert (tmp_path / "floor.sqlite3").stat().st_size > 3 * 64 * 1_000  # 1 kB receipts


def test_the_handoff_part_round_trips_through_a_thread() -> None:
    cost_us = handoff_floor(round_trips=6_400)
    assert math.isfinite(cost_us) and 0 < cost_us < 10_000


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_the_http_parts_split_server_and_generator(tmp_path: Path) -> None:
    served_us, sent_us = http_floor(tmp_path, seconds=1.0, connections=8)
    assert served_us > 0 and sent_us > 0
