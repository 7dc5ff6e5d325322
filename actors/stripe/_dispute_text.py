"""The text fields of a Stripe dispute answer, from the invoice, its
receipts and their request records. Deterministic for the same inputs, and
within Stripe's limit of 150,000 characters over all the fields."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from actors.stripe._plans import field_of
from ledger import RequestRecord, StoredReceipt, limits
from ledger.errors import check_invariant
from ledger.money import format_amount

__all__ = ["activity_log", "evidence_fields"]


def _one_line(text: str) -> str:
    """Client-sent text on one line (a User-Agent may carry anything)."""
    return " ".join(text.split())


def _line(receipt: StoredReceipt, request: RequestRecord | None) -> str:
    amount = f"{format_amount(receipt.amount_minor, receipt.currency)} {receipt.currency}"
    kind = "charge" if receipt.amount_minor > 0 else "credit"
    if request is None:
        return f"{receipt.recorded_at} {kind} {receipt.receipt_id} {amount} (no request record)"
    return (
        f"{request.received_at} {kind} {receipt.receipt_id} {amount}"
        f" api_key={request.api_key_id} ip={_one_line(request.client_address)}"
        f" request={request.request_id} user_agent=\"{_one_line(request.user_agent)}\""
    )


def activity_log(receipts: Sequence[StoredReceipt],
                 requests: Mapping[str, RequestRecord | None]) -> str:
    """One line per receipt: when the API was called, by which key, from
    which address and client; cut to the field's budget with a last line
    saying how many more there are."""
    budget = limits.dispute_activity_log_chars_max - 100  # room for the closing line
    lines: list[str] = []
    used = 0
    for index, receipt in enumerate(receipts):
        line = _line(receipt, requests.get(receipt.receipt_id))
        if used + len(line) + 1 > budget:
            lines.append(f"... and {len(receipts) - index} more: see the attached evidence file")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def _usage_summary(invoice: Any, receipts: Sequence[StoredReceipt]) -> tuple[str, str]:
    """(product_description, service_date)."""
    charges = [r for r in receipts if r.amount_minor > 0]
    totals: Counter[str] = Counter()
    for receipt in receipts:
        totals[receipt.currency] += receipt.amount_minor
    total = ", ".join(f"{format_amount(v, c)} {c}" for c, v in sorted(totals.items())) or "0"
    invoice_name = field_of(invoice, "number") or field_of(invoice, "id")
    description = (
        f"Metered API usage billed on invoice {invoice_name}:"
        f" {len(charges)} charges, each made by a request with one of the customer's API"
        f" keys and recorded as a signed receipt; net usage {total}."
    )
    if not charges:
        return description, ""
    first, last = charges[0].recorded_at[:10], charges[-1].recorded_at[:10]
    return description, first if first == last else f"{first} to {last}"


_EXPLANATION = (
    "The customer used our metered API during the invoice period. Every charge on the "
    "invoice was requested with the customer's own API key (see the access activity log: "
    "time, key id, client address and user agent of each request) and recorded as a "
    "receipt signed by our service, hash-chained to the customer's previous receipt and "
    "appended to a public append-only log with signed checkpoints. The service "
    "documentation file lists every receipt of the period and attaches each receipt's "
    "sealed evidence bundle, which anyone can verify offline; the customer can check "
    "every receipt themselves with our published public keys."
)


def evidence_fields(invoice: Any, receipts: Sequence[StoredReceipt],
                    requests: Mapping[str, RequestRecord | None],
                    file_id: str) -> dict[str, str]:
    """Stripe's `evidence[...]` fields (empty ones left out)."""
    log = activity_log(receipts, requests)
    addresses = Counter(r.client_address for r in requests.values() if r is not None)
    description, service_date = _usage_summary(invoice, receipts)
    fields = {
        "service_documentation": file_id,
        "access_activity_log": log,
        "customer_email_address": str(field_of(invoice, "customer_email", "")),
        "customer_name": str(field_of(invoice, "customer_name", "")),
        "customer_purchase_ip": addresses.most_common(1)[0][0] if addresses else "",
        "product_description": description,
        "service_date": service_date,
        "uncategorized_text": _EXPLANATION,
    }
    fields = {name: value for name, value in fields.items() if value}
    check_invariant(sum(map(len, fields.values())) <= limits.dispute_evidence_chars_max,
                    "dispute evidence text over Stripe's limit")
    return fields
