"""Contract of the WebhookStore port: a customer's endpoints and secrets,
alert thresholds, and threshold events committed with their receipt, at
most one per (entitlement, period, threshold), listed newest first."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ledger import ChainConflict, LedgerStore, NotFound
from ledger.webhook_store import (
    EVENT_DELIVERED,
    DeliveryAttempt,
    OutboundEvent,
    TooManyEndpoints,
    WebhookEndpoint,
)
from tests.contract._chain import T0, Chain, customer, entitlement, ts


def _endpoint(endpoint_id: str, customer_id: str = "cus_a") -> WebhookEndpoint:
    return WebhookEndpoint(endpoint_id, customer_id, "https://example.com/h",
                           "whsec_" + endpoint_id, T0)


def _event(event_id: str, pct: int, period: str = T0) -> OutboundEvent:
    return OutboundEvent(event_id, "cus_a", "entitlement.usage_threshold.reached", T0,
                         b'{"id":"' + event_id.encode() + b'"}', "usage", period, pct)


def _store(webhook_store: Any) -> Any:
    webhook_store.create_customer(customer("cus_a"))
    webhook_store.put_entitlement(entitlement("cus_a"))
    return webhook_store


def _commit(store: LedgerStore, chain: Chain, *events: OutboundEvent) -> None:
    write = chain.next()
    store.commit_batch([dataclasses.replace(write, events=events)], [])


def test_endpoints_are_their_customers_and_bounded(webhook_store: Any) -> None:
    webhook_store.create_webhook_endpoint(_endpoint("we_1"), 2)
    webhook_store.create_webhook_endpoint(_endpoint("we_2"), 2)
    with pytest.raises(TooManyEndpoints):
        webhook_store.create_webhook_endpoint(_endpoint("we_3"), 2)
    webhook_store.create_webhook_endpoint(_endpoint("we_4", "cus_b"), 2)
    assert [e.endpoint_id for e in webhook_store.list_webhook_endpoints("cus_a")] == [
        "we_1", "we_2"]
    with pytest.raises(NotFound):  # another customer's
        webhook_store.delete_webhook_endpoint("cus_b", "we_1")
    webhook_store.delete_webhook_endpoint("cus_a", "we_1")
    assert [e.endpoint_id for e in webhook_store.list_webhook_endpoints("cus_a")] == ["we_2"]


def test_a_rotation_keeps_the_old_secret_until_it_expires(webhook_store: Any) -> None:
    webhook_store.create_webhook_endpoint(_endpoint("we_1"), 16)
    rotated = webhook_store.rotate_webhook_secret("cus_a", "we_1", "whsec_new", ts(60))
    assert (rotated.secret, rotated.previous_secret) == ("whsec_new", "whsec_we_1")
    assert rotated.signing_secrets(ts(59)) == ("whsec_new", "whsec_we_1")
    assert rotated.signing_secrets(ts(60)) == ("whsec_new",)
    with pytest.raises(NotFound):
        webhook_store.rotate_webhook_secret("cus_b", "we_1", "whsec_x", ts(60))


def test_thresholds_are_set_per_entitlement(webhook_store: Any) -> None:
    assert webhook_store.alert_thresholds("cus_a") == {}
    webhook_store.set_alert_thresholds("cus_a", "usage", (10, 90), T0)
    webhook_store.set_alert_thresholds("cus_a", "usage", (25,), ts(1))
    assert webhook_store.alert_thresholds("cus_a") == {"usage": (25,)}


def test_one_event_per_threshold_and_period_with_its_receipt(webhook_store: Any) -> None:
    store = _store(webhook_store)
    chain = Chain("cus_a")
    _commit(store, chain, _event("evt_1", 50))
    assert store.fired_thresholds("cus_a") == {("usage", T0, 50)}
    # The same threshold again: the whole commit is refused, its receipt too.
    with pytest.raises(ChainConflict) as raised:
        _commit(store, chain, _event("evt_2", 50))
    assert raised.value.customer_ids == {"cus_a"}
    chain.rewind(1)
    assert store.get_account_head("cus_a")[0] == 1
    assert store.get_outbound_event("evt_2") is None
    # Another period (or threshold) is another event.
    _commit(store, chain, _event("evt_3", 50, period=ts(3600)))
    assert store.fired_thresholds("cus_a") == {("usage", T0, 50), ("usage", ts(3600), 50)}


def test_events_list_newest_first_and_record_their_delivery(webhook_store: Any) -> None:
    store = _store(webhook_store)
    chain = Chain("cus_a")
    for index, pct in enumerate((10, 20, 30)):
        _commit(store, chain, _event(f"evt_{index}", pct))
    first = store.list_outbound_events("cus_a", starting_after=None, ending_before=None, limit=2)
    assert [e.event_id for e in first.events] == ["evt_2", "evt_1"] and first.has_more
    rest = store.list_outbound_events("cus_a", starting_after="evt_1", ending_before=None,
                                      limit=2)
    assert [e.event_id for e in rest.events] == ["evt_0"] and not rest.has_more
    back = store.list_outbound_events("cus_a", starting_after=None, ending_before="evt_0",
                                      limit=1)
    assert [e.event_id for e in back.events] == ["evt_1"] and back.has_more
    with pytest.raises(NotFound):
        store.list_outbound_events("cus_b", starting_after="evt_1", ending_before=None,
                                   limit=2)
    store.record_delivery("evt_0", DeliveryAttempt(ts(5), "pending", (), "we_1: HTTP 500"))
    store.record_delivery("evt_0", DeliveryAttempt(ts(6), EVENT_DELIVERED, ("we_1",)))
    delivered = store.get_outbound_event("evt_0")
    assert (delivered.attempts, delivered.status, delivered.delivered_at) == (
        2, EVENT_DELIVERED, ts(6))
    assert delivered.delivered_to == ("we_1",)
    assert delivered.body == b'{"id":"evt_0"}'


def test_a_commit_without_events_writes_none(webhook_store: Any) -> None:
    store = _store(webhook_store)
    store.commit_batch([Chain("cus_a").next()], [])
    assert store.fired_thresholds("cus_a") == set()
    assert store.list_outbound_events("cus_a", starting_after=None, ending_before=None,
                                      limit=10).events == []
