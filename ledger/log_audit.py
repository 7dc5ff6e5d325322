"""The log monitor: rebuild the whole receipt log from the stored receipts and
check every stored statement about it.

What a stored log claims, and how each claim is checked here:
- every checkpoint is signed by a known key (its JWS), and its stored columns
  are its payload;
- leaf i is the i-th receipt in log order, whose hash is that of its signed
  core: the tree is rebuilt from the receipts (an in-memory `RightEdge`), and
  at each checkpoint's size the rebuilt root must be the signed one, so each
  checkpoint extends the one before;
- the stored tiles are the rebuilt ones (proofs are served from them);
- each customer's chain is gapless from seq 1 and linked by hash, in log order.
An auditor also remembers the last checkpoint it verified (`AuditState`): a
later log smaller than it is a `rollback`, one with another root at its size
a `fork`, however well signed. Reads are paged through the `LogReader` port,
so any adapter can be audited; memory is O(customers + page).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from crypto import (
    GENESIS_HASH,
    TILE_WIDTH_MAX,
    Appended,
    CanonicalizationError,
    Checkpoint,
    CheckpointError,
    ReceiptFieldError,
    RightEdge,
    TrustedKeys,
    receipt_hash,
    receipt_leaf,
    verify_checkpoint,
)
from ledger import limits
from ledger.errors import InvariantViolation
from ledger.log_rules import HASH_BYTES
from ledger.model import LogCheckpoint, SigningKeyRecord, StoredReceipt
from ledger.ports import LogReader

_FULL_TILE_BYTES: Final = TILE_WIDTH_MAX * HASH_BYTES
_HASH_PREFIX: Final = "sha256:"


@dataclass(frozen=True, slots=True)
class AuditFailure:
    """The first claim of the stored log that does not hold, and where."""

    reason: str
    detail: str
    log_index: int | None = None
    tree_size: int | None = None
    receipt_id: str | None = None

    def where(self) -> str:
        places = []
        if self.log_index is not None:
            places.append(f"leaf {self.log_index}")
        if self.tree_size is not None:
            places.append(f"checkpoint {self.tree_size}")
        if self.receipt_id is not None:
            places.append(f"receipt {self.receipt_id}")
        return ", ".join(places) or "the log"


@dataclass(frozen=True, slots=True)
class AuditState:
    """The last checkpoint an auditor verified: later logs must extend it."""

    tree_size: int
    root_hash: bytes
    jws: str

    def to_json(self) -> bytes:
        document = {
            "tree_size": self.tree_size,
            "root_hash": _HASH_PREFIX + self.root_hash.hex(),
            "checkpoint": self.jws,
        }
        return json.dumps(document, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> AuditState:
        """ValueError unless `data` is a state `to_json` wrote."""
        try:
            document = json.loads(data)
            root = document["root_hash"]
            size, jws = document["tree_size"], document["checkpoint"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not an audit state: {error}") from None
        if type(size) is not int or size < 1 or not isinstance(jws, str):
            raise ValueError("not an audit state: tree_size or checkpoint malformed")
        if not isinstance(root, str) or not root.startswith(_HASH_PREFIX) or len(root) != 71:
            raise ValueError("not an audit state: root_hash malformed")
        return cls(size, bytes.fromhex(root[len(_HASH_PREFIX) :]), jws)


@dataclass(frozen=True, slots=True)
class AuditReport:
    leaves: int
    checkpoints: int
    customers: int
    head: LogCheckpoint | None
    origin: str | None
    failure: AuditFailure | None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def state(self) -> AuditState | None:
        """What to remember after a passing audit (None: nothing to remember)."""
        if self.failure is not None or self.head is None:
            return None
        return AuditState(self.head.tree_size, self.head.root_hash, self.head.jws)


class AuditFailed(Exception):
    """An integrity failure found on the way (raised by the checks that a
    restore shares with the audit)."""

    def __init__(self, failure: AuditFailure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def _fail(
    reason: str,
    detail: str,
    *,
    log_index: int | None = None,
    tree_size: int | None = None,
    receipt_id: str | None = None,
) -> AuditFailed:
    return AuditFailed(AuditFailure(reason, detail, log_index, tree_size, receipt_id))


def audit_log(
    reader: LogReader,
    keys: TrustedKeys,
    last: AuditState | None = None,
    *,
    on_leaves: Callable[[int], None] | None = None,
    page_receipts: int = limits.audit_page_receipts_max,
) -> AuditReport:
    """Audit the log up to the head read at the start; the first failure stops it.

    `last`: the checkpoint a previous audit verified (rollback and fork are
    checked against it). `on_leaves(n)`: n more leaves rebuilt, for a
    progress bar. Store errors propagate; integrity failures are reported.
    """
    run = LogAuditRun(reader, keys, last, on_leaves=on_leaves, page_receipts=page_receipts)
    report = run.advance(None)
    if report is None:
        raise InvariantViolation("an unbounded advance did not finish the audit")
    return report


class LogAuditRun:
    """One audit of the log (up to the head read when it is made), advanced a
    slice of leaves at a time: the reconciler spreads it over its pass so
    that the hashing never holds the CPU, and the charges, for long.

    A slice ends on a page boundary; `on_leaves` runs after every page (the
    reconciler paces itself there). Store errors propagate from `advance`."""

    def __init__(
        self,
        reader: LogReader,
        keys: TrustedKeys,
        last: AuditState | None = None,
        *,
        on_leaves: Callable[[int], None] | None = None,
        page_receipts: int = limits.audit_page_receipts_max,
    ) -> None:
        self._head = reader.log_head()
        self._audit = _Audit(reader, keys, last, on_leaves or (lambda _: None), page_receipts)
        self._steps = self._audit.steps(self._head)
        self._report: AuditReport | None = None

    @property
    def tree_size(self) -> int:
        """The leaves this run audits (the head's size when it was made)."""
        return 0 if self._head is None else self._head.tree_size

    @property
    def leaves_done(self) -> int:
        return self._audit.leaves

    def advance(self, leaves_max: int | None) -> AuditReport | None:
        """Audit about `leaves_max` more leaves (None: all); the report once
        the run is over (a failure ends it), None while leaves remain."""
        if self._report is not None:
            return self._report
        goal = None if leaves_max is None else self._audit.leaves + max(1, leaves_max)
        try:
            for done in self._steps:
                if goal is not None and done >= goal:
                    return None
        except AuditFailed as failed:
            self._report = self._audit.report(self._head, failed.failure)
        else:
            self._report = self._audit.report(self._head, None)
        return self._report


def log_origin(reader: LogReader, keys: TrustedKeys) -> str | None:
    """The origin the head checkpoint names (None: no head, or it does not verify)."""
    head = reader.log_head()
    try:
        return None if head is None else verify_checkpoint(head.jws, keys).origin
    except CheckpointError:
        return None


def stored_jwks(records: Sequence[SigningKeyRecord]) -> dict[str, list[Any]]:
    """The JWKS of every key a store recorded as having signed (kept forever)."""
    return {"keys": [json.loads(record.public_jwk_json) for record in records]}


def checked_document(receipt: StoredReceipt, index: int) -> tuple[bytes, dict[str, Any]]:
    """The leaf hash of `receipt` at leaf `index`, and its signed document:
    its hash is that of its core, and its row's index columns are the
    receipt's (AuditFailed otherwise)."""
    where: dict[str, Any] = {"log_index": index, "receipt_id": receipt.receipt_id}
    if receipt.log_index != index:
        raise _fail(
            "receipt_missing",
            f"no receipt is stored at leaf {index} (the next is at {receipt.log_index})",
            **where,
        )
    try:
        document = orjson.loads(receipt.receipt_json)
        computed = receipt_hash(document)
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise _fail("invalid_field", f"receipt_json: {error!r}", **where) from None
    except (ReceiptFieldError, CanonicalizationError) as error:
        raise _fail("invalid_field", f"receipt_json: {error}", **where) from None
    if document.get("receipt_hash") != computed:
        raise _fail(
            "hash_mismatch",
            f"receipt_hash is {document.get('receipt_hash')} but the core hashes to {computed}",
            **where,
        )
    indexed = (receipt.receipt_hash, receipt.customer_id, receipt.seq)
    if indexed != (computed, document["customer_id"], document["seq"]):
        raise _fail("row_mismatch", "the row's index columns differ from its receipt", **where)
    return receipt_leaf(computed), document


def link_chain(
    chains: dict[str, tuple[int, str]], receipt: StoredReceipt, index: int
) -> None:
    """Extend the customer's chain in `chains` (customer -> (seq, receipt
    hash)) by `receipt`: gapless seq from 1, linked by hash."""
    where: dict[str, Any] = {"log_index": index, "receipt_id": receipt.receipt_id}
    seq, last_hash = chains.get(receipt.customer_id, (0, GENESIS_HASH))
    if receipt.seq != seq + 1:
        raise _fail(
            "seq_gap",
            f"customer {receipt.customer_id}: seq {receipt.seq} after {seq}",
            **where,
        )
    if receipt.previous_receipt_hash != last_hash:
        raise _fail(
            "previous_hash_mismatch",
            f"customer {receipt.customer_id}: seq {receipt.seq} links to "
            f"{receipt.previous_receipt_hash}, not to {last_hash}",
            **where,
        )
    chains[receipt.customer_id] = (receipt.seq, receipt.receipt_hash)


def verified_checkpoint(stored: LogCheckpoint, keys: TrustedKeys) -> Checkpoint:
    """The signed checkpoint of a stored (or archived) one: its JWS verifies
    against `keys` and its index columns are its payload's."""
    try:
        signed = verify_checkpoint(stored.jws, keys)
    except CheckpointError as error:
        raise _fail(error.reason, error.detail, tree_size=stored.tree_size) from None
    if (signed.tree_size, signed.root_hash) != (stored.tree_size, stored.root_hash):
        raise _fail(
            "checkpoint_mismatch",
            f"the stored row says {stored.tree_size} leaves, root "
            f"{stored.root_hash.hex()}; its signature says {signed.tree_size}, "
            f"{signed.root_hash.hex()}",
            tree_size=stored.tree_size,
        )
    return signed


class _Audit:
    def __init__(
        self,
        reader: LogReader,
        keys: TrustedKeys,
        last: AuditState | None,
        on_leaves: Callable[[int], None],
        page_receipts: int,
    ) -> None:
        self._reader = reader
        self._keys = keys
        self._last = last
        self._on_leaves = on_leaves
        self._page_receipts = page_receipts
        self._edge = RightEdge.empty()
        self._chains: dict[str, tuple[int, str]] = {}  # customer -> (seq, receipt_hash)
        self._partial_tiles: dict[tuple[int, int], bytes] = {}
        self._checkpoints = 0
        self._origin: str | None = None

    def report(self, head: LogCheckpoint | None, failure: AuditFailure | None) -> AuditReport:
        return AuditReport(
            leaves=self._edge.size,
            checkpoints=self._checkpoints,
            customers=len(self._chains),
            head=head,
            origin=self._origin,
            failure=failure,
        )

    @property
    def leaves(self) -> int:
        return self._edge.size

    def steps(self, head: LogCheckpoint | None) -> Iterator[int]:
        """Audit page by page, yielding the leaves rebuilt so far after each."""
        size = 0 if head is None else head.tree_size
        self._check_against_last(size)
        checkpoints = self._verified_checkpoints(size)
        pending = next(checkpoints, None)
        while self._edge.size < size:
            page = self._reader.receipts_by_log_index(
                self._edge.size, min(self._page_receipts, size - self._edge.size)
            )
            if not page:
                break
            leaves = self._checked_page(page)
            pending = self._append(leaves, pending, checkpoints)
            self._on_leaves(len(leaves))
            yield self._edge.size
        if pending is not None:
            raise _fail(
                "receipt_missing",
                f"the checkpoint of {pending.tree_size} leaves signs leaves from "
                f"{self._edge.size} on, and no receipt is stored there",
                log_index=self._edge.size,
                tree_size=pending.tree_size,
            )
        self._check_partial_tiles()
        self._check_nothing_unsigned(size)

    # -- checkpoints -----------------------------------------------------------
    def _verified_checkpoints(self, head_size: int) -> Iterator[LogCheckpoint]:
        after = 0
        while after < head_size:
            page = self._reader.log_checkpoints(after, limits.audit_page_checkpoints_max)
            for stored in page:
                if stored.tree_size > head_size:
                    return
                self._verify_stored(stored)
                self._checkpoints += 1
                yield stored
            if not page:
                return
            after = page[-1].tree_size

    def _verify_stored(self, stored: LogCheckpoint) -> Checkpoint:
        signed = verified_checkpoint(stored, self._keys)
        if self._origin is None:
            self._origin = signed.origin
        elif signed.origin != self._origin:
            raise _fail(
                "origin_changed",
                f"origin {signed.origin!r} after {self._origin!r}",
                tree_size=stored.tree_size,
            )
        return signed

    def _check_against_last(self, head_size: int) -> None:
        """Before the long rebuild: the cheap, loud signs of a rollback or a fork."""
        last = self._last
        if last is None:
            return
        if head_size < last.tree_size:
            raise _fail(
                "rollback",
                f"the log has {head_size} leaves; a previous audit verified "
                f"{last.tree_size} (checkpoint {last.jws})",
                tree_size=last.tree_size,
            )
        stored = self._reader.log_checkpoint(last.tree_size)
        if stored is not None and stored.root_hash != last.root_hash:
            self._verify_stored(stored)  # a fork is two SIGNED roots for one size
            raise self._fork(stored.root_hash, f"the stored checkpoint {stored.jws}")

    def _fork(self, root: bytes, what: str) -> AuditFailed:
        last = self._last
        assert last is not None  # only called with a state
        return _fail(
            "fork",
            f"{what} gives {last.tree_size} leaves the root sha256:{root.hex()}; a previous "
            f"audit verified sha256:{last.root_hash.hex()} (checkpoint {last.jws})",
            tree_size=last.tree_size,
        )

    # -- leaves ------------------------------------------------------------------
    def _checked_page(self, page: list[StoredReceipt]) -> list[bytes]:
        """The page's leaf hashes, each receipt checked in log order."""
        start = self._edge.size
        leaves = [checked_document(r, start + offset)[0] for offset, r in enumerate(page)]
        stored = self._stored_leaves(start, len(leaves))
        by_leaf = {leaf: start + offset for offset, leaf in enumerate(leaves)}
        for offset, (receipt, leaf) in enumerate(zip(page, leaves, strict=True)):
            index = start + offset
            stored_leaf = stored[offset * HASH_BYTES : (offset + 1) * HASH_BYTES]
            if stored_leaf != leaf:
                raise self._misplaced(receipt, index, stored_leaf, by_leaf)
            link_chain(self._chains, receipt, index)
        return leaves

    def _stored_leaves(self, start: int, count: int) -> bytes:
        """The stored level-0 hashes of leaves [start, start + count), concatenated."""
        first, last = start // TILE_WIDTH_MAX, (start + count - 1) // TILE_WIDTH_MAX
        keys = [(0, index) for index in range(first, last + 1)]
        tiles = self._reader.read_tiles(keys)
        joined = b"".join(tiles.get(key, b"").ljust(_FULL_TILE_BYTES, b"\0") for key in keys)
        offset = (start - first * TILE_WIDTH_MAX) * HASH_BYTES
        return joined[offset : offset + count * HASH_BYTES]

    def _misplaced(
        self, receipt: StoredReceipt, index: int, stored_leaf: bytes, by_leaf: dict[bytes, int]
    ) -> AuditFailed:
        where: dict[str, Any] = {"log_index": index, "receipt_id": receipt.receipt_id}
        other = by_leaf.get(stored_leaf)
        if other is not None:
            return _fail(
                "reordered",
                f"the log's leaf {index} is the receipt stored at {other}, not this one",
                **where,
            )
        return _fail(
            "tile_mismatch",
            f"the stored tile holds another hash than this receipt's for leaf {index}",
            **where,
        )

    # -- the tree ------------------------------------------------------------------
    def _append(
        self,
        leaves: list[bytes],
        pending: LogCheckpoint | None,
        checkpoints: Iterator[LogCheckpoint],
    ) -> LogCheckpoint | None:
        """Rebuild with `leaves`, stopping at every checkpoint (and the
        remembered size) on the way to compare roots; returns the next checkpoint."""
        done = 0
        full_tiles: dict[tuple[int, int], bytes] = {}
        while done < len(leaves):
            stops = [self._edge.size + len(leaves) - done]
            if pending is not None:
                stops.append(pending.tree_size)
            if self._last is not None and self._last.tree_size > self._edge.size:
                stops.append(self._last.tree_size)
            take = min(stops) - self._edge.size
            appended = self._edge.appended(leaves[done : done + take], with_proofs=False)
            self._edge.adopt(appended)
            self._keep_tiles(appended, full_tiles)
            done += take
            if pending is not None and self._edge.size == pending.tree_size:
                self._check_root(pending)
                pending = next(checkpoints, None)
            last = self._last
            if last and self._edge.size == last.tree_size and self._edge.root != last.root_hash:
                raise self._fork(self._edge.root, "the stored receipts")
        self._check_tiles(full_tiles, exact=True)
        return pending

    def _check_root(self, checkpoint: LogCheckpoint) -> None:
        if self._edge.root != checkpoint.root_hash:
            raise _fail(
                "root_mismatch",
                f"the stored receipts rebuild root sha256:{self._edge.root.hex()}, "
                f"the checkpoint signs sha256:{checkpoint.root_hash.hex()}",
                tree_size=checkpoint.tree_size,
            )

    def _keep_tiles(self, appended: Appended, full: dict[tuple[int, int], bytes]) -> None:
        for key, contents in appended.tiles.items():
            if key[0] == 0:
                continue  # level 0 holds the leaves: compared leaf by leaf
            if len(contents) == _FULL_TILE_BYTES:
                full[key] = contents
                self._partial_tiles.pop(key, None)
            else:
                self._partial_tiles[key] = contents

    def _check_tiles(self, computed: dict[tuple[int, int], bytes], *, exact: bool) -> None:
        stored = self._reader.read_tiles(list(computed)) if computed else {}
        for key, contents in sorted(computed.items()):
            found = stored.get(key)
            # The right edge's partial tiles may have grown since the head was read.
            fits = found == contents if exact else found is not None and found.startswith(contents)
            if not fits:
                level, index = key
                raise _fail(
                    "tile_mismatch",
                    f"stored tile {level}/{index} differs from the one rebuilt from the receipts",
                    log_index=index * TILE_WIDTH_MAX ** (level + 1),
                )

    def _check_partial_tiles(self) -> None:
        self._check_tiles(self._partial_tiles, exact=False)

    def _check_nothing_unsigned(self, head_size: int) -> None:
        beyond = self._reader.receipts_by_log_index(head_size, 1)
        head_now = self._reader.log_head()
        if beyond and (head_now is None or head_now.tree_size == head_size):
            raise _fail(
                "unsigned_leaf",
                f"receipt stored at leaf {beyond[0].log_index}, beyond the head of {head_size}",
                log_index=beyond[0].log_index,
                receipt_id=beyond[0].receipt_id,
            )
