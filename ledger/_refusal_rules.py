"""The rules of refusals kept under idempotency keys, one place for every
adapter (ledger.model.StoredRefusal): a customer's key names a receipt or a
refusal, never both, and a lookup by key finds either."""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from typing import Protocol

from ledger.model import StoredAnswer, StoredReceipt, StoredRefusal


class _FindsByKey(Protocol):
    def find_receipts_by_keys(
        self, customer_id: str, idempotency_keys: Sequence[str]
    ) -> dict[str, StoredReceipt]: ...

    def refusals_by_keys(self, customer_id: str, keys: Iterable[str]) -> list[StoredRefusal]: ...


def find_answers(
    store: _FindsByKey, customer_id: str, idempotency_keys: Sequence[str]
) -> dict[str, StoredAnswer]:
    """LedgerStore.find_answers_by_keys: receipts first (the usual answer),
    then refusals for the keys with none."""
    keys = list(dict.fromkeys(idempotency_keys))
    answers: dict[str, StoredAnswer] = dict(store.find_receipts_by_keys(customer_id, keys))
    missing = [key for key in keys if key not in answers]
    answers.update((r.idempotency_key, r) for r in store.refusals_by_keys(customer_id, missing))
    return answers


def refusal_key_conflicts(
    refusals: Sequence[StoredRefusal], used: Set[tuple[str, str]]
) -> dict[str, str]:
    """Customers (with the reason) of refusals whose key is taken: in
    `used` (the stored receipts' and refusals' keys) or earlier in the list."""
    reasons: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for refusal in refusals:
        pair = (refusal.customer_id, refusal.idempotency_key)
        if pair in used or pair in seen:
            reasons.setdefault(refusal.customer_id, "idempotency_key_exists")
        seen.add(pair)
    return reasons
