"""Which adapters the contract suites run against.

To put a new adapter under contract, add ONE entry to the registry literal of
its port below (the fixtures read the registries when this module loads);
nothing else changes. A factory takes the pytest `request` (so it
can ask for `tmp_path` or a session-scoped emulator fixture with
`request.getfixturevalue(...)`) and returns a context manager that yields a
fresh, EMPTY adapter and closes it on exit. For example:

    @contextlib.contextmanager
    def make_spanner(request: pytest.FixtureRequest) -> Iterator[LedgerStore]:
        request.getfixturevalue("spanner_emulator")
        store = SpannerLedger.open(fresh_database_url())
        try:
            yield store
        finally:
            store.close()

    LEDGER_STORE_FACTORIES = {"sqlite": make_sqlite, "spanner": make_spanner}

The broadcast suite needs to observe deliveries, so its factories yield a
`BroadcastUnderTest`: the port plus a way to subscribe a callback (for Pub/Sub,
a subscription pulled on a thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger.local import FileArchive
from ledger.memory_disputes import MemoryDisputes
from ledger.memory_halts import MemoryHalts
from ledger.model import LogCheckpoint, StoredReceipt
from ledger.ports import ReceiptBroadcast
from ledger.sqlite import SqliteLedger
from tests.emulators import (  # noqa: F401  (fixtures the Google Cloud factories ask for)
    firestore_emulator,
    pubsub_emulator,
    spanner_emulator,
    storage_emulator,
)
from tests.gcp import contract_factories as gcp


@dataclass(frozen=True)
class BroadcastUnderTest:
    """The broadcast port and how to observe it: `subscribe(fn)` makes `fn`
    receive every published receipt and checkpoint (at least once, a
    customer's receipts in order, the log's checkpoints in order)."""

    port: ReceiptBroadcast
    subscribe: Callable[[Callable[[StoredReceipt | LogCheckpoint], None]], None]


Factory = Callable[[pytest.FixtureRequest], AbstractContextManager[Any]]


# -- embedded adapters ----------------------------------------------------------
@contextlib.contextmanager
def make_sqlite(request: pytest.FixtureRequest) -> Iterator[SqliteLedger]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    store = SqliteLedger.open(tmp_path / "ledger.sqlite3")
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def make_file_archive(request: pytest.FixtureRequest) -> Iterator[FileArchive]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    archive = FileArchive(tmp_path / "archive")
    try:
        yield archive
    finally:
        archive.close()


@contextlib.contextmanager
def make_memory_halts(request: pytest.FixtureRequest) -> Iterator[MemoryHalts]:
    yield MemoryHalts()


@contextlib.contextmanager
def make_memory_disputes(request: pytest.FixtureRequest) -> Iterator[MemoryDisputes]:
    yield MemoryDisputes()


# -- the registries: add Google Cloud adapters here --------------------------------
LEDGER_STORE_FACTORIES: dict[str, Factory] = {"sqlite": make_sqlite, "spanner": gcp.make_spanner}
READ_MODEL_FACTORIES: dict[str, Factory] = {"sqlite": make_sqlite, "firestore": gcp.make_firestore}
BROADCAST_FACTORIES: dict[str, Factory] = {
    "pubsub": gcp.make_pubsub,
}
ARCHIVE_FACTORIES: dict[str, Factory] = {"file": make_file_archive, "gcs": gcp.make_gcs}
INTEGRITY_HALTS_FACTORIES: dict[str, Factory] = {
    "sqlite": make_sqlite,
    "memory": make_memory_halts,
    "spanner": gcp.make_spanner,
}
# Ledger stores that keep who asked for each charge (ChargeRequests): their
# `commit_batch` writes the request records, `charge_request` reads them.
CHARGE_REQUESTS_FACTORIES: dict[str, Factory] = {"sqlite": make_sqlite, "spanner": gcp.make_spanner}
# Ledger stores that serve the web app (WebAppStore, on top of LedgerStore).
WEB_STORE_FACTORIES: dict[str, Factory] = {"sqlite": make_sqlite, "spanner": gcp.make_spanner}
# Spanner joins once its adapter has the webhook tables (see ledger.webhook_store).
WEBHOOK_STORE_FACTORIES: dict[str, Factory] = {"sqlite": make_sqlite}
DISPUTE_SUBMISSIONS_FACTORIES: dict[str, Factory] = {
    "sqlite": make_sqlite,
    "memory": make_memory_disputes,
    "spanner": gcp.make_spanner,
}


# -- the fixtures the suites use: one test per registered adapter -----------------------
def _adapter_fixture(registry: dict[str, Factory], name: str) -> Any:
    @pytest.fixture(name=name, params=sorted(registry))
    def fixture(request: pytest.FixtureRequest) -> Iterator[Any]:
        with registry[request.param](request) as adapter:
            yield adapter

    return fixture


ledger_store = _adapter_fixture(LEDGER_STORE_FACTORIES, "ledger_store")
read_model = _adapter_fixture(READ_MODEL_FACTORIES, "read_model")
broadcast = _adapter_fixture(BROADCAST_FACTORIES, "broadcast")  # yields BroadcastUnderTest
archive = _adapter_fixture(ARCHIVE_FACTORIES, "archive")
integrity_halts = _adapter_fixture(INTEGRITY_HALTS_FACTORIES, "integrity_halts")
charge_requests_store = _adapter_fixture(CHARGE_REQUESTS_FACTORIES, "charge_requests_store")
web_store = _adapter_fixture(WEB_STORE_FACTORIES, "web_store")
webhook_store = _adapter_fixture(WEBHOOK_STORE_FACTORIES, "webhook_store")
dispute_submissions = _adapter_fixture(DISPUTE_SUBMISSIONS_FACTORIES, "dispute_submissions")
