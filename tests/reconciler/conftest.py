"""Real ledgers for the reconciler: a tmp SqliteLedger, receipts sealed with a
real RS256 key (generated once per session), committed like the charge path."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from crypto import GENESIS_HASH, SigningKey, seal_receipt
from ledger import Customer, Entitlement, ReceiptWrite, StoredReceipt
from ledger.local import FileArchive
from ledger.sqlite import SqliteLedger

T0 = "2026-01-01T00:00:00Z"
ENTITLEMENT = "api_calls"


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate("RS256")


@pytest.fixture(scope="session")
def jwks(signing_key: SigningKey) -> dict[str, Any]:
    return {"keys": [signing_key.public_jwk()]}


@dataclass
class Books:
    """A ledger under test, and how to write receipts into it and behind its back."""

    store: SqliteLedger
    key: SigningKey
    path: Path
    heads: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    receipts: dict[str, list[StoredReceipt]] = field(default_factory=dict)

    def customer(self, customer_id: str, quota_minor: int | None = 1_000_000) -> None:
        self.store.create_customer(
            Customer(customer_id=customer_id, email=f"{customer_id}@example.com",
                     currency="EUR", created_at=T0)
        )
        self.store.put_entitlement(
            Entitlement(customer_id=customer_id, entitlement_id=ENTITLEMENT,
                        quota_minor=quota_minor, policy="hard", status="active", updated_at=T0)
        )
        self.heads[customer_id] = (0, GENESIS_HASH, 0)
        self.receipts[customer_id] = []

    def receipt(
        self, customer_id: str, amount_minor: int = 100, key: SigningKey | None = None
    ) -> StoredReceipt:
        """The customer's next receipt, sealed but not committed."""
        seq, previous_hash, balance = self.heads[customer_id]
        seq += 1
        core: dict[str, object] = {
            "receipt_id": f"rcpt_{customer_id}_{seq:05d}",
            "customer_id": customer_id,
            "seq": seq,
            "idempotency_key": f"idem-{seq}",
            "entitlement_id": ENTITLEMENT,
            "amount_minor": amount_minor,
            "currency": "EUR",
            "usage_description": f"batch {seq}",
            "event_timestamp": T0,
            "recorded_at": f"2026-01-01T00:00:{seq % 60:02d}.000000Z",
            "balance_after_minor": balance + amount_minor,
            "quota_remaining_minor": None,
            "previous_receipt_hash": previous_hash,
        }
        sealed = seal_receipt(core, key or self.key)
        stored = StoredReceipt(
            customer_id=customer_id,
            seq=seq,
            receipt_id=str(core["receipt_id"]),
            idempotency_key=f"idem-{seq}",
            request_fingerprint=f"fp-{seq}",
            entitlement_id=ENTITLEMENT,
            amount_minor=amount_minor,
            currency="EUR",
            receipt_hash=str(sealed["receipt_hash"]),
            previous_receipt_hash=previous_hash,
            balance_after_minor=balance + amount_minor,
            recorded_at=str(core["recorded_at"]),
            receipt_json=orjson.dumps(sealed),
        )
        self.heads[customer_id] = (seq, stored.receipt_hash, stored.balance_after_minor)
        self.receipts[customer_id].append(stored)
        return stored

    def charge(self, customer_id: str, count: int, amount_minor: int = 100) -> None:
        writes = [ReceiptWrite(self.receipt(customer_id, amount_minor)) for _ in range(count)]
        self.store.commit_batch(writes, [])

    def sql(self, statement: str, *params: object) -> None:
        """Change the file behind the store's back, as an attacker or a bug would."""
        with contextlib.closing(sqlite3.connect(self.path, timeout=5.0)) as conn, conn:
            changed = conn.execute(statement, params).rowcount
        if changed != 1:
            raise AssertionError(f"expected to change one row, changed {changed}: {statement}")


@pytest.fixture
def books(tmp_path: Path, signing_key: SigningKey) -> Iterator[Books]:
    path = tmp_path / "ledger.sqlite3"
    store = SqliteLedger.open(path)
    try:
        yield Books(store=store, key=signing_key, path=path)
    finally:
        store.close()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[FileArchive]:
    archive = FileArchive(tmp_path / "archive")
    try:
        yield archive
    finally:
        archive.close()
