"""Lost-or-doubled check: after a load run, compare what clients saw with the ledger.

The Locust scenarios write a results file (JSON lines, one object per line):

- `{"t": "customer", "customer_id", "api_key", "entitlement_id", "currency",
   "quota": "1000.00" | null, "policy": "hard" | "soft"}` for every customer the
  run created (the API key lets the check read that customer's chain);
- `{"t": "sent", "customer_id", "key", "amount"}` just before a request leaves;
- `{"t": "outcome", "customer_id", "key", "status", "receipt_id", "replayed"}`
  for every answer (status 0 = no answer: timeout or connection error).

Then, per customer, the check reads the chain (`GET /v1/receipts`, paged by
`after_seq`) and the balance (`GET /v1/balance`) and reports a violation when:

- `missing_receipt`: a 202 (or replay) was seen but the chain has no receipt for
  that idempotency key, or it has one with another `receipt_id`;
- `doubled_ack`: one key was acknowledged with two different receipt ids;
- `duplicate_key`: one idempotency key appears twice in a chain;
- `seq_gap`: seqs are not exactly 1..n; `chain_link`: a `previous_receipt_hash`
  is not the hash of the receipt before it;
- `balance_mismatch`: a receipt's `balance_after_minor` or the balance endpoint
  disagrees with the running sum of the receipts;
- `charged_after_rejection`: every attempt with a key was refused outright
  (402, 429, 4xx) yet the chain holds a receipt for it;
- `unexpected_receipt`: a receipt whose key this run never sent;
- `amount_mismatch`: the receipt charges another amount than was sent;
- `hard_quota_exceeded`: receipts of a hard-quota entitlement sum above the quota;
- `unreadable`: a chain or balance could not be read or parsed.

Keys sent without an answer (in flight when the run stopped, or timed out) may
have at most one receipt; they are counted, not flagged.

Usage: `python -m loadtest.check --host http://127.0.0.1:8080 --results FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import aiohttp
import orjson

# Chains are read in pages of this many receipts: below the service's page
# bound (1,000), so a full page never hides whether more follow.
receipts_page_max = 500
# A chain longer than this many pages is refused rather than read forever.
chain_pages_max = 10_000
# Customers read at the same time.
fetch_concurrency_max = 16
fetch_timeout_s = 30.0
# Violations printed per kind; the rest are counted.
violations_shown_max = 10

# Statuses that prove an attempt created nothing (the request was refused before
# it reached the account). 409 is not here: it proves the key already exists.
_REFUSED_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 415, 422, 429})
_ACCEPTED_STATUSES = frozenset({200, 201, 202})
_CURRENCY_EXPONENT = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}
_GENESIS_HASH = "sha256:" + "0" * 64


def amount_to_minor(amount: str, currency: str) -> int:
    """A decimal string ("0.25") in minor units of `currency` (25 for USD)."""
    exponent = _CURRENCY_EXPONENT.get(currency.upper(), 2)
    try:
        value = Decimal(amount) * (Decimal(10) ** exponent)
    except InvalidOperation as error:
        raise ValueError(f"not a decimal amount: {amount!r}") from error
    if value != value.to_integral_value():
        raise ValueError(f"{amount!r} has more decimals than {currency}")
    return int(value)


@dataclass
class CustomerRecord:
    customer_id: str
    api_key: str
    entitlement_id: str = ""
    currency: str = "USD"
    quota: str | None = None
    policy: str = "soft"


@dataclass
class KeyHistory:
    """Everything the clients did with one (customer, idempotency key)."""

    sent: int = 0
    amounts: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    receipt_ids: set[str] = field(default_factory=set)


@dataclass
class RunRecords:
    customers: dict[str, CustomerRecord] = field(default_factory=dict)
    keys: dict[str, dict[str, KeyHistory]] = field(default_factory=lambda: defaultdict(dict))
    statuses: Counter[int] = field(default_factory=Counter)
    lines: int = 0


@dataclass
class Ledger:
    """One customer's chain and balance as the service reports them."""

    receipts: list[dict[str, Any]]
    balance_minor: int | None
    error: str | None = None
    # The list said has_more=false, yet a further page held receipts.
    has_more_wrong: bool = False


@dataclass(frozen=True)
class Violation:
    kind: str
    customer_id: str
    detail: str


