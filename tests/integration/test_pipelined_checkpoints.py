"""The ledger writer with several batches in flight: a slow (KMS) signer
signs the checkpoints of several batches at once, and a batch that fails to
commit while later ones are signing leaves the log without a gap, a reused
index or a checkpoint that was signed but never committed."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from crypto import verify_consistency
from ledger import LogAppend, OutboxMessage, ReceiptWrite, StoreUnavailable
from tests.fakes.kms_server import FakeKeyVersion, FakeKms
from tests.integration.conftest import Customer, Service
from tests.integration.test_receipt_log import _checkpoint_claims, _get, _verify_independently

pytestmark = pytest.mark.timeout(120)

_SIGN_DELAY_MS = 150.0  # slow enough that batches pile up behind a signature


@pytest.fixture
def fake_kms() -> Iterator[FakeKms]:
    fake = FakeKms(delay_ms=_SIGN_DELAY_MS).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def kms_version(fake_kms: FakeKms) -> FakeKeyVersion:
    return fake_kms.add_key("RS256")


@pytest.fixture
def settings_overrides(fake_kms: FakeKms, kms_version: FakeKeyVersion) -> dict[str, Any]:
    return {
        "signing_key_path": None,
        "signing_key_uri": kms_version.uri,
        "kms_endpoint": fake_kms.url,
    }


async def _charge_until_accepted(
    service: Service, customer: Customer
) -> tuple[dict[str, Any], int]:
    """One charge, retried with the same body while the answer is retry-safe
    (as a client does): (the 202's body, how many 503s came first)."""
    event = service.event(customer)
    for refusals in range(100):
        status, body, _ = await service.post_event(customer, event)
        if status == 202:
            return body, refusals
        assert status == 503, body  # retry-safe, never anything else
        await asyncio.sleep(0.05)
    raise AssertionError("a charge was never accepted")


async def _stored_history(service: Service, customer: Customer) -> list[dict[str, Any]]:
    page = await _get(service, "/v1/log/checkpoints", customer.auth, limit=1000)
    assert not page["has_more"]
    return list(page["data"])


async def _check_log(
    service: Service, customers: Sequence[Customer], answers: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every accepted charge is one leaf, each index used once with no gap;
    every checkpoint anyone was shown is a stored one, and the stored ones
    each extend the one before."""
    jwks = await service.jwks()
    indexes = sorted(answer["log"]["index"] for answer in answers)
    assert indexes == list(range(len(answers)))
    stored_leaves = []
    for customer in customers:
        chain = await service.receipts(customer)
        assert [r["seq"] for r in chain] == list(range(1, len(chain) + 1))
        stored_leaves += [r["log"]["index"] for r in chain]
        for receipt in chain:
            _verify_independently(receipt, jwks)
    assert sorted(stored_leaves) == indexes  # nothing stored that was not accepted
    history = await _stored_history(service, customers[0])
    sizes = [c["tree_size"] for c in history]
    assert sizes == sorted(set(sizes)) and sizes[-1] == len(answers)
    for older, newer in itertools.pairwise(history):
        proof = await _get(
            service, "/v1/log/consistency", customers[0].auth,
            first=older["tree_size"], second=newer["tree_size"],
        )
        verify_consistency(
            older["tree_size"], newer["tree_size"],
            bytes.fromhex(older["root_hash"].removeprefix("sha256:")),
            bytes.fromhex(newer["root_hash"].removeprefix("sha256:")),
            [bytes.fromhex(node) for node in proof["proof"]],
        )
    stored = {c["checkpoint"] for c in history}
    for checkpoint in stored:
        assert _checkpoint_claims(checkpoint, jwks)["tree_size"] in sizes
    served = {answer["log"]["checkpoint"] for answer in answers}
    head = await _get(service, "/v1/log/checkpoint", customers[0].auth)
    assert served | {head["checkpoint"]} <= stored  # only committed checkpoints are shown
    for answer in answers:
        _checkpoint_claims(answer["log"]["checkpoint"], jwks)  # signed, by the published key
    return history


async def test_a_slow_signer_signs_several_batches_at_once_and_every_answer_verifies(
    service: Service, fake_kms: FakeKms
) -> None:
    customers = [await service.create_customer() for _ in range(4)]
    started = time.monotonic()
    first_wave = [
        asyncio.create_task(_charge_until_accepted(service, c)) for c in customers
    ]
    # The second wave arrives while the first batch's signature is under way
    # (150 ms), whatever the machine's load: a pipelined writer must begin
    # signing its batch then, not after the first one commits.
    deadline = time.monotonic() + 10
    while fake_kms.signs_in_flight == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    results = await asyncio.gather(
        *first_wave,
        *(_charge_until_accepted(service, c) for c in customers for _ in range(19)),
    )
    elapsed_s = time.monotonic() - started
    answers = [answer for answer, _ in results]
    assert all(refusals == 0 for _, refusals in results)  # nothing failed: all first time
    history = await _check_log(service, customers, answers)
    # One signature per stored checkpoint: none was made and thrown away.
    assert fake_kms.sign_calls == len(history)
    # The pipeline: batches were signing at once, not one signature per
    # commit in turn (that took len(history) * 150 ms).
    assert fake_kms.signs_in_flight_max >= 2
    assert elapsed_s < len(history) * _SIGN_DELAY_MS / 1000


async def test_a_failed_commit_with_later_batches_signing_leaves_no_gap_and_no_stray_checkpoint(
    service: Service, fake_kms: FakeKms
) -> None:
    customers = [await service.create_customer() for _ in range(6)]
    warm = [await _charge_until_accepted(service, c) for c in customers]  # one commit each
    store = service.runtime.adapters.store
    real_commit = store.commit_batch
    armed, entered = threading.Event(), threading.Event()
    failed: list[str] = []  # the signed checkpoint of the commit made to fail

    def failing_commit(
        writes: Sequence[ReceiptWrite],
        outbox: Sequence[OutboxMessage],
        log_append: LogAppend | None = None,
    ) -> None:
        if armed.is_set() and log_append is not None:
            armed.clear()
            entered.set()
            # Fail this batch only once the next one's signature is under way.
            calls = fake_kms.sign_calls
            deadline = time.monotonic() + 5
            while fake_kms.sign_calls <= calls and time.monotonic() < deadline:
                time.sleep(0.005)
            assert fake_kms.sign_calls > calls, "no later batch began while this one signed"
            assert log_append.signed is not None  # the signature comes late
            failed.append(log_append.signed().checkpoint.jws)  # signed by KMS, then lost
            raise StoreUnavailable("disk I/O error (injected)")
        real_commit(writes, outbox, log_append)

    store.commit_batch = failing_commit  # type: ignore[method-assign]
    armed.set()
    first = [asyncio.create_task(_charge_until_accepted(service, c)) for c in customers]
    deadline = time.monotonic() + 10
    while not entered.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    # Batch N is committing (and will fail): these form the batches after it.
    later = [
        asyncio.create_task(_charge_until_accepted(service, c))
        for c in customers
        for _ in range(14)
    ]
    results = await asyncio.gather(*first, *later)
    assert failed, "the injected failure never happened"
    answers = [answer for answer, _ in warm] + [answer for answer, _ in results]
    refusals = [refusals for _, refusals in results]
    assert sum(refusals) >= 1, refusals  # the failed batch: retry-safe 503s
    history = await _check_log(service, customers, answers)
    # The failed batch's checkpoint was signed, and is nowhere: not stored,
    # not the head, not in any answer (_check_log: shown ones are stored).
    assert failed[0] not in {c["checkpoint"] for c in history}
    # The batches begun on top of it were rebuilt and signed again, or
    # answered retry-safe by the restarted writer: either way their first
    # signatures were thrown away too.
    assert fake_kms.sign_calls > len(history) + 1, (fake_kms.sign_calls, len(history))
    # Charged exactly once per accepted charge.
    for customer in customers:
        receipts = await service.receipts(customer)
        assert len(receipts) == 16, [receipt["seq"] for receipt in receipts]
