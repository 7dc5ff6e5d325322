"""Without Chromium, `make test` stops with a one-line instruction and each
browser test fails with that line (no traceback), instead of a Playwright
stack trace or a download of another browser. The path is overridden with
VEXA_TEST_CHROMIUM to simulate a machine without /usr/bin/chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.web.conftest import CHROMIUM_ENV

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120
INSTRUCTION = "apt-get install -y chromium"


def _without_chromium(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, CHROMIUM_ENV: str(tmp_path / "no-such-chromium"),
            "PYTHONPATH": str(ROOT)}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_stops_with_one_line_when_chromium_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(["make", "-s", "--no-print-directory", "browser-check"], cwd=ROOT,
                          env=_without_chromium(tmp_path), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode != 0
    [line] = done.stdout.splitlines()
    assert INSTRUCTION in line and str(tmp_path / "no-such-chromium") in line


def test_a_browser_test_fails_with_one_line_when_chromium_is_missing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "tests/web/test_browser.py::test_sign_in_then_create_and_revoke_an_api_key"],
        cwd=ROOT, env=_without_chromium(tmp_path), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 1, done.stdout[-2000:]
    failures = [line for line in done.stdout.splitlines() if INSTRUCTION in line]
    assert failures, done.stdout[-2000:]
    # The line alone: no source listing, no "E   ..." traceback lines, no Playwright.
    assert not [line for line in done.stdout.splitlines() if line.startswith(("E ", ">"))]
    assert "playwright" not in done.stdout.lower()
