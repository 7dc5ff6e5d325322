"""Builds the dispute evidence bundle of one receipt (see crypto._evidence
for what it holds and how it is checked).

Bounded work whatever the ledger's size: a receipt's commit wrote at most
`commit_batch_receipts_max` leaves, so its checkpoint and the one before
are among the few checkpoints around its leaf index, and the customer's
receipts since the previous checkpoint are among their last that many.
Proofs come from the tiles (O(log n) hashes, cached full tiles).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from crypto import KeyRing, TrustedKeys, evidence_verdict, seal_bundle
from crypto._evidence import EVIDENCE_OBJECT, EVIDENCE_VERSION
from ledger import ChargeRequests, LedgerStore, LogCheckpoint, StoredReceipt, limits
from ledger.log_proofs import LogProofs

__all__ = ["build_evidence"]

_BATCH_MAX = limits.commit_batch_receipts_max


def build_evidence(
    store: LedgerStore,
    log_proofs: LogProofs,
    requests: ChargeRequests | None,
    key_ring: KeyRing,
    receipt: StoredReceipt,
    now_rfc3339: Callable[[], str],
) -> bytes:
    """The sealed bundle, as written (canonical JSON bytes)."""
    document: dict[str, Any] = orjson.loads(receipt.receipt_json)
    consistency = None
    previous_size = None
    if receipt.log_index is not None:
        own, previous = _checkpoints_around(log_proofs, receipt.log_index)
        previous_size = previous.tree_size if previous is not None else None
        document["log"] = log_proofs.inclusion(receipt.log_index, own).to_json()
        head = log_proofs.head() or own
        proof = log_proofs.consistency(own.tree_size, head.tree_size)
        consistency = {
            "tree_size": head.tree_size,
            "checkpoint": head.jws,
            "proof": [node.hex() for node in proof],
        }
    record = requests.charge_request(receipt.receipt_id) if requests is not None else None
    jwks = key_ring.jwks()
    bundle: dict[str, Any] = {
        "object": EVIDENCE_OBJECT,
        "version": EVIDENCE_VERSION,
        "generated_at": now_rfc3339(),
        "receipt_id": receipt.receipt_id,
        "customer_id": receipt.customer_id,
        "receipt": document,
        "consistency": consistency,
        "chain": _chain(store, receipt, previous_size),
        "jwks": jwks,
        "request": None if record is None else dataclasses.asdict(record),
    }
    bundle["verdict"] = evidence_verdict(bundle, TrustedKeys(jwks))
    return seal_bundle(bundle, key_ring.active)


def _checkpoints_around(
    log_proofs: LogProofs, log_index: int
) -> tuple[LogCheckpoint, LogCheckpoint | None]:
    """The receipt's commit checkpoint (the first that holds its leaf) and
    the checkpoint before it (None when the receipt's commit was the first)."""
    nearby = log_proofs.checkpoints(max(-1, log_index - _BATCH_MAX - 1), _BATCH_MAX + 2)
    own = next((c for c in nearby if c.tree_size > log_index), None)
    if own is None:
        raise LookupError(f"no checkpoint holds leaf {log_index}")
    before = [c for c in nearby if c.tree_size <= log_index]
    return own, (before[-1] if before else None)


def _chain(
    store: LedgerStore, receipt: StoredReceipt, previous_size: int | None
) -> list[dict[str, Any]]:
    """The customer's receipts from the last one already in the previous
    checkpoint (the link into it) up to this receipt, in seq order."""
    window = store.list_receipts(
        receipt.customer_id, max(0, receipt.seq - _BATCH_MAX - 1), _BATCH_MAX + 1
    )
    window = [r for r in window if r.seq <= receipt.seq]
    start = 0
    if previous_size is not None:
        for position, stored in enumerate(window):
            if stored.log_index is not None and stored.log_index < previous_size:
                start = position
    return [orjson.loads(stored.receipt_json) for stored in window[start:]]
