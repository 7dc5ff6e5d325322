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


def segments(log: LogAppend) -> list[LogAppend]:
    """The appends one commit writes, in order (`log.earlier`, then `log`)."""
    return [*log.earlier, log]


def first_size(log: LogAppend) -> int:
    """The log size the commit extends: its first append's old_size."""
    return log.earlier[0].old_size if log.earlier else log.old_size


def _check_chain(log: LogAppend) -> None:
    """Each earlier append ends where the next begins, and adds leaves: a
    gap or an overlap would store checkpoints of leaves no commit wrote."""
    for earlier, later in zip(log.earlier, segments(log)[1:], strict=True):
        check_invariant(not earlier.earlier, "an earlier append holds appends of its own")
        check_invariant(
            earlier.old_size < earlier.checkpoint.tree_size,
            f"an earlier append from {earlier.old_size} adds no leaf",
        )
        check_invariant(
            earlier.checkpoint.tree_size == later.old_size,
            f"the checkpoint of {earlier.checkpoint.tree_size} leaves is followed by "
            f"an append from {later.old_size}",
        )


def log_indexes_of(receipts: Sequence[StoredReceipt], log: LogAppend | None) -> None:
    """The batch's receipts are the next leaves, in order: leaf `old_size + i`
    (of the first append) is the i-th receipt, and the checkpoints cover
    exactly them."""
    if log is None:
        for receipt in receipts:
            check_invariant(
                receipt.log_index is None,
                f"receipt {receipt.receipt_id} has a log index but the batch has no log append",
            )
        return
    _check_chain(log)
    start = first_size(log)
    check_invariant(start >= 0, "log old_size is negative")
    expected_size = start + len(receipts)
    check_invariant(
        log.checkpoint.tree_size == expected_size,
        f"checkpoint tree_size {log.checkpoint.tree_size} is not "
        f"{start} + {len(receipts)} receipts",
    )
    for part in segments(log):
        check_invariant(
            len(part.checkpoint.root_hash) == HASH_BYTES, "checkpoint root is not 32 bytes"
        )
    for offset, receipt in enumerate(receipts):
        check_invariant(
            receipt.log_index == start + offset,
            f"receipt {receipt.receipt_id} has log index {receipt.log_index}, "
            f"expected {start + offset}",
        )


def tile_keys(log: LogAppend) -> list[tuple[int, int]]:
    """Every tile key the commit writes (the stored ones the rules read)."""
    return list(dict.fromkeys(key for part in segments(log) for key in part.tiles))


def merged_tiles(log: LogAppend) -> dict[tuple[int, int], bytes]:
    """The tiles to store: a later append's tile replaces an earlier one's at
    the same key (the rules checked it only grew)."""
    tiles: dict[tuple[int, int], bytes] = {}
    for part in segments(log):
        tiles.update(part.tiles)
    return tiles


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
    if stored_size != first_size(log):
        raise LogConflict(stored_size=stored_size, expected_size=first_size(log))
    tiles = dict(stored_tiles)  # as each append of the commit leaves them
    for part in segments(log):
        for key, contents in part.tiles.items():
            level, index = key
            check_invariant(level >= 0 and index >= 0, f"tile key {key} is negative")
            check_invariant(
                0 < len(contents) <= C2SP_TILE_HASHES_MAX * HASH_BYTES
                and len(contents) % HASH_BYTES == 0,
                f"tile {key} holds {len(contents)} bytes, not 1..{C2SP_TILE_HASHES_MAX} hashes",
            )
            before = tiles.get(key)
            if before is not None and not contents.startswith(before):
                raise InvariantViolation(f"tile {key} would be rewritten, not extended")
            tiles[key] = contents


def signed_checkpoints(log: LogAppend) -> tuple[list[LogCheckpoint], list[OutboxMessage]]:
    """Every checkpoint the commit stores, in order (the last is the new
    head), and the messages that publish them; see `signed_checkpoint`."""
    checkpoints: list[LogCheckpoint] = []
    outbox: list[OutboxMessage] = []
    for part in segments(log):
        checkpoint, messages = signed_checkpoint(part)
        checkpoints.append(checkpoint)
        outbox.extend(messages)
    return checkpoints, outbox


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
