"""Contract: ChargeRequests. Who asked for each charge is committed with its
receipt, atomically, and read back for dispute evidence. Every ledger store
in CHARGE_REQUESTS_FACTORIES must pass."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import pytest

from ledger.errors import ChainConflict
from ledger.model import RequestRecord
from ledger.ports import ChargeRequests, LedgerStore
from tests.contract._chain import Chain, customer, entitlement, ts


class _Store(LedgerStore, ChargeRequests, Protocol):
    pass


def _record(n: int) -> RequestRecord:
    return RequestRecord(
        api_key_id=f"key_{n}",
        client_address=f"203.0.113.{n}",
        user_agent=f"acme-meter/{n}.0",
        received_at=ts(n),
        request_id=f"req_{n}",
    )


def _open_account(store: _Store, customer_id: str) -> Chain:
    store.create_customer(customer(customer_id))
    store.put_entitlement(entitlement(customer_id))
    return Chain(customer_id)


def test_request_records_are_read_back_by_receipt(charge_requests_store: _Store) -> None:
    store = charge_requests_store
    alice, bob = _open_account(store, "cus_a"), _open_account(store, "cus_b")
    writes = [
        dataclasses.replace(alice.next(), request=_record(1)),
        dataclasses.replace(bob.next(), request=_record(2)),
        alice.next(),  # not from a request (a reversal, an import): no record
    ]
    store.commit_batch(writes, [])

    assert store.charge_request(alice.made[0].receipt_id) == _record(1)
    assert store.charge_request(bob.made[0].receipt_id) == _record(2)
    assert store.charge_request(alice.made[1].receipt_id) is None
    assert store.charge_request("rcpt_unknown") is None


def test_a_failed_batch_keeps_no_request_record(charge_requests_store: _Store) -> None:
    store = charge_requests_store
    chain = _open_account(store, "cus_a")
    store.commit_batch([dataclasses.replace(chain.next(), request=_record(1))], [])
    stale = Chain("cus_a")  # still at seq 0: its receipt conflicts
    write = dataclasses.replace(stale.next(), request=_record(2))
    with pytest.raises(ChainConflict):
        store.commit_batch([write], [])
    assert store.charge_request(write.receipt.receipt_id) is None
    assert store.charge_request(chain.made[0].receipt_id) == _record(1)
