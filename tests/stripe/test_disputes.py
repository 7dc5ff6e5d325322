"""Stripe disputes through the whole composed service and the Stripe fake: a
`charge.dispute.created` for a customer's invoice is answered once, with
the evidence of every charge on that invoice (one PDF upload plus the text
fields), despite Stripe failing, replies lost and webhooks replayed."""

from __future__ import annotations

import json
import re
import time
import zlib
from typing import Any

import crypto
from crypto._evidence import EVIDENCE_OBJECT
from tests.stripe.helpers import FAR_FUTURE, wait_until
from tests.stripe.stack import Stack, Start, subscriber


async def _charge(stack: Stack, customer_id: str, api_key: str, key: str,
                  user_agent: str) -> str:
    async with stack.session.post(
        "/v1/events",
        json={"idempotent_key": key, "customer_id": customer_id,
              "entitlement_id": "subscription", "amount": "1.25", "currency": "USD",
              "usage_description": "a bot hour",
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        headers={"Authorization": f"Bearer {api_key}", "User-Agent": user_agent,
                 "X-Request-Id": f"req-{key}"},
    ) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["receipt_id"])


def _posts(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    return [params for method, path, params in stack.fake.requests
            if method == "POST" and path.startswith(prefix)]


def _settled(stack: Stack) -> bool:
    return not stack.runtime.adapters.store.pending_webhook_events(FAR_FUTURE, 10)


def _pdf_streams(pdf: bytes) -> list[bytes]:
    """Every (Flate-compressed) stream of a PDF, decompressed: its pages'
    text and its attached files."""
    streams = []
    for raw in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.DOTALL):
        try:
            streams.append(zlib.decompress(raw))
        except zlib.error:
            continue
    return streams


async def _invoiced_customer(stack: Stack,
                             email: str) -> tuple[str, str, dict[str, Any], list[str]]:
    """A subscriber with one charge before its invoice's period and three in
    it; (stripe customer, our customer, the paid invoice, receipts in it)."""
    cus, customer_id, api_key, _ = await subscriber(stack, email)
    await _charge(stack, customer_id, api_key, "before", "acme-meter/1.0")
    start = int(time.time()) + 1
    while time.time() < start:  # receipts carry whole seconds at Stripe
        time.sleep(0.05)
    in_period = [await _charge(stack, customer_id, api_key, f"in-{n}", f"acme-meter/2.{n}")
                 for n in range(3)]
    invoice = stack.fake.add_paid_invoice(cus, period_start=start, period_end=start + 3600,
                                          amount=375)
    return cus, customer_id, invoice, in_period


async def test_a_dispute_is_answered_once_with_the_evidence_of_its_invoice(
    start_stack: Start,
) -> None:
    stack = await start_stack()
    cus, customer_id, invoice, in_period = await _invoiced_customer(stack, "disputed@example.com")
    # Another customer's usage in the same period is not evidence here.
    cus_b, other_id, key_b, _ = await subscriber(stack, "bystander@example.com")
    other_receipt = await _charge(stack, other_id, key_b, "b-1", "other/1.0")
    dispute = stack.fake.add_dispute(invoice["_charge"])
    await stack.deliver("charge.dispute.created", dispute)
    await wait_until(lambda: stack.fake.dispute(dispute["id"])["status"] == "under_review")

    (upload,) = _posts(stack, "/v1/files")
    assert upload["purpose"] == "dispute_evidence"
    (answer,) = _posts(stack, f"/v1/disputes/{dispute['id']}")
    assert answer["submit"] == "true"
    evidence = answer["evidence"]
    (file_id,) = [f for f in stack.fake.files]
    assert evidence["service_documentation"] == file_id
    assert evidence["customer_email_address"] == "disputed@example.com"
    assert evidence["customer_purchase_ip"] == "127.0.0.1"
    log_lines = evidence["access_activity_log"].splitlines()
    assert [line.split()[2] for line in log_lines] == in_period
    for n, line in enumerate(log_lines):
        assert "1.25 USD" in line and "ip=127.0.0.1" in line
        assert f'user_agent="acme-meter/2.{n}"' in line and f"request=req-in-{n}" in line
        assert re.search(r"api_key=\S+", line)
    assert "3 charges" in evidence["product_description"]
    assert evidence["uncategorized_text"]
    assert stack.fake.dispute(dispute["id"])["evidence_details"]["submission_count"] == 1

    # The file: a PDF listing the invoice's receipts, with each one's sealed
    # bundle attached, which verifies offline with the published keys.
    pdf = stack.fake.file_content(file_id)
    assert pdf.startswith(b"%PDF-")
    streams = _pdf_streams(pdf)
    bundles = [json.loads(s) for s in streams if s.startswith(b"{") and EVIDENCE_OBJECT.encode()
               in s]
    assert sorted(b["receipt_id"] for b in bundles) == sorted(in_period)
    async with stack.session.get("/.well-known/jwks.json") as response:
        jwks = await response.json()
    for raw in streams:
        if raw.startswith(b"{") and EVIDENCE_OBJECT.encode() in raw:
            report = crypto.check_evidence(raw, jwks)
            assert report.valid, report.first_failure()
    text = b"".join(s for s in streams if not s.startswith(b"{"))
    assert all(r.encode() in text for r in in_period)
    assert other_receipt.encode() not in pdf and other_receipt.encode() not in text

    # The answer is recorded durably.
    stored = stack.runtime.adapters.disputes.dispute_submission(dispute["id"])
    assert stored is not None and stored.is_submitted
    assert (stored.customer_id, stored.file_id, stored.receipt_count) == (
        customer_id, file_id, 3)
    assert cus_b != cus


