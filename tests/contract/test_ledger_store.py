"""Contract: LedgerStore. Every adapter in LEDGER_STORE_FACTORIES must pass."""

from __future__ import annotations

import dataclasses

import pytest

from crypto.receipt import GENESIS_HASH
from ledger.errors import AlreadyExists, ChainConflict, NotFound
from ledger.model import ApiKey, SigningKeyRecord, StoredRefusal, WebhookEvent
from ledger.ports import LedgerStore
from tests.contract._chain import T0, Chain, customer, entitlement, outbox_message, ts


def _open_account(store: LedgerStore, customer_id: str, quota_minor: int | None = 10_000) -> Chain:
    store.create_customer(customer(customer_id))
    store.put_entitlement(entitlement(customer_id, quota_minor=quota_minor))
    return Chain(customer_id)


# -- customers and accounts -------------------------------------------------------
def test_new_customer_starts_an_empty_chain(ledger_store: LedgerStore) -> None:
    ledger_store.create_customer(customer("cus_a", stripe_customer_id="cus_stripe_a"))

    account = ledger_store.load_account("cus_a")
    assert account is not None
    assert (account.seq, account.last_receipt_hash, account.balance_minor) == (0, GENESIS_HASH, 0)
    assert account.customer.email == "cus_a@example.com"
    assert account.entitlements == {}
    assert ledger_store.get_account_head("cus_a") == (0, GENESIS_HASH, 0)


def test_unknown_customer_has_no_account(ledger_store: LedgerStore) -> None:
    assert ledger_store.load_account("nobody") is None
    assert ledger_store.get_account_head("nobody") is None
    assert ledger_store.get_customer("nobody") is None


def test_duplicate_customer_is_refused(ledger_store: LedgerStore) -> None:
    ledger_store.create_customer(customer("cus_a"))
    with pytest.raises(AlreadyExists):
        ledger_store.create_customer(customer("cus_a", email="other@example.com"))
    stored = ledger_store.get_customer("cus_a")
    assert stored is not None and stored.email == "cus_a@example.com"


def test_customers_are_found_by_email_and_stripe_id(ledger_store: LedgerStore) -> None:
    ledger_store.create_customer(customer("cus_a"))
    ledger_store.create_customer(customer("cus_b"))
    ledger_store.set_stripe_customer_id("cus_b", "cus_stripe_b")

    by_email = ledger_store.find_customer_by_email("cus_a@example.com")
    by_stripe = ledger_store.find_customer_by_stripe_id("cus_stripe_b")
    assert by_email is not None and by_email.customer_id == "cus_a"
    assert by_stripe is not None and by_stripe.customer_id == "cus_b"
    assert by_stripe.stripe_customer_id == "cus_stripe_b"
    assert ledger_store.find_customer_by_email("nobody@example.com") is None
    assert ledger_store.find_customer_by_stripe_id("cus_stripe_nobody") is None
    assert sorted(ledger_store.list_customer_ids()) == ["cus_a", "cus_b"]