@dataclass
class Report:
    violations: list[Violation]
    customers: int
    receipts: int
    acknowledged: int
    replays: int
    unanswered: int
    statuses: Counter[int]

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        statuses = ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(self.statuses.items()))
        lines = [
            f"check: {self.customers} customers, {self.receipts} receipts in their chains",
            f"check: {self.acknowledged} keys acknowledged (202), {self.replays} replays, "
            f"{self.unanswered} keys without an answer",
            f"check: client saw {statuses or 'nothing'}",
        ]
        if self.ok:
            lines.append(
                "check: OK - nothing lost, nothing doubled, chains gapless, balances add up"
            )
            return "\n".join(lines)
        by_kind: dict[str, list[Violation]] = defaultdict(list)
        for violation in self.violations:
            by_kind[violation.kind].append(violation)
        lines.append(f"check: FAILED - {len(self.violations)} violations")
        for kind, items in sorted(by_kind.items()):
            lines.append(f"  {kind}: {len(items)}")
            for item in items[:violations_shown_max]:
                lines.append(f"    {item.customer_id}: {item.detail}")
            if len(items) > violations_shown_max:
                lines.append(f"    ... and {len(items) - violations_shown_max} more")
        return "\n".join(lines)


def load_records(lines: Iterable[str | bytes]) -> RunRecords:
    """Parse a results file; a truncated last line (a killed writer) is skipped."""
    records = RunRecords()
    for raw in lines:
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        records.lines += 1
        kind = item.get("t")
        customer_id = str(item.get("customer_id", ""))
        if kind == "customer":
            records.customers[customer_id] = CustomerRecord(
                customer_id=customer_id,
                api_key=str(item["api_key"]),
                entitlement_id=str(item.get("entitlement_id", "")),
                currency=str(item.get("currency", "USD")),
                quota=item.get("quota"),
                policy=str(item.get("policy", "soft")),
            )
        elif kind == "sent":
            history = records.keys[customer_id].setdefault(str(item["key"]), KeyHistory())
            history.sent += 1
            if item.get("amount") is not None:
                history.amounts.add(str(item["amount"]))
        elif kind == "outcome":
            history = records.keys[customer_id].setdefault(str(item["key"]), KeyHistory())
            status = int(item.get("status", 0))
            history.statuses.append(status)
            records.statuses[status] += 1
            if status in _ACCEPTED_STATUSES and item.get("receipt_id"):
                history.receipt_ids.add(str(item["receipt_id"]))
    return records


def read_records(path: Path) -> RunRecords:
    with path.open("rb") as handle:
        return load_records(handle)


def _receipt_core(item: dict[str, Any]) -> dict[str, Any]:
    # Tolerate a list that wraps each receipt ({"receipt": {...}}).
    inner = item.get("receipt")
    return inner if isinstance(inner, dict) else item


def _int_field(receipt: dict[str, Any], name: str) -> int | None:
    value = receipt.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_chain(
    customer: CustomerRecord, receipts: list[dict[str, Any]], violations: list[Violation]
) -> dict[str, dict[str, Any]]:
    """Seq, link, key and balance rules on one chain; returns receipts by key."""
    cid = customer.customer_id
    by_key: dict[str, dict[str, Any]] = {}
    previous_hash = _GENESIS_HASH
    running_minor = 0
    entitlement_minor: Counter[str] = Counter()
    for index, receipt in enumerate(receipts, start=1):
        seq = _int_field(receipt, "seq")
        if seq != index:
            violations.append(Violation("seq_gap", cid, f"receipt #{index} has seq {seq}"))
        link = receipt.get("previous_receipt_hash")
        if link is not None and link != previous_hash:
            violations.append(
                Violation("chain_link", cid, f"seq {seq}: previous_receipt_hash does not match")
            )
        previous_hash = str(receipt.get("receipt_hash", previous_hash))
        key = str(receipt.get("idempotency_key", ""))
        if key in by_key:
            violations.append(
                Violation(
                    "duplicate_key",
                    cid,
                    f"key {key!r} charged twice: {by_key[key].get('receipt_id')} "
                    f"and {receipt.get('receipt_id')}",
                )
            )
        else:
            by_key[key] = receipt
        amount_minor = _int_field(receipt, "amount_minor")
        if amount_minor is None:
            violations.append(Violation("unreadable", cid, f"seq {seq}: no integer amount_minor"))
            continue
        running_minor += amount_minor
        entitlement_minor[str(receipt.get("entitlement_id", ""))] += amount_minor
        after = _int_field(receipt, "balance_after_minor")
        if after is not None and after != running_minor:
            violations.append(
                Violation(
                    "balance_mismatch",
                    cid,
                    f"seq {seq}: balance_after_minor {after} != running sum {running_minor}",
                )
            )
    if customer.policy == "hard" and customer.quota is not None:
        quota_minor = amount_to_minor(customer.quota, customer.currency)
        used_minor = entitlement_minor[customer.entitlement_id]
        if used_minor > quota_minor:
            violations.append(
                Violation(
                    "hard_quota_exceeded",
                    cid,
                    f"{customer.entitlement_id}: charged {used_minor} > quota {quota_minor}",
                )
            )
    return by_key


