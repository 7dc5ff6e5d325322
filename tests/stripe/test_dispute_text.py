"""The text of a dispute answer stays within Stripe's limits however many
charges the invoice has, and says how many it left out."""

from __future__ import annotations

from actors.stripe._dispute_text import evidence_fields
from ledger import RequestRecord, StoredReceipt, limits


def _receipt(n: int) -> StoredReceipt:
    return StoredReceipt(
        customer_id="cust_1", seq=n + 1, receipt_id=f"rcpt_{n:044d}", idempotency_key=f"k{n}",
        request_fingerprint="f", entitlement_id="subscription", amount_minor=125, currency="USD",
        receipt_hash="sha256:" + "1" * 64, previous_receipt_hash="sha256:" + "0" * 64,
        balance_after_minor=125 * (n + 1), recorded_at="2025-01-02T03:04:05.000000Z",
        receipt_json=b"{}",
    )


def test_a_large_invoice_is_cut_to_stripes_limit_and_says_how_many_more() -> None:
    receipts = [_receipt(n) for n in range(limits.dispute_receipts_max)]
    requests = {r.receipt_id: RequestRecord("key_1", "203.0.113.7", "acme\nmeter/2.0",
                                            r.recorded_at, f"req-{r.seq}") for r in receipts}
    invoice = {"id": "in_1", "number": "VX-1", "customer_email": "a@example.com"}
    fields = evidence_fields(invoice, receipts, requests, "file_1")
    assert sum(map(len, fields.values())) <= limits.dispute_evidence_chars_max
    log_lines = fields["access_activity_log"].splitlines()
    assert len(fields["access_activity_log"]) <= limits.dispute_activity_log_chars_max
    shown = len(log_lines) - 1
    assert log_lines[-1] == (f"... and {len(receipts) - shown} more: "
                             "see the attached evidence file")
    # Client-sent text cannot add lines of its own.
    assert 'user_agent="acme meter/2.0"' in log_lines[0]
    assert fields["customer_purchase_ip"] == "203.0.113.7"
    assert fields["service_date"] == "2025-01-02"
