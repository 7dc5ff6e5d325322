"""Prometheus metrics of the actor layer, on an injectable registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ActorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commit_batch_receipts = Histogram(
            "billing_commit_batch_receipts",
            "Receipts per ledger transaction (group commit).",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.commit_latency_s = Histogram(
            "billing_commit_latency_seconds",
            "Time to commit one batch durably.",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.commit_failures = Counter(
            "billing_commit_failures_total",
            "Batches or receipts that failed to commit, by reason.",
            ["reason"],
            registry=registry,
        )
        self.receipts_committed = Counter(
            "billing_receipts_committed_total", "Receipts made durable.", registry=registry
        )
        self.replays = Counter(
            "billing_idempotent_replays_total",
            "Charges answered with an earlier receipt (same idempotency key).",
            registry=registry,
        )
        self.live_accounts = Gauge(
            "billing_live_account_actors", "Account actors currently running.", registry=registry
        )
        self.passivations = Counter(
            "billing_account_passivations_total",
            "Idle account actors stopped to free their memory.",
            registry=registry,
        )
        self.runnable_accounts = Gauge(
            "billing_account_actors_runnable",
            "Account actors with messages, waiting for one of the scheduler's threads.",
            registry=registry,
        )
        self.signer_queue_depth = Gauge(
            "billing_signer_queue_depth", "Receipts waiting for a signature.", registry=registry
        )
        self.writer_queue_depth = Gauge(
            "billing_writer_queue_depth", "Receipts waiting to be committed.", registry=registry
        )
