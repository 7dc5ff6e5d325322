"""Chains: consecutive receipts of one customer, linked by seq and previous hash."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


def walk_chain(checked: Iterable[Checked], known_head: str | None) -> ChainReport:
    """Link checks in input order over receipts already checked one by one."""
    count = 0
    first: Link | None = None
    last: Link | None = None
    head_reached = False

    def report(failure: ChainFailure | None) -> ChainReport:
        return ChainReport(
            verified=count,
            failure=failure,
            customer_id=first.customer_id if first else None,
            first_seq=first.seq if first else None,
            last_seq=last.seq if last else None,
            head_hash=last.receipt_hash if last else None,
            starts_at_genesis=bool(first and first.previous_receipt_hash == GENESIS_HASH),
        )

    for index, (result, link, receipt_id) in enumerate(checked):
        if link is None:
            reason = result.reason or "invalid_field"
            return report(ChainFailure(index, receipt_id, reason, result.detail))
        broken = _broken_link(last, link) if last is not None else None
        if broken is not None:
            return report(ChainFailure(index, link.receipt_id, *broken))
        first = first or link
        last = link
        count += 1
        head_reached = head_reached or link.receipt_hash == known_head
    if known_head is not None and not head_reached:
        ends_at = f"seq {last.seq} ({last.receipt_hash})" if last else "nothing"
        detail = (
            f"the export ends at {ends_at} without reaching the known head {known_head}: "
            "receipts after it were left out"
        )
        return report(ChainFailure(count, None, "truncated", detail))
    return report(None)


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
