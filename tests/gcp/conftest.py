"""Emulator fixtures for the Google Cloud adapter tests.

Imported, not listed in `pytest_plugins`: pytest only honours that in the
top-level conftest, and this one is not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators import (  # noqa: F401  (fixtures, found by name)
    firestore_emulator,
    pubsub_emulator,
    spanner_emulator,
    storage_emulator,
)
from tests.gcp._data import PROJECT, unique


@pytest.fixture
def spanner_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database of its own for each test."""
    from ledger.spanner import SpannerLedger

    request.getfixturevalue("spanner_emulator")

    url = f"spanner://projects/{PROJECT}/instances/test/databases/{unique('db')}"
    SpannerLedger.open(url, create=True, migrate=True).close()
    yield url
