"""Chains: consecutive receipts of one customer, linked by seq and previous hash."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

import orjson

from crypto._check import LeafCheck, Link, check_receipt_logged, link_of, receipt_id_of
from crypto._jws import VerificationResult
from crypto._trusted import TrustedKeys, trusted_keys
from crypto.receipt import GENESIS_HASH, is_receipt_hash


@dataclass(frozen=True, slots=True)
class ChainFailure:
    """The first broken link: `index` is 0-based in the input order."""

    index: int
    receipt_id: str | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """How far a chain verified, and the first failure if any."""

    verified: int
    failure: ChainFailure | None
    customer_id: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str | None = None  # receipt_hash of the last verified receipt
    starts_at_genesis: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None


# One checked receipt as the chain walk consumes it: the verdict, its chain
# fields when the verdict is ok, and its receipt_id (for failures) when known.
Checked = tuple[VerificationResult, Link | None, str | None]


def check_known_head(known_head: str | None) -> None:
    if known_head is not None and not is_receipt_hash(known_head):
        raise ValueError("known_head must be 'sha256:' + 64 lowercase hex digits")


class ChainPart(NamedTuple):
    """One stretch of a chain walked on its own (a byte range of a file, in a worker
    process): what joining it to the stretch before needs, and nothing per receipt.
    `failure.index` counts from the stretch's first receipt."""

    verified: int
    first: Link | None
    last: Link | None
    head_reached: bool
    failure: ChainFailure | None


class ChainWalk:
    """walk_chain's state: the receipts linked so far, in input order.

    The one place that decides whether a receipt follows the one before
    (`joins`), for receipts one by one (`add`) and for stretches walked
    elsewhere (`add_part`), so a chain split in parts links by the same rules.
    """

    __slots__ = ("first", "head_reached", "known_head", "last", "verified")

    def __init__(self, known_head: str | None) -> None:
        self.known_head = known_head
        self.verified = 0
        self.first: Link | None = None
        self.last: Link | None = None
        self.head_reached = False

    def joins(self, index: int, link: Link) -> ChainFailure | None:
        """The failure if `link` (at `index`) does not follow the last receipt linked."""
        broken = _broken_link(self.last, link) if self.last is not None else None
        return ChainFailure(index, link.receipt_id, *broken) if broken is not None else None

    def add(self, index: int, checked: Checked) -> ChainFailure | None:
        """Link one receipt checked on its own; its failure, or None once linked."""
        result, link, receipt_id = checked
        if link is None:
            return ChainFailure(index, receipt_id, result.reason or "invalid_field", result.detail)
        failure = self.joins(index, link)
        if failure is not None:
            return failure
        self.first = self.first or link
        self.last = link
        self.verified += 1
        self.head_reached = self.head_reached or link.receipt_hash == self.known_head
        return None

    def add_part(self, index: int, part: ChainPart) -> ChainFailure | None:
        """Link a stretch whose first receipt is at `index`: exactly as if its
        receipts had come through `add` one by one."""
        if part.first is not None and part.last is not None:
            failure = self.joins(index, part.first)
            if failure is not None:
                return failure
            self.first = self.first or part.first
            self.last = part.last
            self.verified += part.verified
            self.head_reached = self.head_reached or part.head_reached
        if part.failure is None:
            return None
        return replace(part.failure, index=index + part.failure.index)

    def part(self, failure: ChainFailure | None) -> ChainPart:
        """This walk as a stretch of a longer chain (without the log positions)."""
        first = self.first._replace(log=None) if self.first else None
        last = self.last._replace(log=None) if self.last else None
        return ChainPart(self.verified, first, last, self.head_reached, failure)

    def report(self, failure: ChainFailure | None) -> ChainReport:
        first, last = self.first, self.last
        return ChainReport(
            verified=self.verified,
            failure=failure,
            customer_id=first.customer_id if first else None,
            first_seq=first.seq if first else None,
            last_seq=last.seq if last else None,
            head_hash=last.receipt_hash if last else None,
            starts_at_genesis=bool(first and first.previous_receipt_hash == GENESIS_HASH),
        )

    def end(self) -> ChainReport:
        """The report once the input ended without a failure: truncated unless
        the known head was reached."""
        last = self.last
        if self.known_head is not None and not self.head_reached:
            ends_at = f"seq {last.seq} ({last.receipt_hash})" if last else "nothing"
            detail = (
                f"the export ends at {ends_at} without reaching the known head "
                f"{self.known_head}: receipts after it were left out"
            )
            return self.report(ChainFailure(self.verified, None, "truncated", detail))
        return self.report(None)


def walk_chain(checked: Iterable[Checked], known_head: str | None) -> ChainReport:
    """Link checks in input order over receipts already checked one by one."""
    walk = ChainWalk(known_head)
    for index, item in enumerate(checked):
        failure = walk.add(index, item)
        if failure is not None:
            return walk.report(failure)
    return walk.end()


def _broken_link(previous: Link, link: Link) -> tuple[str, str] | None:
    if link.customer_id != previous.customer_id:
        return "customer_changed", f"customer {link.customer_id!r} after {previous.customer_id!r}"
    if link.seq != previous.seq + 1:
        return "seq_gap", f"expected seq {previous.seq + 1} after {previous.seq}, found {link.seq}"
    if link.previous_receipt_hash != previous.receipt_hash:
        return (
            "previous_hash_mismatch",
            f"previous_receipt_hash {link.previous_receipt_hash} is not the hash of seq "
            f"{previous.seq} ({previous.receipt_hash})",
        )
    return None


def checked_receipt(
    receipt: object, keys: TrustedKeys, leaf_check: LeafCheck | None = None
) -> Checked:
    result, position = check_receipt_logged(receipt, keys, leaf_check)
    if result.ok and (type(receipt) is dict or isinstance(receipt, Mapping)):
        return result, link_of(receipt, position), None
    return result, None, receipt_id_of(receipt)


def checked_line(line: bytes, keys: TrustedKeys) -> Checked:
    """checked_receipt of one JSON line; a line that is not JSON fails as "not_json"."""
    try:
        receipt = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return VerificationResult(False, "not_json", f"not JSON: {error}"), None, None
    return checked_receipt(receipt, keys)


def verify_chain(
    receipts: Iterable[Mapping[str, object]],
    jwks: Mapping[str, object] | TrustedKeys,
    known_head: str | None = None,
    leaf_check: LeafCheck | None = None,
) -> ChainReport:
    """Verify one customer's receipts in chain order; stop at the first broken link.

    Streaming: `receipts` is consumed once, so memory does not grow with the
    chain. Each receipt is checked on its own first (so an altered field is
    reported as hash_mismatch, not as the link it breaks), then linked to the
    one before. `known_head` is a receipt_hash the customer holds: an export
    that never reaches it was truncated. A malformed JWKS raises JWKSError.
    `leaf_check` proves receipts that carry no proof of their own against a
    log the caller holds (the service's audit of its own store).
    """
    check_known_head(known_head)
    keys = trusted_keys(jwks)
    return walk_chain(
        (checked_receipt(receipt, keys, leaf_check) for receipt in receipts), known_head
    )
