"""The evidence file of a Stripe dispute, as a PDF.

Why a PDF: Stripe takes one file per evidence field, and `dispute_evidence`
files must be PDF, JPEG or PNG (at most 5 MB), so neither the HTML page nor
the JSON bundles can be uploaded as they are. A PDF carries both halves of
what a reviewer needs: pages a person reads (the invoice, every charge on it
with who made it and whether its receipt verifies) and, as attachments, the
sealed evidence bundles themselves, byte for byte, which anyone can extract
and check offline with `billing verify --evidence`.

fpdf2 writes it (pure Python, maintained; the built-in Helvetica and
Courier, so no font is embedded and text is Latin-1: anything else is
replaced, which only ever touches client-sent text such as a User-Agent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fpdf import FPDF

from ledger import RequestRecord, StoredReceipt
from ledger.money import format_amount

__all__ = ["DisputePackage", "EvidenceLine", "render_pdf"]

_TABLE_COLUMNS = ("Recorded (UTC)", "Receipt", "Amount", "API key", "Client address", "Verifies")
# At 6 pt a whole receipt id (48 characters) and timestamp fit on one line.
_COLUMN_WIDTHS_MM = (34, 62, 22, 30, 28, 14)


@dataclass(frozen=True, slots=True)
class EvidenceLine:
    """One charge on the disputed invoice. `valid` is the verdict of its
    sealed bundle; None when its bundle is not attached (over the budget)."""

    receipt: StoredReceipt
    request: RequestRecord | None
    valid: bool | None


@dataclass(frozen=True, slots=True)
class DisputePackage:
    """What the evidence file says about one dispute."""

    dispute_id: str
    invoice_id: str
    invoice_number: str | None
    stripe_customer_id: str
    customer_id: str
    period_start: str
    period_end: str
    lines: Sequence[EvidenceLine]
    # (receipt_id, sealed bundle bytes) of the attached bundles.
    bundles: Sequence[tuple[str, bytes]]
    # More receipts in the period than the evidence lists.
    truncated: bool
    # When the package was built: the PDF's own dates.
    created_at: datetime

    def totals(self) -> dict[str, int]:
        """Sum of the listed receipts per currency (minor units)."""
        sums: dict[str, int] = {}
        for line in self.lines:
            currency = line.receipt.currency
            sums[currency] = sums.get(currency, 0) + line.receipt.amount_minor
        return sums


def latin1(text: str) -> str:
    """What the built-in PDF fonts can show."""
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(package: DisputePackage) -> bytes:
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_creation_date(package.created_at.astimezone(UTC))
    pdf.set_title(latin1(f"Usage evidence for Stripe dispute {package.dispute_id}"))
    pdf.set_creator("vexa-billing")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    _summary(pdf, package)
    _charges(pdf, package)
    for receipt_id, bundle in package.bundles:
        pdf.embed_file(
            bytes=bundle,
            basename=f"evidence-{receipt_id}.json",
            modification_date=package.created_at.astimezone(UTC),
            mime_type="application/json",
            desc=f"Sealed evidence bundle of receipt {receipt_id}",
            compress=True,
        )
    return bytes(pdf.output())


def _paragraph(pdf: FPDF, text: str, *, size: float = 10, style: str = "") -> None:
    pdf.set_font("Helvetica", style=style, size=size)
    pdf.multi_cell(0, size * 0.5, latin1(text), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)


def _summary(pdf: FPDF, package: DisputePackage) -> None:
    _paragraph(pdf, f"Usage evidence for Stripe dispute {package.dispute_id}", size=15,
               style="B")
    totals = ", ".join(format_amount(v, c) + f" {c}" for c, v in package.totals().items())
    charges = sum(1 for line in package.lines if line.receipt.amount_minor > 0)
    _paragraph(pdf, "\n".join([
        f"Invoice: {package.invoice_id}"
        + (f" (number {package.invoice_number})" if package.invoice_number else ""),
        f"Stripe customer: {package.stripe_customer_id} (our customer {package.customer_id})",
        f"Usage period: {package.period_start} to {package.period_end}",
        f"Receipts in the period: {len(package.lines)} ({charges} charges), total {totals or '0'}",
    ]))
    _paragraph(pdf, (
        "Every charge on this invoice is a receipt signed by the service when the customer's "
        "API key asked for it, chained to the customer's previous receipt by its hash and "
        "appended to a public, append-only log whose checkpoints are signed. The table lists "
        "each receipt with the API key, client address and time of the request that made it. "
        "The sealed evidence bundle of each receipt marked 'holds' is attached to this PDF "
        "(evidence-<receipt>.json): it carries the receipt, its proofs in the log, the "
        "customer's chain and the public keys, and is checked offline with "
        "`billing verify --evidence FILE` or any RFC 8785 / Ed25519 implementation."
    ), size=9)
    if package.truncated:
        _paragraph(pdf, f"Only the first {len(package.lines)} receipts of the period are listed.",
                   size=9, style="I")
    if len(package.bundles) < len(package.lines):
        _paragraph(pdf, (
            f"{len(package.bundles)} bundles are attached; the bundle of any other receipt is "
            "served on request (GET /v1/receipts/{id}/evidence)."
        ), size=9, style="I")


def _charges(pdf: FPDF, package: DisputePackage) -> None:
    pdf.set_font("Helvetica", size=6)
    with pdf.table(col_widths=_COLUMN_WIDTHS_MM, text_align="LEFT", line_height=3,
                   first_row_as_headings=True, repeat_headings=1) as table:
        table.row(_TABLE_COLUMNS)
        for line in package.lines:
            receipt, request = line.receipt, line.request
            verdict = {True: "holds", False: "FAILS", None: "-"}[line.valid]
            table.row((
                receipt.recorded_at,
                receipt.receipt_id,
                f"{format_amount(receipt.amount_minor, receipt.currency)} {receipt.currency}",
                latin1(request.api_key_id) if request else "-",
                latin1(request.client_address) if request else "-",
                verdict,
            ))
