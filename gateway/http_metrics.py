"""Prometheus metrics of the HTTP layer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "billing_http_requests_total",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.request_duration_s = Histogram(
            "billing_http_request_duration_seconds",
            "From a request's arrival in the gateway to its answer, by route template, "
            "method and status.",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.access_log_dropped = Counter(
            "billing_access_log_dropped_total",
            "Access log lines not written: over BILLING_ACCESS_LOG_PER_S_MAX a second.",
            registry=registry,
        )
        self.receipt_latency_s = Histogram(
            "billing_receipt_latency_seconds",
            "From admission to a durable receipt (or refusal) for one charge.",
            buckets=_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.admission_inflight = Gauge(
            "billing_admission_inflight",
            "Charges admitted and not yet answered.",
            registry=registry,
        )
        self.admission_bound = Gauge(
            "billing_admission_bound",
            "In flight past which charges are shed now: the latency bound, lower while"
            " the event loop lags.",
            registry=registry,
        )
        self.rejected_overload = Counter(
            "billing_admission_rejected_total",
            "Charges answered 429 because an admission bound was reached.",
            registry=registry,
        )
        self.loop_lag_s = Gauge(
            "billing_event_loop_lag_seconds",
            "How late the event loop runs timers (smoothed); admission sheds above its bound.",
            registry=registry,
        )
        self.ready = Gauge(
            "billing_ready", "1 when the service accepts charges.", registry=registry
        )
        self.integrity_halted = Gauge(
            "billing_integrity_halted",
            "1 while an integrity incident recorded in the ledger is open (charges "
            "refused on every gateway of the store until an operator clears it).",
            registry=registry,
        )
