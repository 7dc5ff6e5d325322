"""`billing serve` on Google Cloud storage, end to end on the emulators.

Two `billing serve` processes share ONE Spanner emulator database (the ledger
of record), with the Firestore read model, a Pub/Sub topic and a Cloud
Storage archive, configured exactly as on Google Cloud: `--store spanner://`
plus BILLING_READ_MODEL / BILLING_BROADCAST / BILLING_ARCHIVE. One signing
key file serves both, so one JWKS verifies every receipt.

Both processes charge the SAME customers at once. The account row is
compare-and-set on seq, so a process that lost a race answers a retry-safe
503; the client retries with the same idempotency key (bounded) until 202.
Afterwards: no forked chain, no key charged twice, every receipt verifies,
balance == sum of receipts, and every receipt reaches Firestore, Cloud
Storage and Pub/Sub.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from crypto import verify_chain, verify_consistency
from ledger import GENESIS_HASH
from ledger.checkpoint_codec import CHECKPOINT_KIND
from tests.gcp._stack import GcpStack
from tests.integration._proc import (
    ServerProcess,
    client_session,
    remote_service,
)
from tests.integration.conftest import Customer, Service

pytestmark = [pytest.mark.emulator, pytest.mark.timeout(240)]

CUSTOMERS = 4
KEYS_PER_CUSTOMER = 12  # distinct keys, split between the two processes
SHARED_KEYS_PER_CUSTOMER = 3  # the same request sent to both processes at once
CONCURRENCY = 16
RETRIES_MAX = 60
SINK_TIMEOUT_S = 45.0


@dataclass
class Outcome:
    receipt_id: str
    attempts: int
    retried_503: int


async def charge_until_accepted(
    service: Service, customer: Customer, body: dict[str, Any]
) -> Outcome:
    """POST one event, retrying retry-safe answers (503/429) with the SAME key."""
    retried = 0
    for attempt in range(1, RETRIES_MAX + 1):
        status, answer, headers = await service.post_event(customer, body)
        if status == 202:
            return Outcome(answer["receipt_id"], attempt, retried)
        assert status in (503, 429), (status, answer)
        assert "Retry-After" in headers, headers
        retried += status == 503
        # Not the Retry-After of a real client: the race clears in milliseconds.
        await asyncio.sleep(0.02 + random.random() * 0.08)
    raise AssertionError(f"{body['idempotent_key']} not accepted after {RETRIES_MAX} tries")


async def pull_receipt_ids(subscription: str, want: set[str], timeout_s: float) -> set[str]:
    """Receipt ids seen on the ordered subscription (acknowledged as pulled)."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while not want <= seen and time.monotonic() < deadline:
            response = await asyncio.to_thread(
                subscriber.pull,
                request={"subscription": subscription, "max_messages": 500},
                timeout=10,
            )
            ack_ids = []
            for received in response.received_messages:
                message = received.message
                # The log's checkpoints share the topic (kind=log_checkpoint).
                if message.attributes.get("kind") != CHECKPOINT_KIND:
                    seen.add(message.attributes["receipt_id"])
                ack_ids.append(received.ack_id)
            if ack_ids:
                await asyncio.to_thread(
                    subscriber.acknowledge,
                    request={"subscription": subscription, "ack_ids": ack_ids},
                    timeout=10,
                )
            else:
                await asyncio.sleep(0.2)
    finally:
        subscriber.close()
    return seen


async def poll(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.25)
    return bool(await asyncio.to_thread(predicate))


