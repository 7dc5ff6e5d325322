"""Prometheus metrics of the Stripe integration; the registry is injected so
tests (and several apps in one process) never collide on the global one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["StripeMetrics"]


class StripeMetrics:
    """One holder shared by the webhook route, StripeSync and AdminApiRelay."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.webhook_events = Counter(
            "billing_stripe_webhook_events",
            "Stripe webhook deliveries by event type and result.",
            ["type", "result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "billing_stripe_reconcile_seconds",
            "Time to reconcile one customer from Stripe's current state.",
            ["result"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.admin_api_failures = Counter(
            "billing_admin_api_failures",
            "Failed Admin API deliveries (each is retried with backoff).",
            ["reason"],
            registry=self.registry,
        )
        self.admin_api_delivered = Counter(
            "billing_admin_api_delivered",
            "Entitlement updates delivered to the Admin API.",
            registry=self.registry,
        )
        self.disputes = Counter(
            "billing_stripe_disputes",
            "Stripe disputes by outcome: submitted (evidence taken), ignored (not our "
            "invoice or customer, or no longer open), refused (Stripe refused the evidence: "
            "answer it by hand), retry_later.",
            ["result"],
            registry=self.registry,
        )
