"""Contract: ReceiptArchive. Every adapter in ARCHIVE_FACTORIES must pass."""

from __future__ import annotations

import dataclasses

from ledger.ports import ReceiptArchive
from tests.contract._chain import Chain


def test_appended_receipts_read_back_in_seq_order(archive: ReceiptArchive) -> None:
    a, b = Chain("cus_a"), Chain("cus_b")
    first = [a.next().receipt, b.next().receipt, a.next().receipt]
    archive.append(first)
    archive.append([a.next().receipt])

    assert archive.read_customer("cus_a") == a.made
    assert archive.read_customer("cus_b") == b.made
    assert archive.read_customer("cus_nobody") == []


def test_appending_twice_keeps_one_copy(archive: ReceiptArchive) -> None:
    chain = Chain("cus_a")
    receipts = [chain.next().receipt for _ in range(3)]
    archive.append(receipts[:2])
    archive.append(receipts)  # the outbox delivers at least once
    archive.append([receipts[0], receipts[0]])

    assert archive.read_customer("cus_a") == receipts


def test_receipt_bytes_are_kept_exactly(archive: ReceiptArchive) -> None:
    chain = Chain("cus/with spaces\u00e9")
    receipt = chain.next().receipt
    exotic = dataclasses.replace(receipt, receipt_json=b'{"x":"\xe2\x82\xac\\n"}\x00\xff')
    archive.append([exotic])
    assert archive.read_customer(chain.customer_id) == [exotic]


def test_a_receipts_leaf_index_is_kept(archive: ReceiptArchive) -> None:
    chain = Chain("cus_a")
    before_log = chain.next().receipt
    in_log = dataclasses.replace(chain.next().receipt, log_index=0)
    archive.append([before_log, in_log])
    assert archive.read_customer("cus_a") == [before_log, in_log]