# -- the charge path --------------------------------------------------------------------
def test_committed_receipts_are_read_back_in_order(ledger_store: LedgerStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    writes = [chain.next(amount_minor=100 * (i + 1)) for i in range(3)]
    ledger_store.commit_batch(writes, [])

    account = ledger_store.load_account("cus_a")
    assert account is not None
    assert (account.seq, account.last_receipt_hash, account.balance_minor) == (
        3,
        chain.last_hash,
        600,
    )
    assert ledger_store.get_account_head("cus_a") == (3, chain.last_hash, 600)
    assert ledger_store.list_receipts("cus_a", after_seq=0, limit=10) == chain.made
    assert list(ledger_store.iter_receipts("cus_a")) == chain.made
    first = chain.made[0]
    assert ledger_store.get_receipt(first.receipt_id) == first
    assert ledger_store.find_receipt_by_key("cus_a", first.idempotency_key) == first
    assert ledger_store.get_receipt("rcpt_unknown") is None
    assert ledger_store.find_receipt_by_key("cus_a", "unknown-key") is None


def test_one_batch_serves_many_customers(ledger_store: LedgerStore) -> None:
    chains = [_open_account(ledger_store, f"cus_{i}") for i in range(5)]
    writes = [chain.next() for _ in range(3) for chain in chains]
    writes.sort(key=lambda write: (write.receipt.customer_id, write.receipt.seq))
    ledger_store.commit_batch(writes, [])

    for chain in chains:
        assert ledger_store.get_account_head(chain.customer_id) == (3, chain.last_hash, 300)
        assert ledger_store.list_receipts(chain.customer_id, 0, 10) == chain.made


def test_stale_seq_conflicts_and_nothing_in_the_batch_is_written(
    ledger_store: LedgerStore,
) -> None:
    good = _open_account(ledger_store, "cus_good")
    stale = _open_account(ledger_store, "cus_stale")
    ledger_store.commit_batch([stale.next()], [])
    # Another writer's view: it still believes cus_stale is at seq 0.
    other_writer = Chain("cus_stale")

    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch(
            [good.next(), other_writer.next()], [outbox_message("m1", "cus_good")]
        )

    assert raised.value.customer_ids == {"cus_stale"}
    assert ledger_store.get_account_head("cus_good") == (0, GENESIS_HASH, 0)
    assert ledger_store.list_receipts("cus_good", 0, 10) == []
    assert ledger_store.list_receipts("cus_stale", 0, 10) == stale.made
    assert ledger_store.outbox_backlog().get("receipts", 0) == 0
    assert ledger_store.get_entitlements("cus_good")["usage"].used_minor == 0


def test_same_seq_on_another_chain_conflicts(ledger_store: LedgerStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    ledger_store.commit_batch([chain.next()], [])
    fork = Chain("cus_a", seq=1, last_hash="sha256:" + "f" * 64, balance_minor=100)

    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch([fork.next()], [])

    assert raised.value.customer_ids == {"cus_a"}
    assert ledger_store.list_receipts("cus_a", 0, 10) == chain.made


def test_conflict_names_every_offending_customer(ledger_store: LedgerStore) -> None:
    a = _open_account(ledger_store, "cus_a")
    b = _open_account(ledger_store, "cus_b")
    c = _open_account(ledger_store, "cus_c")
    ledger_store.commit_batch([a.next(), b.next(key="used")], [])
    stale_a = Chain("cus_a")
    reused_b = b.next(key="used")

    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch([stale_a.next(), reused_b, c.next()], [])

    assert raised.value.customer_ids == {"cus_a", "cus_b"}
    assert ledger_store.get_account_head("cus_c") == (0, GENESIS_HASH, 0)


def test_idempotency_key_is_unique_per_customer_only(ledger_store: LedgerStore) -> None:
    a = _open_account(ledger_store, "cus_a")
    b = _open_account(ledger_store, "cus_b")
    ledger_store.commit_batch([a.next(key="order-1")], [])

    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch([a.next(key="order-1")], [])
    assert raised.value.customer_ids == {"cus_a"}
    a.rewind(1)

    ledger_store.commit_batch([b.next(key="order-1")], [])
    assert ledger_store.get_account_head("cus_a") == (1, a.last_hash, 100)
    receipt_b = ledger_store.find_receipt_by_key("cus_b", "order-1")
    assert receipt_b is not None and receipt_b.customer_id == "cus_b"


def test_receipts_are_found_by_many_keys_in_one_read(ledger_store: LedgerStore) -> None:
    a = _open_account(ledger_store, "cus_a")
    b = _open_account(ledger_store, "cus_b")
    # More keys than SQLite takes parameters in one statement.
    writes = [a.next(amount_minor=1, key=f"order-{i}") for i in range(1_200)]
    for start in range(0, len(writes), 400):
        ledger_store.commit_batch(writes[start : start + 400], [])
    ledger_store.commit_batch([b.next(key="order-7")], [])

    wanted = [f"order-{i}" for i in range(0, 1_200, 3)] + ["order-7", "unknown", "order-3"]
    found = ledger_store.find_receipts_by_keys("cus_a", wanted)
    assert sorted(found) == sorted(set(wanted) - {"unknown"})
    by_key = {receipt.idempotency_key: receipt for receipt in a.made}
    assert all(found[key] == by_key[key] for key in found)
    assert ledger_store.find_receipts_by_keys("cus_b", ["order-7", "order-8"]) == {
        "order-7": b.made[0]
    }
    assert ledger_store.find_receipts_by_keys("cus_a", []) == {}


def test_a_key_repeated_inside_one_batch_conflicts(ledger_store: LedgerStore) -> None:
    a = _open_account(ledger_store, "cus_a")
    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch([a.next(key="twice"), a.next(key="twice")], [])
    assert raised.value.customer_ids == {"cus_a"}
    assert ledger_store.get_account_head("cus_a") == (0, GENESIS_HASH, 0)


def test_unknown_customer_in_a_batch_conflicts(ledger_store: LedgerStore) -> None:
    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch([Chain("cus_ghost").next()], [])
    assert raised.value.customer_ids == {"cus_ghost"}
    assert ledger_store.list_receipts("cus_ghost", 0, 10) == []


# -- refusals kept under their keys ---------------------------------------------------
def _refusal(customer_id: str, key: str, code: str = "quota_exceeded") -> StoredRefusal:
    return StoredRefusal(
        customer_id=customer_id, idempotency_key=key, request_fingerprint="fp-" + key,
        code=code, message="this charge would exceed the hard quota", param="amount",
        recorded_at=ts(1),
    )


def test_refusals_are_found_with_receipts_by_key(ledger_store: LedgerStore) -> None:
    a = _open_account(ledger_store, "cus_a")
    _open_account(ledger_store, "cus_b")
    ledger_store.commit_batch([a.next(key="paid")], [])
    refused = _refusal("cus_a", "over-quota")
    no_param = dataclasses.replace(_refusal("cus_b", "over-quota"), param=None)
    ledger_store.commit_refusals([refused, no_param])

    found = ledger_store.find_answers_by_keys("cus_a", ["paid", "over-quota", "unknown"])
    assert found == {"paid": a.made[0], "over-quota": refused}
    assert ledger_store.find_answers_by_keys("cus_b", ["over-quota", "paid"]) == {
        "over-quota": no_param
    }
    # Receipts only where receipts are asked for; a refusal charges nothing.
    assert ledger_store.find_receipts_by_keys("cus_a", ["paid", "over-quota"]) == {
        "paid": a.made[0]
    }
    assert ledger_store.get_account_head("cus_a") == (1, a.last_hash, 100)
    assert ledger_store.find_answers_by_keys("cus_a", []) == {}


def test_a_refused_key_cannot_become_a_receipt(ledger_store: LedgerStore) -> None:
    a = _open_account(ledger_store, "cus_a")
    b = _open_account(ledger_store, "cus_b")
    ledger_store.commit_refusals([_refusal("cus_a", "order-1")])

    with pytest.raises(ChainConflict) as raised:
        ledger_store.commit_batch([a.next(key="order-1"), b.next(key="order-1")], [])
    assert raised.value.customer_ids == {"cus_a"}
    assert raised.value.reasons == {"cus_a": "idempotency_key_exists"}
    assert ledger_store.get_account_head("cus_a") == (0, GENESIS_HASH, 0)
    assert ledger_store.get_account_head("cus_b") == (0, GENESIS_HASH, 0)
    assert ledger_store.get_entitlements("cus_a")["usage"].used_minor == 0
    # Another customer's key of the same name is free.
    b.rewind(1)
    ledger_store.commit_batch([b.next(key="order-1")], [])
    assert ledger_store.find_receipt_by_key("cus_b", "order-1") == b.made[-1]


def test_a_used_key_cannot_become_a_refusal(ledger_store: LedgerStore) -> None:
    a = _open_account(ledger_store, "cus_a")
    _open_account(ledger_store, "cus_b")
    ledger_store.commit_batch([a.next(key="paid")], [])
    ledger_store.commit_refusals([_refusal("cus_a", "refused")])

    for taken in ("paid", "refused"):
        with pytest.raises(ChainConflict) as raised:
            ledger_store.commit_refusals(
                [_refusal("cus_b", "fresh"), _refusal("cus_a", taken, code="payment_required")]
            )
        assert raised.value.customer_ids == {"cus_a"}
    with pytest.raises(ChainConflict) as raised:  # twice in one call
        ledger_store.commit_refusals([_refusal("cus_b", "twice"), _refusal("cus_b", "twice")])
    assert raised.value.customer_ids == {"cus_b"}
    # Nothing of a refused call was written; the first answers stand.
    assert ledger_store.find_answers_by_keys("cus_b", ["fresh", "twice"]) == {}
    answers = ledger_store.find_answers_by_keys("cus_a", ["paid", "refused"])
    assert answers == {"paid": a.made[0], "refused": _refusal("cus_a", "refused")}
    ledger_store.commit_refusals([])  # nothing to keep: nothing happens


def test_balance_is_the_sum_of_receipts_after_many_batches(ledger_store: LedgerStore) -> None:
    chains = [_open_account(ledger_store, f"cus_{i}", quota_minor=None) for i in range(4)]
    for batch in range(20):
        writes = [chain.next(amount_minor=batch * 7 + i + 1) for i, chain in enumerate(chains)]
        ledger_store.commit_batch(writes, [])

    for chain in chains:
        receipts = list(ledger_store.iter_receipts(chain.customer_id))
        head = ledger_store.get_account_head(chain.customer_id)
        assert head is not None
        assert head[2] == sum(r.amount_minor for r in receipts) == chain.balance_minor
        assert [r.seq for r in receipts] == list(range(1, 21))
        links = [r.previous_receipt_hash for r in receipts[1:]]
        assert links == [r.receipt_hash for r in receipts[:-1]]


def test_usage_accumulates_and_survives_entitlement_updates(ledger_store: LedgerStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    ledger_store.commit_batch([chain.next(300), chain.next(200)], [])
    assert ledger_store.get_entitlements("cus_a")["usage"].used_minor == 500

    ledger_store.put_entitlement(entitlement("cus_a", quota_minor=50_000, status="past_due"))
    updated = ledger_store.get_entitlements("cus_a")["usage"]
    assert (updated.quota_minor, updated.status, updated.used_minor) == (50_000, "past_due", 500)

    ledger_store.put_entitlement(entitlement("cus_a", quota_minor=50_000), reset_usage=True)
    assert ledger_store.get_entitlements("cus_a")["usage"].used_minor == 0
    ledger_store.commit_batch([chain.next(50)], [])
    account = ledger_store.load_account("cus_a")
    assert account is not None and account.entitlements["usage"].used_minor == 50


def test_entitlement_fields_round_trip(ledger_store: LedgerStore) -> None:
    ledger_store.create_customer(customer("cus_a"))
    full = entitlement(
        "cus_a",
        "seats",
        quota_minor=None,
        policy="soft",
        status="trialing",
        plan="pro",
        max_bots=3,
        period_start=T0,
        period_end=ts(3600),
        trial_end=ts(60),
        cancel_at_period_end=True,
    )
    ledger_store.put_entitlement(full)
    assert ledger_store.get_entitlements("cus_a") == {"seats": full}
    assert ledger_store.get_entitlements("nobody") == {}


def test_list_receipts_pages_with_after_seq_and_limit(ledger_store: LedgerStore) -> None:
    chain = _open_account(ledger_store, "cus_a", quota_minor=None)
    ledger_store.commit_batch([chain.next() for _ in range(7)], [])

    first = ledger_store.list_receipts("cus_a", after_seq=0, limit=3)
    second = ledger_store.list_receipts("cus_a", after_seq=first[-1].seq, limit=3)
    third = ledger_store.list_receipts("cus_a", after_seq=second[-1].seq, limit=3)
    assert [r.seq for r in first + second + third] == list(range(1, 8))
    assert ledger_store.list_receipts("cus_a", after_seq=7, limit=3) == []
    assert ledger_store.list_receipts("cus_other", after_seq=0, limit=3) == []


def test_receipt_stats_by_currency_and_day(ledger_store: LedgerStore) -> None:
    chain = _open_account(ledger_store, "cus_a", quota_minor=None)
    ledger_store.commit_batch([chain.next(100), chain.next(250)], [])
    assert ledger_store.stats_receipts_by_currency_day() == [("USD", "2026-01-01", 2, 350)]


# -- API keys -----------------------------------------------------------------------
def test_api_keys_resolve_by_hash_and_can_be_revoked(ledger_store: LedgerStore) -> None:
    ledger_store.create_customer(customer("cus_a"))
    key = ApiKey(key_id="key_1", key_hash="h" * 64, customer_id="cus_a", created_at=T0)
    ledger_store.create_api_key(key)

    assert ledger_store.resolve_api_key("h" * 64) == key
    assert ledger_store.resolve_api_key("x" * 64) is None
    with pytest.raises(AlreadyExists):
        ledger_store.create_api_key(key)

    ledger_store.revoke_api_key("cus_a", "key_1", ts(10))
    revoked = ledger_store.resolve_api_key("h" * 64)
    assert revoked is not None and revoked.revoked_at == ts(10)
    ledger_store.revoke_api_key("cus_a", "key_1", ts(20))  # the first revocation counts
    again = ledger_store.resolve_api_key("h" * 64)
    assert again is not None and again.revoked_at == ts(10)


def test_a_key_is_revoked_only_through_its_own_customer(ledger_store: LedgerStore) -> None:
    for customer_id in ("cus_a", "cus_b"):
        ledger_store.create_customer(customer(customer_id))
    key_b = ApiKey(key_id="key_b", key_hash="b" * 64, customer_id="cus_b", created_at=T0)
    ledger_store.create_api_key(key_b)

    with pytest.raises(NotFound):
        ledger_store.revoke_api_key("cus_a", "key_b", ts(10))
    assert ledger_store.resolve_api_key("b" * 64) == key_b  # untouched
    with pytest.raises(NotFound):
        ledger_store.revoke_api_key("cus_a", "key_missing", ts(10))


# -- signing keys ------------------------------------------------------------------
def test_signing_keys_are_recorded_once(ledger_store: LedgerStore) -> None:
    first = SigningKeyRecord("k1", "RS256", public_jwk_json='{"kid":"k1"}', created_at=T0)
    second = SigningKeyRecord("k2", "RS256", public_jwk_json='{"kid":"k2"}', created_at=ts(5))
    ledger_store.record_signing_key(first)
    ledger_store.record_signing_key(second)
    ledger_store.record_signing_key(first)
    assert sorted(ledger_store.signing_keys(), key=lambda k: k.kid) == [first, second]


# -- webhook events --------------------------------------------------------------------
def _event(event_id: str, received_at: str = T0) -> WebhookEvent:
    return WebhookEvent(
        event_id=event_id,
        event_type="customer.subscription.updated",
        payload=b'{"id":"' + event_id.encode() + b'"}',
        received_at=received_at,
    )


def test_webhook_events_are_deduplicated_by_id(ledger_store: LedgerStore) -> None:
    assert ledger_store.record_webhook_event(_event("evt_1")) is True
    assert ledger_store.record_webhook_event(_event("evt_1")) is False
    pending = ledger_store.pending_webhook_events(now=ts(1), limit=10)
    assert [e.event_id for e in pending] == ["evt_1"]
    assert pending[0].payload == b'{"id":"evt_1"}'


def test_webhook_events_pending_processed_and_failed(ledger_store: LedgerStore) -> None:
    for i in range(3):
        ledger_store.record_webhook_event(_event(f"evt_{i}", received_at=ts(i)))

    assert ledger_store.pending_webhook_events(now=ts(1), limit=10)[0].event_id == "evt_0"
    assert len(ledger_store.pending_webhook_events(now=ts(1), limit=10)) == 2

    ledger_store.mark_webhook_processed("evt_0", ts(5))
    ledger_store.mark_webhook_failed("evt_1", "admin api down", next_attempt_at=ts(60))

    assert [e.event_id for e in ledger_store.pending_webhook_events(ts(10), 10)] == ["evt_2"]
    later = {e.event_id: e for e in ledger_store.pending_webhook_events(ts(60), 10)}
    assert sorted(later) == ["evt_1", "evt_2"]
    retried = later["evt_1"]
    assert (retried.attempts, retried.last_error) == (1, "admin api down")
    assert len(ledger_store.pending_webhook_events(ts(60), limit=1)) == 1
    # Processing an event for good keeps it out, even when it comes in again.
    assert ledger_store.record_webhook_event(_event("evt_0")) is False
    assert "evt_0" not in [e.event_id for e in ledger_store.pending_webhook_events(ts(99), 10)]


# -- outbox --------------------------------------------------------------------------
def test_outbox_committed_with_receipts(ledger_store: LedgerStore) -> None:
    chain = _open_account(ledger_store, "cus_a")
    ledger_store.commit_batch([chain.next()], [outbox_message("m1", "cus_a")])
    pending = ledger_store.pending_outbox("receipts", now=ts(1), limit=10)
    assert [m.message_id for m in pending] == ["m1"]
    assert pending[0].payload == b"m1"
    assert ledger_store.outbox_backlog() == {"receipts": 1}


def test_outbox_is_in_order_per_ordering_key(ledger_store: LedgerStore) -> None:
    messages = [outbox_message(f"m{i}", f"cus_{i % 2}") for i in range(6)]
    messages.append(outbox_message("other", "cus_0", topic="entitlements"))
    ledger_store.enqueue_outbox(messages)

    pending = ledger_store.pending_outbox("receipts", now=ts(1), limit=10)
    assert [m.message_id for m in pending] == [f"m{i}" for i in range(6)]
    assert [m.message_id for m in ledger_store.pending_outbox("receipts", ts(1), 2)] == [
        "m0",
        "m1",
    ]
    assert ledger_store.outbox_backlog() == {"receipts": 6, "entitlements": 1}


def test_outbox_respects_due_times(ledger_store: LedgerStore) -> None:
    ledger_store.enqueue_outbox(
        [outbox_message("now", "cus_a"), outbox_message("later", "cus_b", created_at=ts(30))]
    )
    assert [m.message_id for m in ledger_store.pending_outbox("receipts", ts(1), 10)] == ["now"]
    assert [m.message_id for m in ledger_store.pending_outbox("receipts", ts(30), 10)] == [
        "now",
        "later",
    ]


def test_outbox_delivered_leaves_the_backlog(ledger_store: LedgerStore) -> None:
    ledger_store.enqueue_outbox([outbox_message(f"m{i}", "cus_a") for i in range(3)])
    ledger_store.outbox_delivered(["m0", "m1"])
    ledger_store.outbox_delivered(["m0"])  # at-least-once: twice is fine
    assert [m.message_id for m in ledger_store.pending_outbox("receipts", ts(1), 10)] == ["m2"]
    assert ledger_store.outbox_backlog() == {"receipts": 1}
    ledger_store.outbox_delivered(["m2"])
    assert ledger_store.outbox_backlog().get("receipts", 0) == 0


def test_outbox_oldest_is_the_oldest_undelivered_message_per_topic(
    ledger_store: LedgerStore,
) -> None:
    assert ledger_store.outbox_oldest() == {}
    ledger_store.enqueue_outbox(
        [
            outbox_message("m1", "cus_a", created_at=ts(5)),
            # Committed after m1 but created earlier (another writer's clock).
            outbox_message("m2", "cus_b", created_at=ts(2)),
            outbox_message("m3", "cus_a", created_at=ts(9)),
            outbox_message("e1", "cus_a", topic="entitlements", created_at=ts(7)),
        ]
    )
    # A postponed message is still undelivered: it still counts.
    ledger_store.outbox_retry_later("m2", "sink down", next_attempt_at=ts(60))
    assert ledger_store.outbox_oldest() == {"receipts": ts(2), "entitlements": ts(7)}
    ledger_store.outbox_delivered(["m2", "e1"])
    assert ledger_store.outbox_oldest() == {"receipts": ts(5)}


def test_outbox_retry_later_postpones_and_keeps_key_order(ledger_store: LedgerStore) -> None:
    ledger_store.enqueue_outbox(
        [
            outbox_message("a1", "cus_a"),
            outbox_message("b1", "cus_b"),
            outbox_message("a2", "cus_a"),
        ]
    )
    ledger_store.outbox_retry_later("a1", "pubsub timeout", next_attempt_at=ts(30))

    # a2 must not overtake a1: only cus_b's message is due.
    assert [m.message_id for m in ledger_store.pending_outbox("receipts", ts(1), 10)] == ["b1"]
    due = ledger_store.pending_outbox("receipts", ts(30), 10)
    assert [m.message_id for m in due] == ["a1", "b1", "a2"]
    assert (due[0].attempts, due[0].last_error) == (1, "pubsub timeout")
    assert ledger_store.outbox_backlog() == {"receipts": 3}