def test_the_emulators_disguised_aborts_rerun_the_operation() -> None:
    """NOT_FOUND "Transaction not found" / FAILED_PRECONDITION "Invalid
    transaction ID" are how the emulator aborts an overlapping transaction:
    the store runs the operation again instead of crashing its caller."""
    from google.api_core import exceptions as gexc

    from ledger import StoreUnavailable
    from ledger.spanner import SpannerLedger

    store = SpannerLedger(object())
    errors = [
        gexc.NotFound("Transaction not found: 90"),
        gexc.FailedPrecondition("Invalid transaction ID. Transaction ID must be >= 503"),
        gexc.FailedPrecondition(
            "Cannot read or query using a transaction after it has been committed or rolledback."
        ),
    ]

    def flaky() -> str:
        if errors:
            raise errors.pop()
        return "done"

    assert store._call(flaky) == "done"
    with pytest.raises(gexc.NotFound):  # a real NOT_FOUND is not retried
        store._call(lambda: (_ for _ in ()).throw(gexc.NotFound("Database not found")))

    def always() -> None:
        raise gexc.NotFound("Transaction not found: 1")

    with pytest.raises(StoreUnavailable):
        store._call(always)


async def _check_one_log(a: Service, b: Service, customer: Customer, size: int) -> None:
    head_a = await _json(a, "/v1/log/checkpoint", customer.auth)
    head_b = await _json(b, "/v1/log/checkpoint", customer.auth)
    assert head_a["tree_size"] == head_b["tree_size"] == size
    assert head_a["root_hash"] == head_b["root_hash"]
    history: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await _json(a, "/v1/log/checkpoints", a.admin, after_size=after, limit=1000)
        history += page["data"]
        if not page["has_more"]:
            break
        after = page["data"][-1]["tree_size"]
    sizes = [c["tree_size"] for c in history]
    assert sizes == sorted(set(sizes)) and sizes[-1] == size
    for older, newer in itertools.pairwise(history):
        proof = await _json(
            b, "/v1/log/consistency", customer.auth,
            first=older["tree_size"], second=newer["tree_size"],
        )
        verify_consistency(
            older["tree_size"],
            newer["tree_size"],
            bytes.fromhex(older["root_hash"].removeprefix("sha256:")),
            bytes.fromhex(newer["root_hash"].removeprefix("sha256:")),
            [bytes.fromhex(node) for node in proof["proof"]],
        )


