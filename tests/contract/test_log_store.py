"""Contract: the receipt log in a LedgerStore (commit_batch with a LogAppend,
and the LogReader side). One test per append rule of `ledger.log_rules`;
every adapter in LEDGER_STORE_FACTORIES must pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from crypto.receipt import GENESIS_HASH
from ledger import LogAppend, OutboxMessage, SignedCheckpoint, StoreUnavailable
from ledger.errors import ChainConflict, InvariantViolation, LogConflict
from ledger.ports import ReceiptWrite
from tests.contract._chain import Chain, customer, entitlement, ts
from tests.contract._log import (
    LogStore,
    LogWriter,
    all_tiles,
    assert_one_log,
    leaf_hash,
    level0,
    race_appends,
    root,
)


def _open_account(store: LogStore, customer_id: str) -> Chain:
    store.create_customer(customer(customer_id))
    store.put_entitlement(entitlement(customer_id, quota_minor=None))
    return Chain(customer_id)


def _append(store: LogStore, log: LogWriter, writes: list[ReceiptWrite]) -> list[ReceiptWrite]:
    indexed, append = log.append(writes)
    store.commit_batch(indexed, [], append)
    log.landed(indexed)
    return indexed


def _assert_log_unchanged(store: LogStore, log: LogWriter) -> None:
    """The stored log is exactly `log`: head, checkpoint root, leaves, tiles."""
    head = store.log_head()
    size = len(log.leaves)
    assert (head.tree_size if head else 0) == size
    assert store.log_checkpoint(size + 1) is None
    stored = store.receipts_by_log_index(0, size + 10)
    assert [leaf_hash(r) for r in stored] == log.leaves
    tiles = all_tiles(log.leaves)
    assert store.read_tiles([*tiles, (0, 1), (1, 0)]) == tiles


def test_an_empty_store_has_no_log(ledger_store: LogStore) -> None:
    assert ledger_store.log_head() is None
    assert ledger_store.log_checkpoint(1) is None
    assert ledger_store.log_checkpoints(0, 10) == []
    assert ledger_store.read_tiles([(0, 0)]) == {}
    assert ledger_store.receipts_by_log_index(0, 10) == []


def test_a_log_append_commits_receipts_tiles_and_checkpoint_together(
    ledger_store: LogStore,
) -> None:
    a, b = _open_account(ledger_store, "cus_a"), _open_account(ledger_store, "cus_b")
    log = LogWriter()
    first = _append(ledger_store, log, [a.next(), b.next(), a.next()])
    first_head = ledger_store.log_head()
    second = _append(ledger_store, log, [b.next(), a.next()])

    head = ledger_store.log_head()
    assert head is not None and (head.tree_size, head.root_hash) == (5, root(log.leaves))
    assert ledger_store.log_checkpoint(3) == first_head
    assert first_head is not None and first_head.root_hash == root(log.leaves[:3])
    # The partial tile grew from 3 to 5 leaf hashes.
    assert ledger_store.read_tiles([(0, 0), (0, 1)]) == level0(log.leaves)
    written = [w.receipt for w in first + second]
    assert ledger_store.receipts_by_log_index(0, 10) == written
    assert ledger_store.get_receipt(written[3].receipt_id) == written[3]
    assert written[3].log_index == 3
    assert ledger_store.list_receipts("cus_a", 0, 10) == [written[0], written[2], written[4]]
    assert ledger_store.get_account_head("cus_b") == (2, b.last_hash, 200)


def test_a_log_past_one_tile_stores_full_partial_and_upper_tiles(ledger_store: LogStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    for size in (200, 100):
        _append(ledger_store, log, [chain.next(amount_minor=1) for _ in range(size)])

    tiles = ledger_store.read_tiles([(0, 0), (0, 1), (1, 0), (0, 0)])
    assert len(tiles[(0, 0)]) == 256 * 32 and len(tiles[(0, 1)]) == 44 * 32
    assert tiles[(1, 0)] == root(log.leaves[:256])
    assert tiles == all_tiles(log.leaves)


def test_leaf_indexes_must_follow_the_stored_size(ledger_store: LogStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    _append(ledger_store, log, [chain.next(), chain.next()])
    writes = [chain.next(), chain.next()]
    indexed, append = log.append(writes)

    def reindexed(*indexes: int) -> list[ReceiptWrite]:
        return [
            ReceiptWrite(dataclasses.replace(w.receipt, log_index=i))
            for w, i in zip(indexed, indexes, strict=True)
        ]

    with pytest.raises(InvariantViolation, match="log index 3, expected 2"):
        ledger_store.commit_batch(reindexed(3, 4), [], append)  # a gap
    with pytest.raises(InvariantViolation, match="log index 2, expected 3"):
        ledger_store.commit_batch(reindexed(2, 2), [], append)  # one index twice
    with pytest.raises(InvariantViolation, match="no log append"):
        ledger_store.commit_batch(indexed, [])  # indexed receipts outside the log
    short = dataclasses.replace(
        append, checkpoint=dataclasses.replace(append.checkpoint, tree_size=3)
    )
    with pytest.raises(InvariantViolation, match="tree_size 3"):
        ledger_store.commit_batch(indexed, [], short)

    _assert_log_unchanged(ledger_store, log)
    assert ledger_store.get_account_head("cus_a") == (2, chain.made[1].receipt_hash, 200)
    ledger_store.commit_batch(indexed, [], append)  # the right append still lands
    assert ledger_store.receipts_by_log_index(2, 10) == [w.receipt for w in indexed]


def test_a_stale_log_size_conflicts_and_writes_nothing(ledger_store: LogStore) -> None:
    a, b = _open_account(ledger_store, "cus_a"), _open_account(ledger_store, "cus_b")
    gateway_a, gateway_b = LogWriter(), LogWriter()  # both saw an empty log
    _append(ledger_store, gateway_a, [a.next(), a.next()])
    late, append = gateway_b.append([b.next(), b.next(), b.next()])

    with pytest.raises(LogConflict) as raised:
        ledger_store.commit_batch(late, [], append)

    assert (raised.value.stored_size, raised.value.expected_size) == (2, 0)
    _assert_log_unchanged(ledger_store, gateway_a)
    assert ledger_store.log_checkpoint(3) is None
    assert ledger_store.list_receipts("cus_b", 0, 10) == []
    assert ledger_store.get_account_head("cus_b") == (0, GENESIS_HASH, 0)
    # Reloaded at the stored size, the same receipts land after gateway A's.
    retried, append = LogWriter.reload(ledger_store).append([ReceiptWrite(r) for r in b.made])
    ledger_store.commit_batch(retried, [], append)
    assert [r.log_index for r in ledger_store.list_receipts("cus_b", 0, 10)] == [2, 3, 4]


def test_a_tile_may_grow_but_never_be_rewritten(ledger_store: LogStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    _append(ledger_store, log, [chain.next(), chain.next()])
    writes = [chain.next()]
    indexed, append = log.append(writes)
    grown = append.tiles[(0, 0)]
    assert grown.startswith(log.leaves[0] + log.leaves[1])  # growing is the normal case
    forged = bytes(32) + grown[32:]  # leaf 0 replaced, same length
    rewrite = dataclasses.replace(append, tiles={(0, 0): forged})

    with pytest.raises(InvariantViolation, match=r"tile \(0, 0\) would be rewritten"):
        ledger_store.commit_batch(indexed, [], rewrite)
    shrink = dataclasses.replace(append, tiles={(0, 0): log.leaves[0]})
    with pytest.raises(InvariantViolation, match="rewritten"):
        ledger_store.commit_batch(indexed, [], shrink)

    _assert_log_unchanged(ledger_store, log)
    assert ledger_store.get_account_head("cus_a")[0] == 2  # type: ignore[index]


def test_a_chain_conflict_in_the_batch_writes_no_log_either(ledger_store: LogStore) -> None:
    good, stale = _open_account(ledger_store, "cus_good"), _open_account(ledger_store, "cus_stale")
    log = LogWriter()
    _append(ledger_store, log, [stale.next()])
    other_writer = Chain("cus_stale")  # still believes cus_stale is at seq 0
    indexed, append = log.append([good.next(), other_writer.next()])

    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch(indexed, [], append)

    assert raised.value.customer_ids == {"cus_stale"}
    _assert_log_unchanged(ledger_store, log)
    assert ledger_store.list_receipts("cus_good", 0, 10) == []


def test_checkpoints_page_in_order(ledger_store: LogStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    sizes = []
    for count in (1, 3, 2, 1, 4):
        _append(ledger_store, log, [chain.next() for _ in range(count)])
        sizes.append(len(log.leaves))

    first = ledger_store.log_checkpoints(0, 2)
    rest = ledger_store.log_checkpoints(first[-1].tree_size, 10)
    assert [c.tree_size for c in first + rest] == sizes == [1, 4, 6, 7, 11]
    assert [c.root_hash for c in first + rest] == [root(log.leaves[:n]) for n in sizes]
    assert ledger_store.log_checkpoints(5, 2) == [ledger_store.log_checkpoint(n) for n in (6, 7)]
    assert ledger_store.log_checkpoints(11, 10) == []
    assert ledger_store.log_head() == rest[-1]


def test_receipts_by_log_index_follow_the_log_not_the_customers(ledger_store: LogStore) -> None:
    a, b, c = (_open_account(ledger_store, f"cus_{x}") for x in "abc")
    ledger_store.commit_batch([c.next()], [])  # before the log: no leaf
    log = LogWriter()
    batches = [[b.next(), a.next()], [a.next(), c.next(), b.next()], [a.next()]]
    written = [w.receipt for batch in batches for w in _append(ledger_store, log, batch)]

    assert ledger_store.receipts_by_log_index(0, 100) == written
    assert ledger_store.receipts_by_log_index(2, 2) == written[2:4]
    assert ledger_store.receipts_by_log_index(5, 10) == written[5:]
    assert ledger_store.receipts_by_log_index(6, 10) == []
    assert ledger_store.list_receipts("cus_c", 0, 10)[0].log_index is None


def test_concurrent_appends_never_reuse_an_index(ledger_store: LogStore) -> None:
    """Two writers on one store: each commit lands at the next size or raises
    LogConflict; the log ends with every landed receipt exactly once."""
    chains = [_open_account(ledger_store, f"cus_w{i}") for i in range(2)]
    result = race_appends([ledger_store, ledger_store], chains, commits=6, batch=5)
    assert len(result.landed) == 12
    assert_one_log(ledger_store, result)


def _late(append: LogAppend, signed: Callable[[], SignedCheckpoint]) -> LogAppend:
    """The append as the pipelined writer hands it over: checkpoint unsigned,
    its signature still being made."""
    unsigned = dataclasses.replace(append.checkpoint, jws="")
    return LogAppend(append.old_size, append.tiles, unsigned, signed)


def test_a_late_signature_is_stored_with_its_outbox_in_the_same_commit(
    ledger_store: LogStore,
) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    indexed, append = log.append([chain.next(), chain.next()])
    published = OutboxMessage("checkpoint:2", "checkpoints", "log", b"{}", ts(0))
    waited: list[int] = []

    def signed() -> SignedCheckpoint:
        # Called inside the transaction, after the batch's rows were written.
        waited.append(len(ledger_store.receipts_by_log_index(0, 10)))
        return SignedCheckpoint(append.checkpoint, [published])

    ledger_store.commit_batch(indexed, [], _late(append, signed))
    log.landed(indexed)

    assert waited == [0]  # not committed yet while the signature was awaited
    assert ledger_store.log_head() == append.checkpoint  # stored signed
    _assert_log_unchanged(ledger_store, log)
    pending = ledger_store.pending_outbox("checkpoints", ts(3600), 10)
    assert [m.message_id for m in pending] == ["checkpoint:2"]


def test_a_signature_that_fails_or_differs_writes_nothing(ledger_store: LogStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    _append(ledger_store, log, [chain.next()])
    indexed, append = log.append([chain.next()])

    def kms_down() -> SignedCheckpoint:
        raise StoreUnavailable("KMS unavailable (injected)")

    with pytest.raises(StoreUnavailable):
        ledger_store.commit_batch(indexed, [], _late(append, kms_down))
    other_root = dataclasses.replace(append.checkpoint, root_hash=bytes(32))
    with pytest.raises(InvariantViolation, match="not the one announced"):
        ledger_store.commit_batch(
            indexed, [], _late(append, lambda: SignedCheckpoint(other_root))
        )
    unsigned = dataclasses.replace(append.checkpoint, jws="")
    with pytest.raises(InvariantViolation, match="unsigned"):
        ledger_store.commit_batch(indexed, [], _late(append, lambda: SignedCheckpoint(unsigned)))

    _assert_log_unchanged(ledger_store, log)  # no receipt, tile or checkpoint of the batch
    assert ledger_store.get_account_head("cus_a")[0] == 1  # type: ignore[index]


def _two_appends(
    store: LogStore, chain: Chain, log: LogWriter
) -> tuple[list[ReceiptWrite], LogAppend, LogAppend]:
    """Two consecutive appends (3 then 2 receipts, the second begun on the
    first) as the writer merges them into one commit; `log` is left as
    before them."""
    first, earlier = log.append([chain.next(), chain.next(), chain.next()])
    ahead = LogWriter(list(log.leaves))
    ahead.landed(first)
    second, later = ahead.append([chain.next(), chain.next()])
    return first + second, earlier, later


def test_merged_appends_store_every_checkpoint_and_the_last_is_the_head(
    ledger_store: LogStore,
) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    _append(ledger_store, log, [chain.next()])
    writes, earlier, later = _two_appends(ledger_store, chain, log)

    ledger_store.commit_batch(writes, [], dataclasses.replace(later, earlier=(earlier,)))
    log.landed(writes)

    assert [c.tree_size for c in ledger_store.log_checkpoints(0, 10)] == [1, 4, 6]
    assert ledger_store.log_checkpoint(4) == earlier.checkpoint
    assert ledger_store.log_checkpoint(4).root_hash == root(log.leaves[:4])  # type: ignore[union-attr]
    assert ledger_store.log_head() == later.checkpoint
    _assert_log_unchanged(ledger_store, log)  # leaves and tiles: the later tile won


def test_merged_appends_must_chain_without_gap_or_overlap(ledger_store: LogStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    log = LogWriter()
    _append(ledger_store, log, [chain.next()])
    writes, earlier, later = _two_appends(ledger_store, chain, log)

    def ending_at(size: int) -> LogAppend:
        moved = dataclasses.replace(earlier.checkpoint, tree_size=size)
        return dataclasses.replace(later, earlier=(dataclasses.replace(earlier, checkpoint=moved),))

    with pytest.raises(InvariantViolation, match="checkpoint of 3 leaves is followed by"):
        ledger_store.commit_batch(writes, [], ending_at(3))  # a gap before the later append
    with pytest.raises(InvariantViolation, match="checkpoint of 5 leaves is followed by"):
        ledger_store.commit_batch(writes, [], ending_at(5))  # an overlap with it
    stale = dataclasses.replace(later, earlier=(dataclasses.replace(earlier, old_size=0),))
    with pytest.raises(InvariantViolation, match=r"tree_size 6 is not 0 \+ 5 receipts"):
        ledger_store.commit_batch(writes, [], stale)  # the receipts start at the first append
    shrunk = dataclasses.replace(later, tiles={(0, 0): log.leaves[0]}, earlier=(earlier,))
    with pytest.raises(InvariantViolation, match="rewritten"):
        ledger_store.commit_batch(writes, [], shrunk)  # tiles only grow across the appends

    _assert_log_unchanged(ledger_store, log)
    ledger_store.commit_batch(writes, [], dataclasses.replace(later, earlier=(earlier,)))
