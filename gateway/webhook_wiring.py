"""Wires customer webhooks: threshold alerts for the account actors, and the
outbox's delivery of events to the customers' endpoints. Only on a store
that keeps the events (ledger.webhook_store); elsewhere said once, loudly."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry

from actors.delivery.outbox import DeliverMessages
from actors.delivery.threshold_alerts import TOPIC_WEBHOOKS, ThresholdAlerts
from actors.delivery.webhooks import WebhookMetrics, WebhookSink
from gateway.settings import Settings
from ledger import LedgerStore
from ledger.webhook_store import WebhookStore

log = structlog.get_logger(__name__)


@dataclass
class WebhookWiring:
    alerts: ThresholdAlerts | None = None
    # The outbox relay's message sinks, by topic.
    message_sinks: dict[str, DeliverMessages] = field(default_factory=dict)


def wire_webhooks(settings: Settings, store: LedgerStore,
                  registry: CollectorRegistry) -> WebhookWiring:
    if not isinstance(store, WebhookStore):
        log.warning("billing.webhooks_unavailable", reason="the store keeps no webhook tables")
        return WebhookWiring()
    sink = WebhookSink(store=store, metrics=WebhookMetrics(registry),
                       timeout_s=settings.webhook_timeout_ms / 1000.0)
    return WebhookWiring(
        alerts=ThresholdAlerts(store, settings.alert_thresholds_pct),
        message_sinks={TOPIC_WEBHOOKS: sink},
    )
