"""The receipt log's append rules, in one place for every store adapter.

An adapter reads what the rules need inside its write transaction (the
stored log size and the stored contents of the tiles the append touches),
then calls `check_log_append`; the rules decide. Two adapters checking the
same rule two ways would be two rules (TigerBeetle: assert where written).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from ledger.errors import InvariantViolation, LogConflict, check_invariant
from ledger.model import LogAppend, LogCheckpoint, OutboxMessage, StoredReceipt

HASH_BYTES: Final = 32
C2SP_TILE_HASHES_MAX: Final = 256  # fixed: C2SP tlog-tiles, tiles of height 8 hold 256 hashes


def log_indexes_of(receipts: Sequence[StoredReceipt], log: LogAppend | None) -> None:
    """The batch's receipts are the next leaves, in order: leaf `old_size + i`
    is the i-th receipt, and the checkpoint covers exactly them."""
    if log is None:
        for receipt in receipts:
            check_invariant(
                receipt.log_index is None,
                f"receipt {receipt.receipt_id} has a log index but the batch has no log append",
            )
        return
    check_invariant(log.old_size >= 0, "log old_size is negative")
    expected_size = log.old_size + len(receipts)
    check_invariant(
        log.checkpoint.tree_size == expected_size,
        f"checkpoint tree_size {log.checkpoint.tree_size} is not "
        f"{log.old_size} + {len(receipts)} receipts",
    )
    check_invariant(len(log.checkpoint.root_hash) == HASH_BYTES, "checkpoint root is not 32 bytes")
    for offset, receipt in enumerate(receipts):
        check_invariant(
            receipt.log_index == log.old_size + offset,
            f"receipt {receipt.receipt_id} has log index {receipt.log_index}, "
            f"expected {log.old_size + offset}",
        )


def check_log_append(
    stored_size: int,
    stored_tiles: Mapping[tuple[int, int], bytes],
    receipts: Sequence[StoredReceipt],
    log: LogAppend | None,
) -> None:
    """Raise LogConflict when another writer appended first (retry with a
    rebuilt edge), InvariantViolation when the append itself is wrong (a bug).

    `stored_tiles` holds the stored contents of every key in `log.tiles`
    that exists (absent keys are new tiles)."""
    log_indexes_of(receipts, log)
    if log is None:
        return
    if stored_size != log.old_size:
        raise LogConflict(stored_size=stored_size, expected_size=log.old_size)
    for key, contents in log.tiles.items():
        level, index = key
        check_invariant(level >= 0 and index >= 0, f"tile key {key} is negative")
        check_invariant(
            0 < len(contents) <= C2SP_TILE_HASHES_MAX * HASH_BYTES
            and len(contents) % HASH_BYTES == 0,
            f"tile {key} holds {len(contents)} bytes, not 1..{C2SP_TILE_HASHES_MAX} hashes",
        )
        before = stored_tiles.get(key)
        if before is not None and not contents.startswith(before):
            raise InvariantViolation(f"tile {key} would be rewritten, not extended")


def signed_checkpoint(log: LogAppend) -> tuple[LogCheckpoint, Sequence[OutboxMessage]]:
    """The checkpoint to store as the new head, and the messages to commit
    with it; for a late signature (`log.signed`), waits for it.

    Called by every adapter after the batch's other rows, in the same
    transaction: a signature that fails or times out raises and the whole
    batch rolls back, so no checkpoint is ever stored unsigned, and none is
    stored that states anything but the root the batch's tiles give."""
    outbox: Sequence[OutboxMessage] = ()
    if log.signed is None:
        checkpoint = log.checkpoint
    else:
        late = log.signed()
        checkpoint, outbox = late.checkpoint, late.outbox
        announced = log.checkpoint
        check_invariant(
            (checkpoint.tree_size, checkpoint.root_hash, checkpoint.timestamp)
            == (announced.tree_size, announced.root_hash, announced.timestamp),
            f"the signed checkpoint of {checkpoint.tree_size} leaves is not the one announced",
        )
    check_invariant(bool(checkpoint.jws), f"checkpoint of {checkpoint.tree_size} is unsigned")
    return checkpoint, outbox
