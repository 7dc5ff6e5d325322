"""Contract: ReceiptReadModel. Every adapter in READ_MODEL_FACTORIES must pass."""

from __future__ import annotations

import dataclasses

from ledger.model import StoredReceipt
from ledger.ports import ReceiptReadModel
from tests.contract._chain import Chain


def _receipts(customer_id: str, count: int) -> list[StoredReceipt]:
    chain = Chain(customer_id)
    for _ in range(count):
        chain.next()
    return chain.made


def test_upserted_receipts_are_served(read_model: ReceiptReadModel) -> None:
    receipts = _receipts("cus_a", 3)
    read_model.upsert_receipts(receipts)

    assert read_model.get_receipt(receipts[1].receipt_id) == receipts[1]
    assert read_model.list_receipts("cus_a", after_seq=0, limit=10) == receipts
    assert read_model.get_receipt("rcpt_unknown") is None


def test_upsert_is_idempotent(read_model: ReceiptReadModel) -> None:
    receipts = _receipts("cus_a", 4)
    read_model.upsert_receipts(receipts[:3])
    read_model.upsert_receipts(receipts)  # at-least-once delivery repeats some
    read_model.upsert_receipts(receipts[1:2])

    assert read_model.list_receipts("cus_a", after_seq=0, limit=10) == receipts


def test_list_pages_per_customer_in_seq_order(read_model: ReceiptReadModel) -> None:
    a, b = _receipts("cus_a", 5), _receipts("cus_b", 2)
    # Delivered out of order: the read model still lists by seq.
    read_model.upsert_receipts(list(reversed(a)) + b)

    first = read_model.list_receipts("cus_a", after_seq=0, limit=2)
    rest = read_model.list_receipts("cus_a", after_seq=first[-1].seq, limit=10)
    assert first + rest == a
    assert read_model.list_receipts("cus_b", after_seq=0, limit=10) == b
    assert read_model.list_receipts("cus_c", after_seq=0, limit=10) == []


def test_a_receipts_leaf_index_is_served_as_written(read_model: ReceiptReadModel) -> None:
    before_log, in_log = _receipts("cus_a", 2)
    in_log = dataclasses.replace(in_log, log_index=41)
    read_model.upsert_receipts([before_log, in_log])

    assert read_model.get_receipt(in_log.receipt_id) == in_log
    assert read_model.list_receipts("cus_a", after_seq=0, limit=10) == [before_log, in_log]