async def test_replayed_webhooks_do_not_answer_twice(start_stack: Start) -> None:
    stack = await start_stack()
    _, _, invoice, _ = await _invoiced_customer(stack, "replay@example.com")
    # A dispute that names the charge only: found through the charge's payment intent.
    dispute = stack.fake.add_dispute(invoice["_charge"], with_payment_intent=False)
    event = stack.fake.event("charge.dispute.created", dispute)
    body, headers = stack.fake.delivery(event, stack.secret)
    for _ in range(2):  # Stripe redelivers the same event
        async with stack.session.post("/v1/stripe/webhook", data=body,
                                      headers=headers) as response:
            assert response.status == 200
    await wait_until(lambda: stack.fake.dispute(dispute["id"])["status"] == "under_review")
    # A new event about the same dispute (resent from the Dashboard, say).
    await stack.deliver("charge.dispute.created", dispute)
    await wait_until(lambda: _settled(stack))
    assert len(_posts(stack, "/v1/files")) == 1
    assert len(_posts(stack, f"/v1/disputes/{dispute['id']}")) == 1
    assert stack.fake.dispute(dispute["id"])["evidence_details"]["submission_count"] == 1


async def test_stripe_failing_is_retried_and_answers_once(start_stack: Start) -> None:
    stack = await start_stack()
    _, _, invoice, in_period = await _invoiced_customer(stack, "flaky@example.com")
    dispute = stack.fake.add_dispute(invoice["_charge"])
    # The evidence upload works; its submission fails with a 500 four times:
    # the Stripe library's own retries (two) do not get through, the event is
    # retried later with backoff, and its first try then fails too.
    stack.fake.fail("500", times=4, only=f"POST /v1/disputes/{dispute['id']}")
    await stack.deliver("charge.dispute.created", dispute)
    await wait_until(lambda: stack.fake.dispute(dispute["id"])["status"] == "under_review",
                     timeout_s=30)
    # Stripe saw one submission (the failed ones never reached it), of the
    # one file uploaded on the first attempt.
    assert len(_posts(stack, f"/v1/disputes/{dispute['id']}")) == 1
    assert len(_posts(stack, "/v1/files")) == 1
    answer = _posts(stack, f"/v1/disputes/{dispute['id']}")[-1]
    assert [line.split()[2] for line in answer["evidence"]["access_activity_log"].splitlines()
            ] == in_period
    assert stack.fake.dispute(dispute["id"])["evidence_details"]["submission_count"] == 1
    registry = stack.runtime.services.registry
    # Counted once Stripe's reply is recorded, a moment after the fake's state moved.
    await wait_until(lambda: registry.get_sample_value(
        "billing_stripe_disputes_total", {"result": "submitted"}) == 1)
    assert registry.get_sample_value("billing_stripe_disputes_total",
                                     {"result": "retry_later"}) == 1


async def test_an_answer_whose_reply_was_lost_is_not_sent_again(start_stack: Start) -> None:
    stack = await start_stack()
    _, _, invoice, _ = await _invoiced_customer(stack, "lost@example.com")
    dispute = stack.fake.add_dispute(invoice["_charge"])
    # Stripe takes the evidence, but its answer never reaches us, nor the
    # answers to the library's two retries (replays of the same key).
    stack.fake.fail("lost_reply", times=3, only=f"POST /v1/disputes/{dispute['id']}")
    await stack.deliver("charge.dispute.created", dispute)
    await wait_until(lambda: _settled(stack), timeout_s=30)
    # The retry found the dispute answered at Stripe and sent nothing more.
    assert len(_posts(stack, f"/v1/disputes/{dispute['id']}")) == 3
    assert stack.fake.dispute(dispute["id"])["evidence_details"]["submission_count"] == 1
    registry = stack.runtime.services.registry
    assert registry.get_sample_value("billing_stripe_disputes_total",
                                     {"result": "retry_later"}) == 1
    stored = stack.runtime.adapters.disputes.dispute_submission(dispute["id"])
    assert stored is not None and stored.is_submitted


async def test_a_dispute_for_an_unknown_customer_is_logged_and_ignored(
    start_stack: Start,
) -> None:
    stack = await start_stack()
    stranger = stack.fake.add_customer("stranger@example.com")  # never one of ours
    start = int(time.time()) - 60
    invoice = stack.fake.add_paid_invoice(stranger["id"], period_start=start,
                                          period_end=start + 3600, amount=500)
    dispute = stack.fake.add_dispute(invoice["_charge"])
    await stack.deliver("charge.dispute.created", dispute)
    await wait_until(lambda: _settled(stack))
    assert _posts(stack, "/v1/files") == []
    assert _posts(stack, "/v1/disputes/") == []
    assert stack.fake.dispute(dispute["id"])["status"] == "needs_response"
    assert stack.runtime.adapters.disputes.dispute_submission(dispute["id"]) is None
    registry = stack.runtime.services.registry
    assert registry.get_sample_value("billing_stripe_disputes_total",
                                     {"result": "ignored"}) == 1
