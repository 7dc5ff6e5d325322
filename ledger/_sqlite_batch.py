"""Planning and diagnosing a `commit_batch` for the SQLite adapter.

The fast path checks nothing row by row in SQL: it validates each customer's
run of receipts in Python, then lets one compare-and-set per customer and the
unique indexes decide. Only when that fails (rare) does `diagnose` look at
every customer to name all the offenders, as the port promises.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger import limits
from ledger._sqlite_refusals import refused_keys
from ledger._sqlite_rows import Row, receipt_params, record_params
from ledger._sqlite_webhooks import event_params, events_already_fired
from ledger.model import StoredReceipt
from ledger.ports import ReceiptWrite


@dataclass(slots=True)
class BatchPlan:
    receipts: list[Row] = field(default_factory=list)
    # (receipt_id, api_key_id, client_address, user_agent, received_at, request_id)
    requests: list[Row] = field(default_factory=list)
    # Outbound events (threshold alerts), see ledger._sqlite_webhooks.
    events: list[Row] = field(default_factory=list)
    # (new seq, new hash, new balance, customer, expected seq, expected hash, expected balance)
    account_cas: list[Row] = field(default_factory=list)
    # (delta, customer_id, entitlement_id)
    usage: list[Row] = field(default_factory=list)
    # (customer_id, idempotency_key) of every receipt: none may be a refusal's.
    keys: list[tuple[str, str]] = field(default_factory=list)
    by_customer: dict[str, list[StoredReceipt]] = field(default_factory=dict)
    # Customers whose own receipts are inconsistent: reason per customer.
    conflicts: dict[str, str] = field(default_factory=dict)


def plan_batch(writes: Sequence[ReceiptWrite]) -> BatchPlan:
    plan = BatchPlan()
    by_customer = plan.by_customer
    receipt_owner: dict[str, str] = {}
    for write in writes:
        receipt = write.receipt
        if write.request is not None:
            plan.requests.append((receipt.receipt_id, *record_params(write.request)))
        plan.events.extend(event_params(event) for event in write.events)
        by_customer.setdefault(receipt.customer_id, []).append(receipt)
        owner = receipt_owner.get(receipt.receipt_id)
        if owner is None:
            receipt_owner[receipt.receipt_id] = receipt.customer_id
        else:
            plan.conflicts.setdefault(owner, "duplicate_receipt_id_in_batch")
            plan.conflicts.setdefault(receipt.customer_id, "duplicate_receipt_id_in_batch")

    usage: dict[tuple[str, str], int] = {}
    for customer_id, run in by_customer.items():
        reason = _check_run(run)
        if reason is not None:
            plan.conflicts.setdefault(customer_id, reason)
            continue
        first, last = run[0], run[-1]
        plan.account_cas.append(
            (
                last.seq,
                last.receipt_hash,
                last.balance_after_minor,
                customer_id,
                first.seq - 1,
                first.previous_receipt_hash,
                first.balance_after_minor - first.amount_minor,
            )
        )
        for receipt in run:
            key = (customer_id, receipt.entitlement_id)
            usage[key] = usage.get(key, 0) + receipt.amount_minor
    if not plan.conflicts:
        plan.receipts = [receipt_params(write.receipt) for write in writes]
        plan.usage = [(delta, cid, eid) for (cid, eid), delta in usage.items()]
        plan.keys = [(w.receipt.customer_id, w.receipt.idempotency_key) for w in writes]
    return plan


def _check_run(run: list[StoredReceipt]) -> str | None:
    """Why one customer's receipts in a batch cannot be a piece of a chain, or None."""
    keys: set[str] = set()
    previous: StoredReceipt | None = None
    for receipt in run:
        if type(receipt.seq) is not int or receipt.seq < 1:
            return "invalid_seq"
        if type(receipt.amount_minor) is not int or (
            abs(receipt.amount_minor) > limits.amount_minor_max
        ):
            return "invalid_amount"
        if type(receipt.balance_after_minor) is not int or (
            abs(receipt.balance_after_minor) > limits.balance_minor_max
        ):
            return "invalid_balance"
        if receipt.idempotency_key in keys:
            return "duplicate_idempotency_key_in_batch"
        keys.add(receipt.idempotency_key)
        if previous is not None:
            if receipt.seq != previous.seq + 1:
                return "seq_gap_in_batch"
            if receipt.previous_receipt_hash != previous.receipt_hash:
                return "broken_hash_chain_in_batch"
            if receipt.balance_after_minor != previous.balance_after_minor + receipt.amount_minor:
                return "balance_not_sum_of_receipts"
        previous = receipt
    return None


def diagnose(conn: sqlite3.Connection, plan: BatchPlan) -> dict[str, str]:
    """Every offending customer of a failed batch and why, read outside any
    transaction while the caller still holds the write lock."""
    reasons = dict(plan.conflicts)
    for customer_id in events_already_fired(conn, plan.events):
        reasons.setdefault(customer_id, "event_already_stored")
    for customer_id, _key in refused_keys(conn, plan.keys):
        reasons.setdefault(customer_id, "idempotency_key_exists")
    for customer_id, run in plan.by_customer.items():
        if customer_id in reasons:
            continue
        first = run[0]
        rows = conn.execute(
            "SELECT seq, last_receipt_hash, balance_minor FROM accounts WHERE customer_id = ?",
            (customer_id,),
        ).fetchall()
        if not rows:
            reasons[customer_id] = "unknown_customer"
            continue
        seq, last_hash, balance = rows[0]
        if seq != first.seq - 1:
            reasons[customer_id] = "stale_seq"
        elif last_hash != first.previous_receipt_hash:
            reasons[customer_id] = "previous_hash_mismatch"
        elif balance != first.balance_after_minor - first.amount_minor:
            reasons[customer_id] = "balance_mismatch"
        else:
            for receipt in run:
                if conn.execute(
                    "SELECT 1 FROM receipts WHERE customer_id = ? AND idempotency_key = ?",
                    (customer_id, receipt.idempotency_key),
                ).fetchall():
                    reasons[customer_id] = "idempotency_key_exists"
                    break
                if conn.execute(
                    "SELECT 1 FROM receipts WHERE receipt_id = ?", (receipt.receipt_id,)
                ).fetchall():
                    reasons[customer_id] = "receipt_id_exists"
                    break
    return reasons
