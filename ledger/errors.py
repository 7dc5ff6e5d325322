"""Errors raised by storage adapters, the same for every adapter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class LedgerError(Exception):
    """Base class: the store could not do what was asked."""


class AlreadyExists(LedgerError):
    """A record with this identity is already stored."""


class NotFound(LedgerError):
    """The record does not exist."""


class ChainConflict(LedgerError):
    """Another writer advanced these customers' chains (compare-and-set on seq
    failed) or already used one of the idempotency keys. Nothing in the batch
    was written; the writer retries without these customers and their actors
    reload from the store."""

    def __init__(
        self, customer_ids: Iterable[str], reasons: Mapping[str, str] | None = None
    ) -> None:
        self.customer_ids = frozenset(customer_ids)
        # customer_id -> why (e.g. "stale_seq", "idempotency_key_exists"), for
        # logs and debugging; the writer only needs `customer_ids`.
        self.reasons: dict[str, str] = dict(reasons or {})
        detail = f" ({self.reasons})" if self.reasons else ""
        super().__init__(f"chain conflict for {sorted(self.customer_ids)}{detail}")


class LogConflict(LedgerError):
    """Another writer appended to the receipt log since this writer read its
    head (compare-and-set on the log size failed). Nothing was written; the
    writer reloads the log's right edge, rebuilds and re-signs the batch."""

    def __init__(self, stored_size: int, expected_size: int) -> None:
        self.stored_size = stored_size
        self.expected_size = expected_size
        super().__init__(f"the log has {stored_size} leaves, expected {expected_size}")


class StoreLocked(LedgerError):
    """The embedded store is already open in another process."""


class StoreUnavailable(LedgerError):
    """The store cannot be reached or written right now (retry-safe)."""


class InvariantViolation(LedgerError):
    """Data about to be written (or just read) breaks a ledger invariant: a bug,
    not a retryable condition."""


def check_invariant(condition: bool, message: str) -> None:
    """Raise InvariantViolation unless `condition`; survives `python -O`."""
    if not condition:
        raise InvariantViolation(message)
