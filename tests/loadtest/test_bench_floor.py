"""The floor benchmark measures each part with the real code; here, on a small
scale, that each part runs and yields a CPU cost per charge."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench_floor import handoff_floor, http_floor, ledger_floor

REPO = Path(__file__).resolve().parents[2]


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


def test_without_wrk_it_says_so_in_one_line(tmp_path: Path) -> None:
    # An empty PATH: wrk cannot be found.
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.bench_floor", "--seconds", "0.1"],
        cwd=REPO,
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("bench_floor: ") and "wrk" in done.stderr
    assert "Traceback" not in done.stderr
