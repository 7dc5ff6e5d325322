"""SpannerLedger on the Cloud Spanner emulator: what the contract suite cannot
see — migrations, and compare-and-set between two independent writers."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from google.cloud import spanner

from ledger import (
    GENESIS_HASH,
    ChainConflict,
    HaltIncident,
    ReceiptWrite,
    StoreUnavailable,
)
from ledger._gcp_receipts import RECEIPT_FIELDS
from ledger._spanner_codec import encode_bytes
from ledger.gcp_urls import parse_spanner_url
from ledger.model import ApiKey
from ledger.spanner import SpannerLedger
from ledger.spanner_schema import MIGRATIONS, apply_migrations, pending_versions
from tests.contract._chain import T0, Chain, customer, entitlement
from tests.contract._log import LogWriter, assert_one_log, race_appends
from tests.gcp import _data as d

pytestmark = pytest.mark.emulator


def _database(url: str):  # type: ignore[no-untyped-def]
    parsed = parse_spanner_url(url)
    client = spanner.Client(project=parsed.project)
    return client.instance(parsed.instance).database(parsed.database)


def test_migrate_is_idempotent_and_finishes_an_interrupted_run(spanner_url: str) -> None:
    database = _database(spanner_url)
    assert pending_versions(database) == []
    assert apply_migrations(database) == []
    # A run that died after its DDL but before recording the version:
    with database.batch() as batch:
        batch.delete("SchemaMigrations", spanner.KeySet(all_=True))
    assert pending_versions(database) == [m.version for m in MIGRATIONS]
    assert apply_migrations(database) == [m.version for m in MIGRATIONS]
    assert pending_versions(database) == []


def test_open_refuses_an_unmigrated_or_missing_database(spanner_emulator: str) -> None:
    url = f"spanner://projects/vexa-test/instances/test/databases/{d.unique('db')}"
    with pytest.raises(StoreUnavailable, match="does not exist"):
        SpannerLedger.open(url)
    with pytest.raises(StoreUnavailable, match="billing migrate"):
        SpannerLedger.open(url, create=True)  # created, but not migrated
    with pytest.raises(StoreUnavailable, match="billing migrate"):
        SpannerLedger.open(url)
    SpannerLedger.open(url, migrate=True).check_writable()


def test_a_conflicting_customer_fails_the_whole_batch(spanner_url: str) -> None:
    store = SpannerLedger.open(spanner_url)
    try:
        a, b = d.customer(), d.customer()
        for c in (a, b):
            store.create_customer(c)
            store.put_entitlement(d.entitlement(c.customer_id))
        first = d.chain(a.customer_id, 2)
        store.commit_batch([ReceiptWrite(r) for r in first], d.outbox_for(first))

        stale = d.chain(a.customer_id, 1)  # seq 1 again: the chain moved on
        fresh = d.chain(b.customer_id, 1)
        with pytest.raises(ChainConflict) as caught:
            store.commit_batch(
                [ReceiptWrite(r) for r in fresh + stale], d.outbox_for(fresh + stale)
            )
        assert caught.value.customer_ids == {a.customer_id}
        assert caught.value.reasons == {a.customer_id: "stale_seq"}
        # Nothing of the batch was written, not even the innocent customer's part.
        assert store.list_receipts(b.customer_id, 0, 10) == []
        assert store.load_account(b.customer_id).seq == 0  # type: ignore[union-attr]
        assert store.outbox_backlog() == {"receipts": 2}

        (dup,) = d.chain(a.customer_id, 1, start_seq=3, previous=first[-1].receipt_hash)
        dup = d.with_key(dup, first[0].idempotency_key)
        with pytest.raises(ChainConflict) as caught:
            store.commit_batch([ReceiptWrite(dup)], [])
        assert caught.value.reasons == {a.customer_id: "idempotency_key_exists"}

        state = store.load_account(a.customer_id)
        assert state is not None
        assert (state.seq, state.last_receipt_hash, state.balance_minor) == (
            2,
            first[-1].receipt_hash,
            20,
        )
        assert state.entitlements["plan"].used_minor == 20
        assert store.get_receipt(first[1].receipt_id) == first[1]
        assert [r.seq for r in store.iter_receipts(a.customer_id)] == [1, 2]
    finally:
        store.close()


def test_two_writers_on_one_database_never_fork_a_chain(spanner_url: str) -> None:
    """Two SpannerLedger instances (two gateways) race on the same customers:
    each writer reads the head, extends it and commits; losers reload. Some
    requests are sent to both writers with the same idempotency key."""
    writers = [SpannerLedger.open(spanner_url), SpannerLedger.open(spanner_url)]
    customers = [d.customer() for _ in range(3)]
    for c in customers:
        writers[0].create_customer(c)
        writers[0].put_entitlement(d.entitlement(c.customer_id))
    rounds = 12
    committed: Counter[str] = Counter()
    conflicts: Counter[str] = Counter()
    errors: list[BaseException] = []
    start = threading.Barrier(2, timeout=30)

    def run(index: int) -> None:
        store = writers[index]
        try:
            start.wait()
            for n in range(rounds):
                # Even rounds: a shared request both writers try; odd: their own.
                key = f"shared-{n}" if n % 2 == 0 else f"w{index}-{n}"
                for customer in customers:
                    for _attempt in range(50):
                        if store.find_receipt_by_key(customer.customer_id, key):
                            break
                        head = store.load_account(customer.customer_id)
                        assert head is not None
                        (receipt,) = d.chain(
                            customer.customer_id,
                            1,
                            start_seq=head.seq + 1,
                            previous=head.last_receipt_hash,
                            balance=head.balance_minor,
                        )
                        receipt = d.with_key(receipt, key)
                        try:
                            store.commit_batch([ReceiptWrite(receipt)], d.outbox_for([receipt]))
                        except ChainConflict:
                            conflicts[f"w{index}"] += 1
                            continue
                        committed[f"w{index}"] += 1
                        break
                    else:
                        raise AssertionError("a writer never got through")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        shared, own = rounds // 2, rounds // 2
        per_customer = shared + 2 * own
        assert sum(committed.values()) == per_customer * len(customers)
        for customer in customers:
            receipts = list(writers[1].iter_receipts(customer.customer_id))
            assert [r.seq for r in receipts] == list(range(1, per_customer + 1))
            keys = [r.idempotency_key for r in receipts]
            assert len(keys) == len(set(keys))
            previous = GENESIS_HASH
            for r in receipts:
                assert r.previous_receipt_hash == previous
                previous = r.receipt_hash
            state = writers[0].load_account(customer.customer_id)
            assert state is not None
            assert state.seq == per_customer
            assert state.balance_minor == sum(r.amount_minor for r in receipts)
            assert state.entitlements["plan"].used_minor == state.balance_minor
    finally:
        for w in writers:
            w.close()


def test_a_version_1_database_migrates_to_the_receipt_log(spanner_emulator: str) -> None:
    """A database created before the receipt log keeps its receipts (no leaf
    index) and takes log appends after `billing migrate`."""
    url = f"spanner://projects/vexa-test/instances/test/databases/{d.unique('db')}"
    with pytest.raises(StoreUnavailable, match="billing migrate"):
        SpannerLedger.open(url, create=True)  # created, not migrated
    database = _database(url)
    assert apply_migrations(database, MIGRATIONS[:1]) == [1]
    later = [m.version for m in MIGRATIONS[1:]]
    assert pending_versions(database) == later
    old = Chain("cus_old")
    v1_receipt = old.next().receipt
    v1_columns = [c for c in RECEIPT_FIELDS if c != "log_index"]
    with database.batch() as batch:  # a receipt written by a version-1 gateway
        batch.insert(
            "Customers",
            ("customer_id", "email", "currency", "created_at"),
            [("cus_old", "old@example.com", "USD", T0)],
        )
        batch.insert(
            "Accounts",
            ("customer_id", "seq", "last_receipt_hash", "balance_minor"),
            [("cus_old", 1, old.last_hash, old.balance_minor)],
        )
        batch.insert(
            "Receipts", v1_columns, [encode_bytes([getattr(v1_receipt, c) for c in v1_columns])]
        )

    assert apply_migrations(database) == later
    store = SpannerLedger.open(url)
    try:
        assert store.list_receipts("cus_old", 0, 10) == old.made
        assert store.log_head() is None
        store.put_entitlement(entitlement("cus_old"))
        writes, append = LogWriter().append([old.next()])
        store.commit_batch(writes, [], append)
        assert store.receipts_by_log_index(0, 10) == [writes[0].receipt]
        assert store.log_head() == append.checkpoint
    finally:
        store.close()


def test_a_version_2_database_migrates_to_halts_requests_and_share_links(
    spanner_emulator: str,
) -> None:
    """A deployed database (receipt log, no halt table) refuses to open until
    `billing migrate`, then keeps its rows and serves the new tables: its
    existing keys are listed through the new index, its old receipts have no
    request record, a halt is recorded and read back, and the dispute table is there."""
    url = f"spanner://projects/vexa-test/instances/test/databases/{d.unique('db')}"
    with pytest.raises(StoreUnavailable, match="billing migrate"):
        SpannerLedger.open(url, create=True)
    database = _database(url)
    assert apply_migrations(database, MIGRATIONS[:2]) == [1, 2]
    store = SpannerLedger(database)  # a version-2 gateway's writes
    store.create_customer(customer("cus_old"))
    store.put_entitlement(entitlement("cus_old"))
    store.create_api_key(ApiKey("key_old", "hash_old", "cus_old", T0))
    chain = Chain("cus_old")
    receipt = chain.next().receipt
    # Its receipt as a version-2 gateway committed it (today's commit_batch
    # also reads the kept refusals of migration 4).
    with database.batch() as batch:
        row = encode_bytes([getattr(receipt, c) for c in RECEIPT_FIELDS])
        batch.insert("Receipts", RECEIPT_FIELDS, [row])
        batch.update(
            "Accounts",
            ("customer_id", "seq", "last_receipt_hash", "balance_minor"),
            [("cus_old", 1, chain.last_hash, chain.balance_minor)],
        )
    with pytest.raises(StoreUnavailable, match=r"\[3, 4, 5\] not applied"):
        SpannerLedger.open(url)

    assert apply_migrations(database) == [3, 4, 5]
    upgraded = SpannerLedger.open(url)
    try:
        assert [k.key_id for k in upgraded.list_api_keys("cus_old")] == ["key_old"]
        assert upgraded.charge_request(chain.made[0].receipt_id) is None
        assert upgraded.usage_by_day("cus_old", "2026-01-01")[0].amount_minor == 100
        incident = HaltIncident("inc_1", T0, "chain_broken", "seq 1", "reconciler", "cus_old")
        assert upgraded.record_halt(incident) == incident
        assert upgraded.open_halts() == [incident]
        assert upgraded.dispute_submission("dp_none") is None  # migration 5's table
    finally:
        upgraded.close()


def test_two_gateways_append_to_one_log_without_reusing_an_index(spanner_url: str) -> None:
    """Two SpannerLedger instances on one database (two gateways) append at
    once: the log head's compare-and-set lets one through per size."""
    writers = [SpannerLedger.open(spanner_url), SpannerLedger.open(spanner_url)]
    try:
        chains = []
        for i, writer in enumerate(writers):
            writer.create_customer(customer(f"cus_g{i}"))
            writer.put_entitlement(entitlement(f"cus_g{i}", quota_minor=None))
            chains.append(Chain(f"cus_g{i}"))
        result = race_appends(writers, chains, commits=8, batch=16)
        assert len(result.landed) == 16
        assert_one_log(writers[1], result)
        assert_one_log(writers[0], result)
    finally:
        for writer in writers:
            writer.close()



def test_two_gateways_finding_the_same_failure_at_once_open_one_incident(
    spanner_url: str,
) -> None:
    """Both audits race to record it; the read-write transaction makes the
    loser see the winner's incident instead of opening a second one."""
    stores = [SpannerLedger.open(spanner_url) for _ in range(2)]
    start = threading.Barrier(len(stores))
    recorded: dict[int, HaltIncident] = {}

    def record(n: int) -> None:
        start.wait(timeout=10)
        recorded[n] = stores[n].record_halt(
            HaltIncident(f"inc_{n}", T0, "hash_mismatch", f"found by {n}", "reconciler",
                         "cus_a", "rcpt_1")
        )

    threads = [threading.Thread(target=record, args=(n,)) for n in range(len(stores))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert recorded[0] == recorded[1]
        assert stores[1].open_halts() == [recorded[0]]
    finally:
        for store in stores:
            store.close()
