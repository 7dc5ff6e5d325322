"""Threshold alerts: an event when an entitlement's usage reaches a share of
its quota (by default 50%, 80% and 100%), once per billing period each.

Decided in the account actor, the customer's only writer: it knows the
usage before and after each charge, so concurrent charges cannot both cross
one threshold. What fired is kept by the store (the event rows, committed
with the receipt that crossed), loaded with the account's state, so a
restart or a reload does not fire again; the store also refuses a second
event for one (entitlement, period, threshold).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from actors.ids import SecretIdMinter
from ledger import Entitlement, OutboxMessage
from ledger.clock import parse_rfc3339
from ledger.money import format_amount
from ledger.webhook_store import OutboundEvent, WebhookStore

__all__ = [
    "DEFAULT_THRESHOLDS_PCT",
    "EVENT_THRESHOLD_REACHED",
    "TOPIC_WEBHOOKS",
    "AlertState",
    "ThresholdAlerts",
    "events_outbox",
]

# The outbox topic of customer events (delivered by actors.delivery.webhooks).
TOPIC_WEBHOOKS: Final = "customer.webhook"
EVENT_THRESHOLD_REACHED: Final = "entitlement.usage_threshold.reached"
DEFAULT_THRESHOLDS_PCT: Final = (50, 80, 100)

_event_ids = SecretIdMinter("evt_")


@dataclass(slots=True)
class AlertState:
    """One customer's thresholds and what already fired (the actor's copy)."""

    default_pct: tuple[int, ...]
    by_entitlement: dict[str, tuple[int, ...]]
    fired: set[tuple[str, str, int]] = field(default_factory=set)

    def crossed(self, entitlement: Entitlement, used_before: int, used_after: int,
                currency: str, receipt_id: str, recorded_at: str) -> tuple[OutboundEvent, ...]:
        """The events a charge from `used_before` to `used_after` sets off."""
        quota = entitlement.quota_minor
        if quota is None or quota <= 0 or used_after <= used_before:
            return ()
        period = entitlement.period_start or ""
        thresholds = self.by_entitlement.get(entitlement.entitlement_id, self.default_pct)
        events = []
        for pct in sorted(thresholds):
            # Integer arithmetic: no float on a money path.
            reached_before = used_before * 100 >= pct * quota
            if reached_before or used_after * 100 < pct * quota:
                continue
            if (entitlement.entitlement_id, period, pct) in self.fired:
                continue
            events.append(_threshold_event(entitlement, pct, used_after, currency,
                                           receipt_id, recorded_at))
        return tuple(events)

    def mark(self, events: Iterable[OutboundEvent]) -> None:
        """The events are on their way to the store with their receipt."""
        for event in events:
            self.fired.add((event.entitlement_id, event.period_start, event.threshold_pct))


def _threshold_event(entitlement: Entitlement, pct: int, used_minor: int, currency: str,
                     receipt_id: str, recorded_at: str) -> OutboundEvent:
    event_id = _event_ids()
    quota = entitlement.quota_minor or 0
    payload: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "type": EVENT_THRESHOLD_REACHED,
        "created": int(parse_rfc3339(recorded_at).timestamp()),
        "data": {"object": {
            "object": "usage_threshold",
            "customer_id": entitlement.customer_id,
            "entitlement_id": entitlement.entitlement_id,
            "threshold_pct": pct,
            "quota": format_amount(quota, currency),
            "quota_minor": quota,
            "used": format_amount(used_minor, currency),
            "used_minor": used_minor,
            "currency": currency,
            "period_start": entitlement.period_start,
            "period_end": entitlement.period_end,
            "receipt_id": receipt_id,
        }},
    }
    return OutboundEvent(
        event_id=event_id,
        customer_id=entitlement.customer_id,
        event_type=EVENT_THRESHOLD_REACHED,
        created_at=recorded_at,
        body=orjson.dumps(payload),
        entitlement_id=entitlement.entitlement_id,
        period_start=entitlement.period_start or "",
        threshold_pct=pct,
    )


class ThresholdAlerts:
    """What account actors use: each loads its customer's AlertState."""

    def __init__(self, store: WebhookStore, default_pct: tuple[int, ...]) -> None:
        self._store = store
        self._default_pct = default_pct

    def load(self, customer_id: str) -> AlertState:
        return AlertState(
            default_pct=self._default_pct,
            by_entitlement=self._store.alert_thresholds(customer_id),
            fired=self._store.fired_thresholds(customer_id),
        )


def events_outbox(events: Sequence[OutboundEvent]) -> list[OutboxMessage]:
    """The outbox messages committed with the events (one each, by event id)."""
    return [
        OutboxMessage(
            message_id=event.event_id,
            topic=TOPIC_WEBHOOKS,
            ordering_key=event.customer_id,
            payload=event.event_id.encode(),
            created_at=event.created_at,
        )
        for event in events
    ]