def verify(records: RunRecords, ledgers: dict[str, Ledger]) -> Report:
    """Compare what the clients saw with what the ledger holds. Pure: no I/O."""
    violations: list[Violation] = []
    acknowledged = replays = unanswered = total_receipts = 0
    for cid, customer in sorted(records.customers.items()):
        ledger = ledgers.get(cid)
        if ledger is None or ledger.error is not None:
            reason = ledger.error if ledger is not None else "not fetched"
            violations.append(Violation("unreadable", cid, f"chain: {reason}"))
            continue
        receipts = [_receipt_core(item) for item in ledger.receipts]
        total_receipts += len(receipts)
        if ledger.has_more_wrong:
            violations.append(
                Violation("paging", cid, "GET /v1/receipts said has_more=false before the end")
            )
        by_key = _check_chain(customer, receipts, violations)
        running_minor = sum(_int_field(r, "amount_minor") or 0 for r in receipts)
        if ledger.balance_minor is None:
            violations.append(Violation("unreadable", cid, "balance: no readable balance"))
        elif ledger.balance_minor != running_minor:
            violations.append(
                Violation(
                    "balance_mismatch",
                    cid,
                    f"balance {ledger.balance_minor} != sum of receipts {running_minor}",
                )
            )
        keys = records.keys.get(cid, {})
        for key, history in keys.items():
            receipt = by_key.get(key)
            accepted = any(s in _ACCEPTED_STATUSES for s in history.statuses)
            if len(history.receipt_ids) > 1:
                violations.append(
                    Violation(
                        "doubled_ack",
                        cid,
                        f"key {key!r} acknowledged as {sorted(history.receipt_ids)}",
                    )
                )
            if history.receipt_ids:
                acknowledged += 1
                replays += max(0, sum(s in _ACCEPTED_STATUSES for s in history.statuses) - 1)
                if receipt is None:
                    violations.append(
                        Violation(
                            "missing_receipt",
                            cid,
                            f"key {key!r} got 202 {sorted(history.receipt_ids)[0]} "
                            "but has no receipt",
                        )
                    )
                elif str(receipt.get("receipt_id")) not in history.receipt_ids:
                    violations.append(
                        Violation(
                            "missing_receipt",
                            cid,
                            f"key {key!r} got 202 {sorted(history.receipt_ids)} but the chain "
                            f"holds {receipt.get('receipt_id')}",
                        )
                    )
            refused_only = (
                not accepted
                and history.statuses
                and len(history.statuses) >= history.sent
                and all(s in _REFUSED_STATUSES for s in history.statuses)
            )
            if refused_only and receipt is not None:
                violations.append(
                    Violation(
                        "charged_after_rejection",
                        cid,
                        f"key {key!r} was refused {sorted(set(history.statuses))} yet charged "
                        f"as {receipt.get('receipt_id')}",
                    )
                )
            if not accepted and (history.sent > len(history.statuses) or 0 in history.statuses):
                unanswered += 1
            if receipt is not None and len(history.amounts) == 1:
                (sent_amount,) = history.amounts
                expected_minor = amount_to_minor(sent_amount, customer.currency)
                charged_minor = _int_field(receipt, "amount_minor")
                if charged_minor is not None and charged_minor != expected_minor:
                    violations.append(
                        Violation(
                            "amount_mismatch",
                            cid,
                            f"key {key!r}: sent {sent_amount}, charged {charged_minor} minor",
                        )
                    )
        for key, receipt in by_key.items():
            if key not in keys:
                violations.append(
                    Violation(
                        "unexpected_receipt",
                        cid,
                        f"receipt {receipt.get('receipt_id')} for key {key!r} never sent",
                    )
                )
    # Keys recorded for customers the file never introduced cannot be checked.
    for cid in sorted(set(records.keys) - set(records.customers)):
        violations.append(Violation("unreadable", cid, "outcomes for a customer with no API key"))
    return Report(
        violations=violations,
        customers=len(records.customers),
        receipts=total_receipts,
        acknowledged=acknowledged,
        replays=replays,
        unanswered=unanswered,
        statuses=records.statuses,
    )


