"""Contract: ReceiptArchive. Every adapter in ARCHIVE_FACTORIES must pass."""

from __future__ import annotations

import dataclasses

from ledger.ports import ReceiptArchive
from tests.contract._chain import Chain, log_checkpoint


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


def test_receipts_the_caller_knows_read_back_as_the_archive_holds_them(
    archive: ReceiptArchive,
) -> None:
    """`known` (the ledger's receipts, for the audit) saves work only: a
    known receipt that differs from the archived one in any field is not
    what comes back."""
    chain = Chain("cus_a")
    archived = [chain.next().receipt for _ in range(4)]
    archive.append(archived)
    known = [
        archived[0],
        dataclasses.replace(archived[1], receipt_json=archived[1].receipt_json + b" "),
        dataclasses.replace(archived[2], idempotency_key="another"),
        dataclasses.replace(archived[3], seq=archived[3].seq + 1),
        chain.next().receipt,  # not archived
    ]

    assert archive.read_customer("cus_a", known) == archived


# -- the receipt log's signed checkpoints -------------------------------------------
def test_appended_checkpoints_read_back_in_tree_order_by_page(archive: ReceiptArchive) -> None:
    archive.append_checkpoints([log_checkpoint(3), log_checkpoint(1), log_checkpoint(2)])
    archive.append_checkpoints([log_checkpoint(5), log_checkpoint(4)])

    assert archive.read_checkpoints(0, 100) == [log_checkpoint(n) for n in range(1, 6)]
    assert archive.read_checkpoints(2, 2) == [log_checkpoint(3), log_checkpoint(4)]
    assert archive.read_checkpoints(5, 100) == []


def test_appending_a_checkpoint_twice_keeps_one_copy(archive: ReceiptArchive) -> None:
    archive.append_checkpoints([log_checkpoint(1), log_checkpoint(2)])
    archive.append_checkpoints([log_checkpoint(1), log_checkpoint(2), log_checkpoint(3)])
    archive.append_checkpoints([log_checkpoint(2), log_checkpoint(2)])

    assert archive.read_checkpoints(0, 100) == [log_checkpoint(n) for n in (1, 2, 3)]


def test_two_checkpoints_of_one_size_are_both_kept_as_evidence(archive: ReceiptArchive) -> None:
    honest, forked = log_checkpoint(7), log_checkpoint(7, fork=1)
    archive.append_checkpoints([honest, log_checkpoint(8)])
    archive.append_checkpoints([forked])

    kept = archive.read_checkpoints(0, 100)
    assert sorted(kept[:2], key=lambda c: c.root_hash) == sorted(
        [honest, forked], key=lambda c: c.root_hash
    )
    assert kept[2] == log_checkpoint(8)


def test_large_logs_page_across_tree_sizes(archive: ReceiptArchive) -> None:
    sizes = [65_535, 65_536, 65_537, 2**20 + 1, 10**12]
    archive.append_checkpoints([log_checkpoint(n) for n in reversed(sizes)])

    assert archive.read_checkpoints(0, 100) == [log_checkpoint(n) for n in sizes]
    assert archive.read_checkpoints(65_535, 2) == [log_checkpoint(65_536), log_checkpoint(65_537)]
    assert archive.read_checkpoints(65_537, 100) == [
        log_checkpoint(2**20 + 1),
        log_checkpoint(10**12),
    ]


def test_checkpoints_and_customers_never_mix(archive: ReceiptArchive) -> None:
    # Customer ids that look like where an adapter keeps the checkpoints.
    chains = [Chain(name) for name in ("log", "~log", "log/checkpoints", "checkpoints")]
    for chain in chains:
        archive.append([chain.next().receipt])
    archive.append_checkpoints([log_checkpoint(1)])

    for chain in chains:
        assert archive.read_customer(chain.customer_id) == chain.made
    assert archive.read_checkpoints(0, 100) == [log_checkpoint(1)]


# -- what a restore walks ----------------------------------------------------------
def test_customer_ids_list_every_archived_customer_and_nothing_else(
    archive: ReceiptArchive,
) -> None:
    names = ("cus_b", "cus/with spaces\u00e9", "log", "~log", "cus_a")
    for name in names:
        archive.append([Chain(name).next().receipt])
    archive.append_checkpoints([log_checkpoint(1)])

    assert archive.customer_ids() == sorted(names)


def test_a_customer_streams_back_in_chain_order(archive: ReceiptArchive) -> None:
    a, b = Chain("cus_a"), Chain("cus_b")
    archive.append([a.next().receipt, b.next().receipt, a.next().receipt])
    archive.append([a.next().receipt for _ in range(300)])  # past a read chunk

    assert list(archive.iter_customer("cus_a")) == a.made
    assert list(archive.iter_customer("cus_b")) == b.made
    assert list(archive.iter_customer("cus_nobody")) == []
