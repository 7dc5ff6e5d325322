"""Contract of the DisputeSubmissions port: what makes an answer to a Stripe
dispute happen once, whatever retries and replays do."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest

from ledger import DisputeSubmission, DisputeSubmissions, NotFound


def _uploaded(dispute_id: str = "dp_1", file_id: str = "file_1") -> DisputeSubmission:
    return DisputeSubmission(
        dispute_id=dispute_id,
        invoice_id="in_1",
        customer_id="cus_a",
        file_id=file_id,
        receipt_count=3,
        recorded_at="2025-01-01T00:00:00.000000Z",
    )


def test_an_unknown_dispute_has_no_record(dispute_submissions: DisputeSubmissions) -> None:
    assert dispute_submissions.dispute_submission("dp_none") is None


def test_the_first_uploaded_file_is_the_one_kept(dispute_submissions: DisputeSubmissions) -> None:
    first = dispute_submissions.record_dispute_file(_uploaded(file_id="file_first"))
    assert first == _uploaded(file_id="file_first") and not first.is_submitted
    # A second worker (or a retry after a lost reply) uploaded another file:
    # everyone goes on with the first one.
    second = dispute_submissions.record_dispute_file(_uploaded(file_id="file_second"))
    assert second.file_id == "file_first"
    assert dispute_submissions.dispute_submission("dp_1") == first


def test_a_submission_is_recorded_once(dispute_submissions: DisputeSubmissions) -> None:
    dispute_submissions.record_dispute_file(_uploaded())
    done = dispute_submissions.mark_dispute_submitted(
        "dp_1", "2025-01-02T00:00:00.000000Z", "under_review"
    )
    assert done.is_submitted and done.submitted_at == "2025-01-02T00:00:00.000000Z"
    assert done.dispute_status == "under_review"
    again = dispute_submissions.mark_dispute_submitted("dp_1", "2025-01-03T00:00:00Z", "won")
    assert again == done
    assert dispute_submissions.dispute_submission("dp_1") == done
    # A new upload record does not reopen an answered dispute.
    assert dispute_submissions.record_dispute_file(_uploaded(file_id="file_9")) == done


def test_submitting_without_a_file_record_is_refused(
    dispute_submissions: DisputeSubmissions,
) -> None:
    with pytest.raises(NotFound):
        dispute_submissions.mark_dispute_submitted("dp_x", "2025-01-02T00:00:00Z", "under_review")


def test_disputes_are_kept_apart(dispute_submissions: DisputeSubmissions) -> None:
    dispute_submissions.record_dispute_file(_uploaded("dp_1", "file_1"))
    dispute_submissions.record_dispute_file(_uploaded("dp_2", "file_2"))
    dispute_submissions.mark_dispute_submitted("dp_2", "2025-01-02T00:00:00Z", "under_review")
    one = dispute_submissions.dispute_submission("dp_1")
    assert one is not None and not one.is_submitted and one.file_id == "file_1"
    two = dispute_submissions.dispute_submission("dp_2")
    assert two == dataclasses.replace(
        _uploaded("dp_2", "file_2"), submitted_at="2025-01-02T00:00:00Z",
        dispute_status="under_review",
    )


def test_concurrent_workers_all_go_on_with_one_file_and_one_submission(
    dispute_submissions: DisputeSubmissions,
) -> None:
    """Two gateways (or a retry racing the first try) answering the same
    dispute at once: one file record wins for all, one submission counts."""
    workers = 6
    with ThreadPoolExecutor(workers) as pool:
        kept = list(pool.map(
            lambda n: dispute_submissions.record_dispute_file(_uploaded(file_id=f"file_{n}")),
            range(workers),
        ))
    assert len({record.file_id for record in kept}) == 1
    assert dispute_submissions.dispute_submission("dp_1") == kept[0]
    with ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(
            lambda n: dispute_submissions.mark_dispute_submitted(
                "dp_1", f"2025-01-02T00:00:0{n}.000000Z", "under_review"
            ),
            range(workers),
        ))
    assert len(set(done)) == 1 and done[0].is_submitted
    assert dispute_submissions.dispute_submission("dp_1") == done[0]