def _balance_minor(payload: Any, currency: str) -> int | None:
    """The balance in minor units from `GET /v1/balance`, whatever its exact shape."""
    if not isinstance(payload, dict):
        return None
    for name in ("balance_minor", "balance_after_minor"):
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    value = payload.get("balance")
    if isinstance(value, dict):
        return _balance_minor(value, currency)
    if isinstance(value, str):
        try:
            return amount_to_minor(value, str(payload.get("currency", currency)))
        except ValueError:
            return None
    return None


async def _fetch_ledger(
    session: aiohttp.ClientSession, host: str, customer: CustomerRecord, deadline: float
) -> Ledger:
    headers = {"Authorization": f"Bearer {customer.api_key}"}
    receipts: list[dict[str, Any]] = []
    after_seq = 0
    has_more_wrong = claimed_end = False
    try:
        for _page in range(chain_pages_max):
            if time.monotonic() > deadline:
                return Ledger(receipts, None, "timed out reading the chain")
            params = {"after_seq": str(after_seq), "limit": str(receipts_page_max)}
            async with session.get(f"{host}/v1/receipts", headers=headers, params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    return Ledger(receipts, None, f"GET /v1/receipts -> {resp.status}: {body!r}")
                page = orjson.loads(body)
            data = page.get("data")
            if not isinstance(data, list):
                return Ledger(receipts, None, "GET /v1/receipts: no 'data' list")
            receipts.extend(data)
            if not data:
                break
            has_more_wrong = has_more_wrong or claimed_end
            if not page.get("has_more"):
                if len(data) < receipts_page_max:
                    break
                # A full page with has_more=false: look once more rather than trust it.
                claimed_end = True
            last_seq = _int_field(_receipt_core(data[-1]), "seq")
            if last_seq is None or last_seq <= after_seq:
                return Ledger(receipts, None, "GET /v1/receipts: paging did not advance")
            after_seq = last_seq
        else:
            return Ledger(receipts, None, f"chain longer than {chain_pages_max} pages")
        async with session.get(f"{host}/v1/balance", headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                return Ledger(receipts, None, f"GET /v1/balance -> {resp.status}: {body!r}")
            balance = _balance_minor(orjson.loads(body), customer.currency)
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as error:
        return Ledger(receipts, None, f"{type(error).__name__}: {error}")
    return Ledger(receipts, balance, has_more_wrong=has_more_wrong)


async def fetch_ledgers(
    host: str, customers: Iterable[CustomerRecord], timeout_s: float = 300.0
) -> dict[str, Ledger]:
    """Read every customer's chain and balance, a few customers at a time."""
    host = host.rstrip("/")
    deadline = time.monotonic() + timeout_s
    gate = asyncio.Semaphore(fetch_concurrency_max)
    timeout = aiohttp.ClientTimeout(total=fetch_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(customer: CustomerRecord) -> tuple[str, Ledger]:
            async with gate:
                return customer.customer_id, await _fetch_ledger(session, host, customer, deadline)

        pairs = await asyncio.gather(*(one(c) for c in customers))
    return dict(pairs)


def check(host: str, results: Path, timeout_s: float = 300.0) -> Report:
    """Read the results file, fetch the ledgers, verify. Does not print."""
    records = read_records(results)
    ledgers = asyncio.run(fetch_ledgers(host, records.customers.values(), timeout_s))
    return verify(records, ledgers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.check",
        description="Check that a load run lost nothing and charged nothing twice.",
    )
    parser.add_argument(
        "--host", required=True, help="service base URL, e.g. http://127.0.0.1:8080"
    )
    parser.add_argument("--results", required=True, type=Path, help="results file of the run")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("BILLING_ADMIN_TOKEN"),
        help="accepted for symmetry with the scenarios; the check reads with customer keys",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for all reads")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"check: no results file at {args.results}", file=sys.stderr)
        return 2
    report = check(args.host, args.results, args.timeout)
    print(report.summary())
    if report.customers == 0:
        print("check: FAILED - the results file names no customers", file=sys.stderr)
        return 1
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