async def _json(service: Service, path: str, headers: dict[str, str], **params: Any) -> Any:
    async with service.session.get(path, headers=headers, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_two_processes_on_one_spanner_database_never_fork_or_double_charge(
    two_servers: tuple[ServerProcess, ServerProcess], stack: GcpStack
) -> None:
    server_a, server_b = two_servers
    async with client_session(server_a.url) as session_a, client_session(server_b.url) as session_b:
        a, b = remote_service(server_a.url, session_a), remote_service(server_b.url, session_b)
        # Customers live in Spanner: created through A, B knows them at once.
        customers = [await a.create_customer() for _ in range(CUSTOMERS)]
        assert (await b.balance(customers[0]))["seq"] == 0

        # Distinct keys alternate between A and B; each shared request goes to
        # both at once (identical body, so the same request fingerprint).
        jobs: list[tuple[str, Service, Customer, dict[str, Any]]] = []
        shared: list[str] = []
        for customer in customers:
            for n in range(KEYS_PER_CUSTOMER):
                body = a.event(customer, amount=f"0.{n + 1:02d}")
                jobs.append((body["idempotent_key"], a if n % 2 else b, customer, body))
            for _ in range(SHARED_KEYS_PER_CUSTOMER):
                body = a.event(customer, amount="1.00")
                shared.append(body["idempotent_key"])
                jobs += [(body["idempotent_key"], a, customer, body)]
                jobs += [(body["idempotent_key"], b, customer, body)]
        random.Random(7).shuffle(jobs)

        gate = asyncio.Semaphore(CONCURRENCY)

        async def run(job: tuple[str, Service, Customer, dict[str, Any]]) -> Outcome:
            _, service, customer, body = job
            async with gate:
                return await charge_until_accepted(service, customer, body)

        outcomes = await asyncio.gather(*(run(job) for job in jobs))
        by_key: dict[str, set[str]] = {}
        for (key, *_), outcome in zip(jobs, outcomes, strict=True):
            by_key.setdefault(key, set()).add(outcome.receipt_id)
        # No charge twice: every key, shared ones included, has ONE receipt.
        assert all(len(ids) == 1 for ids in by_key.values()), {
            k: v for k, v in by_key.items() if len(v) > 1
        }
        acked = {key: next(iter(ids)) for key, ids in by_key.items()}
        retried = sum(o.retried_503 for o in outcomes)
        print(f"{len(jobs)} requests, {len(acked)} keys, {retried} retry-safe 503s retried")

        # No forked chain: gapless seq, hash links, signatures, balances; the
        # same view from both processes (one store).
        jwks = await a.jwks()
        assert await b.jwks() == jwks
        chains: dict[str, list[dict[str, Any]]] = {}
        for customer in customers:
            chain = await a.receipts(customer)
            assert chain == await b.receipts(customer)
            expected = {k for k, _, c, _ in jobs if c.customer_id == customer.customer_id}
            assert [r["seq"] for r in chain] == list(range(1, len(expected) + 1))
            previous = GENESIS_HASH
            for receipt in chain:
                assert receipt["previous_receipt_hash"] == previous
                previous = receipt["receipt_hash"]
            report = verify_chain(chain, jwks)
            assert report.ok and report.verified == len(chain), report
            assert {r["idempotency_key"]: r["receipt_id"] for r in chain} == {
                k: acked[k] for k in expected
            }
            balance = await b.balance(customer)
            assert balance["balance_minor"] == sum(r["amount_minor"] for r in chain)
            assert balance["seq"] == len(chain)
            chains[customer.customer_id] = chain
        all_ids = {r["receipt_id"] for chain in chains.values() for r in chain}
        assert all_ids == set(acked.values())

        # One receipt log for both processes: every index used once, no gap,
        # and every checkpoint either of them signed extends the one before.
        leaves = sorted(r["log"]["index"] for chain in chains.values() for r in chain)
        assert leaves == list(range(len(all_ids)))
        await _check_one_log(a, b, customers[0], len(all_ids))

        # A receipt served by either process, whichever signed it.
        some = chains[customers[0].customer_id][-1]
        async with session_b.get(
            f"/v1/receipts/{some['receipt_id']}", headers=customers[0].auth
        ) as response:
            assert response.status == 200
            assert (await response.json())["receipt_hash"] == some["receipt_hash"]

        await _check_sinks(stack, chains, all_ids)


async def _check_sinks(
    stack: GcpStack, chains: dict[str, list[dict[str, Any]]], all_ids: set[str]
) -> None:
    from ledger.firestore import FirestoreReadModel
    from ledger.gcs import GcsArchive

    def ids(receipts: list[Any]) -> list[str]:
        return [r.receipt_id for r in receipts]

    expected = {cid: [r["receipt_id"] for r in chain] for cid, chain in chains.items()}
    read_model = FirestoreReadModel.open(stack.read_model)
    archive = GcsArchive.open(stack.archive)
    try:

        def in_read_model() -> bool:
            return all(ids(read_model.list_receipts(c, 0, 1000)) == e for c, e in expected.items())

        def in_archive() -> bool:
            return all(ids(archive.read_customer(c)) == e for c, e in expected.items())

        assert await poll(in_read_model, SINK_TIMEOUT_S), "receipts missing from Firestore"
        assert await poll(in_archive, SINK_TIMEOUT_S), "receipts missing from Cloud Storage"
        stored = read_model.get_receipt(chains[next(iter(chains))][0]["receipt_id"])
        assert (
            stored is not None
            and stored.receipt_hash == chains[stored.customer_id][0]["receipt_hash"]
        )
    finally:
        read_model.close()
        archive.close()
    seen = await pull_receipt_ids(stack.subscription, all_ids, SINK_TIMEOUT_S)
    assert all_ids <= seen, f"{len(all_ids - seen)} receipts never broadcast"
    assert seen <= all_ids
