"""Stripe disputes: on `charge.dispute.created` for one of our invoices, the
evidence for every charge on that invoice goes to Stripe, once.

From the dispute to the charges: the dispute names its payment (a payment
intent, or a charge that names one); Stripe's invoice payments map the
payment to its invoice; the invoice names the Stripe customer (ours by its
Stripe id) and its usage period. Usage reaches Stripe as meter events
stamped with the receipt's time (actors.stripe.usage), so the receipts on
the invoice are the customer's receipts recorded within that period.

What goes to Stripe: one PDF (actors.stripe._dispute_pdf) uploaded with purpose
`dispute_evidence` as `service_documentation`, and the text fields Stripe
takes, the access activity log first (API key id, client address, user
agent and time of each charge's request), with `submit=true`.

Once, whatever happens: the uploaded file is recorded before the evidence
is submitted (a retry submits the same file) and the submission after (a
replayed webhook stops there); the dispute's state at Stripe is read before
each attempt, so a dispute already answered (by us before a crash or a lost
reply, or by a person in the Dashboard) is never answered again; and every
POST carries an idempotency key, the same for the library's own quick
retries of one attempt. Each durable attempt has its own key: Stripe keeps
the first answer to a key for 24 hours, a 500 included, so a key reused
minutes later could only replay the failure.
Stripe failures raise stripe.StripeError and StripeSync retries the event
with backoff; what cannot succeed (not our invoice, an unknown customer, a
dispute no longer open) raises DisputeIgnored and is logged, not retried.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from datetime import UTC
from typing import Any, Final

import orjson
import stripe
import structlog

from actors.stripe._dispute_pdf import DisputePackage, EvidenceLine, render_pdf
from actors.stripe._dispute_text import evidence_fields
from actors.stripe._plans import epoch_to_rfc3339, field_of
from actors.stripe.usage import epoch_s
from ledger import (
    ChargeRequests,
    Customer,
    DisputeSubmission,
    DisputeSubmissions,
    LedgerStore,
    StoredReceipt,
    limits,
)
from ledger.clock import parse_rfc3339, utc_now_rfc3339
from ledger.errors import check_invariant

__all__ = ["DISPUTE_CREATED", "DisputeIgnored", "DisputeResponder", "dispute_id_of"]

log = structlog.get_logger(__name__)

DISPUTE_CREATED: Final = "charge.dispute.created"
# Statuses in which Stripe takes evidence (warning_*: an inquiry before a chargeback).
_OPEN_STATUSES: Final = frozenset({"needs_response", "warning_needs_response"})

# The sealed bundle of one receipt (actors.integrity.evidence.build_evidence, bound by
# the composition root to the log and the signing keys).
EvidenceOf = Callable[[StoredReceipt], bytes]


class DisputeIgnored(Exception):
    """Nothing we can answer: the event is settled, with this reason logged."""


def dispute_id_of(event: dict[str, Any]) -> str | None:
    """The dispute a `charge.dispute.*` event is about. Only the id is trusted:
    the dispute itself is read from Stripe."""
    obj = (event.get("data") or {}).get("object") or {}
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value.startswith("dp_") else None


class DisputeResponder:
    """Answers one dispute (`respond`); called by StripeSync on its thread."""

    def __init__(
        self,
        *,
        store: LedgerStore,
        submissions: DisputeSubmissions,
        client: stripe.StripeClient,
        evidence_of: EvidenceOf,
        clock: Callable[[], str] = utc_now_rfc3339,
    ) -> None:
        self._store = store
        self._submissions = submissions
        self._client = client
        self._evidence_of = evidence_of
        self._clock = clock
        self._requests = store if isinstance(store, ChargeRequests) else None

    def respond(self, dispute_id: str, attempt: int = 0) -> DisputeSubmission:
        """Submit the evidence of `dispute_id` unless it is submitted already;
        returns the stored submission. `attempt` (failed attempts so far)
        makes each attempt's idempotency keys. Raises DisputeIgnored or
        StripeError."""
        recorded = self._submissions.dispute_submission(dispute_id)
        if recorded is not None and recorded.is_submitted:
            return recorded
        dispute = self._client.v1.disputes.retrieve(dispute_id)
        status = str(field_of(dispute, "status", ""))
        submitted_before = int(field_of(field_of(dispute, "evidence_details"),
                                        "submission_count", 0)) > 0
        if recorded is not None and (submitted_before or status not in _OPEN_STATUSES):
            # Our submission reached Stripe but its reply did not reach us.
            return self._submissions.mark_dispute_submitted(dispute_id, self._clock(), status)
        if submitted_before or status not in _OPEN_STATUSES:
            raise DisputeIgnored(f"dispute is {status}, evidence submitted "
                                 f"{'already' if submitted_before else 'never'}")
        invoice = self._invoice_of(dispute)
        customer = self._customer_of(invoice)
        if recorded is None:
            recorded = self._upload(f"{dispute_id}:{attempt}", dispute_id, invoice, customer)
        return self._submit(f"{dispute_id}:{attempt}", invoice, customer, recorded)

    # -- from the dispute to our customer ----------------------------------
    def _invoice_of(self, dispute: Any) -> Any:
        payment_intent = _id_of(field_of(dispute, "payment_intent"))
        if payment_intent is None:
            charge_id = _id_of(field_of(dispute, "charge"))
            if charge_id is None:
                raise DisputeIgnored("the dispute names no charge")
            charge = self._client.v1.charges.retrieve(charge_id)
            payment_intent = _id_of(field_of(charge, "payment_intent"))
        if payment_intent is None:
            raise DisputeIgnored("the disputed charge has no payment intent: not an invoice")
        payments = self._client.v1.invoice_payments.list(params={
            "payment": {"type": "payment_intent", "payment_intent": payment_intent},
            "limit": 1,
        })
        invoice_id = _id_of(field_of(payments.data[0], "invoice")) if payments.data else None
        if invoice_id is None:
            raise DisputeIgnored(f"payment {payment_intent} paid no invoice")
        return self._client.v1.invoices.retrieve(invoice_id)

    def _customer_of(self, invoice: Any) -> Customer:
        stripe_customer_id = _id_of(field_of(invoice, "customer"))
        customer = (self._store.find_customer_by_stripe_id(stripe_customer_id)
                    if stripe_customer_id else None)
        if customer is None:
            raise DisputeIgnored(f"invoice {field_of(invoice, 'id')} is for Stripe customer "
                                 f"{stripe_customer_id}, not one of ours")
        return customer

    # -- the evidence ---------------------------------------------------------
    def _receipts_in(self, customer_id: str, invoice: Any) -> tuple[list[StoredReceipt], bool]:
        """The customer's receipts recorded in the invoice's usage period,
        in chain order; True if there were more than the evidence lists."""
        start, end = int(field_of(invoice, "period_start", 0)), int(field_of(invoice,
                                                                             "period_end", 0))
        found: list[StoredReceipt] = []
        for receipt in self._store.iter_receipts(customer_id):
            if start <= epoch_s(receipt.recorded_at) < end:
                if len(found) >= limits.dispute_receipts_max:
                    return found, True
                found.append(receipt)
        return found, False

    def _package(self, dispute_id: str, invoice: Any, customer: Customer) -> DisputePackage:
        receipts, truncated = self._receipts_in(customer.customer_id, invoice)
        lines: list[EvidenceLine] = []
        bundles: list[tuple[str, bytes]] = []
        budget = limits.dispute_bundle_bytes_max
        for receipt in receipts:
            request = self._requests.charge_request(receipt.receipt_id) if self._requests else None
            valid: bool | None = None
            if len(bundles) < limits.dispute_bundles_max and receipt.amount_minor > 0:
                bundle = self._evidence_of(receipt)
                if len(bundle) <= budget:
                    budget -= len(bundle)
                    bundles.append((receipt.receipt_id, bundle))
                    valid = bool(orjson.loads(bundle)["verdict"]["valid"])
            lines.append(EvidenceLine(receipt, request, valid))
        return DisputePackage(
            dispute_id=dispute_id,
            invoice_id=str(field_of(invoice, "id")),
            invoice_number=field_of(invoice, "number"),
            stripe_customer_id=customer.stripe_customer_id or "",
            customer_id=customer.customer_id,
            period_start=epoch_to_rfc3339(field_of(invoice, "period_start", 0)) or "",
            period_end=epoch_to_rfc3339(field_of(invoice, "period_end", 0)) or "",
            lines=lines,
            bundles=bundles,
            truncated=truncated,
            created_at=parse_rfc3339(self._clock()).astimezone(UTC),
        )

    def _upload(self, key: str, dispute_id: str, invoice: Any,
                customer: Customer) -> DisputeSubmission:
        package = self._package(dispute_id, invoice, customer)
        pdf = render_pdf(package)
        if len(pdf) > limits.dispute_file_bytes_max:  # the table alone still fits
            package = _without_bundles(package)
            pdf = render_pdf(package)
        check_invariant(len(pdf) <= limits.dispute_file_bytes_max,
                        f"dispute evidence file of {len(pdf)} bytes is over Stripe's limit")
        upload = io.BytesIO(pdf)
        upload.name = f"evidence-{dispute_id}.pdf"
        uploaded = self._client.v1.files.create(
            params={"purpose": "dispute_evidence", "file": upload},
            options={"idempotency_key": f"dispute-file:{key}"},
        )
        log.info("stripe_dispute.file_uploaded", dispute_id=dispute_id, file_id=uploaded.id,
                 bytes=len(pdf), receipts=len(package.lines), bundles=len(package.bundles))
        return self._submissions.record_dispute_file(DisputeSubmission(
            dispute_id=dispute_id,
            invoice_id=package.invoice_id,
            customer_id=customer.customer_id,
            file_id=str(uploaded.id),
            receipt_count=len(package.lines),
            recorded_at=self._clock(),
        ))

    def _submit(self, key: str, invoice: Any, customer: Customer,
                recorded: DisputeSubmission) -> DisputeSubmission:
        dispute_id = recorded.dispute_id
        receipts, _ = self._receipts_in(customer.customer_id, invoice)
        requests = {r.receipt_id: self._requests.charge_request(r.receipt_id)
                    for r in receipts} if self._requests else {}
        # Any: the library's TypedDict names every field; ours is built by name.
        params: Any = {
            "evidence": evidence_fields(invoice, receipts, requests, recorded.file_id),
            "submit": True,
            "metadata": {"invoice": recorded.invoice_id, "receipts": str(recorded.receipt_count)},
        }
        answered = self._client.v1.disputes.update(
            dispute_id, params=params, options={"idempotency_key": f"dispute-evidence:{key}"}
        )
        status = str(field_of(answered, "status", ""))
        log.info("stripe_dispute.submitted", dispute_id=dispute_id, status=status,
                 invoice_id=recorded.invoice_id, customer_id=recorded.customer_id,
                 receipts=recorded.receipt_count)
        return self._submissions.mark_dispute_submitted(dispute_id, self._clock(), status)


def _without_bundles(package: DisputePackage) -> DisputePackage:
    lines = [EvidenceLine(line.receipt, line.request, None) for line in package.lines]
    return dataclasses.replace(package, lines=lines, bundles=[])


def _id_of(value: Any) -> str | None:
    """An id, or the id of an expanded object."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = field_of(value, "id")
    return value if isinstance(value, str) and value else None
