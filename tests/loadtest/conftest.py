"""Fixtures for the load-kit tests: a real `billing serve`, or the in-memory fake."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest

from loadtest.run_locust import Service, local_service

WEBHOOK_SECRET = "whsec_loadtest_only"


def soak_seconds(default: float = 4.0) -> float:
    """Run time of each scenario: BILLING_SOAK_SECONDS (CI sets 5) or `default`."""
    raw = os.environ.get("BILLING_SOAK_SECONDS", "")
    return float(raw) if raw else default


def _serve_available() -> bool:
    return importlib.util.find_spec("gateway.cli_serve") is not None


@pytest.fixture(scope="session")
def billing_service() -> Iterator[Service]:
    """`billing serve` on a free loopback port with a temp data dir."""
    if not _serve_available():
        pytest.skip("billing serve is not built yet (no gateway.cli_serve)")
    with local_service(env={"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}) as service:
        yield service


@pytest.fixture(scope="session")
def small_admission_service() -> Iterator[Service]:
    """`billing serve` with a small admission bound, so a few users overload it."""
    if not _serve_available():
        pytest.skip("billing serve is not built yet (no gateway.cli_serve)")
    with local_service(env={"BILLING_ADMISSION_QUEUE_MAX": "16"}) as service:
        yield service


def fake_service(*extra: str) -> AbstractContextManager[Service]:
    """A context manager running tests/loadtest/fake_billing.py with `extra` flags."""
    command = [sys.executable, "-m", "tests.loadtest.fake_billing", "--port", "{port}", *extra]
    return local_service(command=command)
