"""Emulator fixtures for the Google Cloud adapter tests.

Imported, not listed in `pytest_plugins`: pytest only honours that in the
top-level conftest, and this one is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators import (  # noqa: F401  (fixtures, found by name)
    firestore_emulator,
    pubsub_emulator,
    spanner_emulator,
    storage_emulator,
)
from tests.gcp._data import PROJECT, unique
from tests.gcp._stack import GcpStack, provision
from tests.integration._proc import ServerProcess, running_server


@pytest.fixture
def spanner_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database of its own for each test."""
    from ledger.spanner import SpannerLedger

    request.getfixturevalue("spanner_emulator")

    url = f"spanner://projects/{PROJECT}/instances/test/databases/{unique('db')}"
    SpannerLedger.open(url, create=True, migrate=True).close()
    yield url


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> GcpStack:
    """Fresh Spanner, Firestore, Pub/Sub and Cloud Storage resources."""
    for emulator in ("spanner", "firestore", "pubsub", "storage"):
        request.getfixturevalue(f"{emulator}_emulator")
    return provision()


@pytest.fixture
def two_servers(
    tmp_path: Path,
    signing_key_file: Path,
    stack: GcpStack,
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    args = ("--store", stack.store)
    for name in ("a", "b"):  # a data dir each (logs, nothing of the ledger)
        (tmp_path / name).mkdir()
    with (
        running_server(tmp_path / "a", signing_key_file, args=args, env=stack.env(), name="a") as a,
        running_server(tmp_path / "b", signing_key_file, args=args, env=stack.env(), name="b") as b,
    ):
        yield a, b
