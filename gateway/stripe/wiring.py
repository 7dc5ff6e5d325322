"""Wires the Stripe pieces into the tree and the app: the StripeSync and
Admin API relay children, and the web-app routes. Stripe stays optional: with
no secret key the routes answer 503 `stripe_not_configured`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from actors.delivery.admin_api import AdminApiClient, AdminApiRelay
from actors.stripe._metrics import StripeMetrics
from actors.stripe._poll import Doorbell
from actors.stripe.disputes import DisputeResponder, EvidenceOf
from actors.stripe.sync import Reconciler, StripeSync
from actors.stripe.usage import (
    TOPIC_STRIPE_USAGE,
    StripeUsageSink,
    UsageAudit,
    UsageAuditor,
    UsageMetrics,
)
from gateway.stripe.routes import StripeDeps, add_stripe_routes
from gateway.stripe.settings import StripeSettings, build_stripe_client
from ledger import DisputeSubmissions, LedgerStore, StoredReceipt
from supervisor import ChildSpec

# A Stripe child finishes the API call under way before it stops.
STRIPE_SHUTDOWN_TIMEOUT_MS = 10_000


@dataclass
class StripeWiring:
    child_specs: list[ChildSpec]
    add_routes: Callable[[web.Application], None]


def wire_stripe(
    settings: StripeSettings,
    store: LedgerStore,
    registry: CollectorRegistry,
    on_entitlement_changed: Callable[[str], None],
    sinks: dict[str, Callable[[Sequence[StoredReceipt]], None]] | None = None,
    disputes: tuple[DisputeSubmissions, EvidenceOf] | None = None,
) -> StripeWiring:
    """`sinks` (the outbox's, by topic) gets the usage reporter when Stripe is
    on; with `disputes` (where answers are recorded, and the evidence bundle
    of a receipt) StripeSync answers Stripe disputes too."""
    client = build_stripe_client(settings)
    metrics = StripeMetrics(registry)
    sync_bell = Doorbell()  # outlives restarts of the sync actor
    specs: list[ChildSpec] = []
    reconciler: Reconciler | None = None
    if client is not None:
        reconciler = Reconciler(
            store=store,
            stripe_client=client,
            plans=settings.plans,
            entitlement_id=settings.entitlement_id,
            on_entitlement_changed=on_entitlement_changed,
            metrics=metrics,
        )
        specs.append(_sync_spec(store, client, reconciler, metrics, sync_bell, disputes))
        specs += _usage_specs(settings, store, client, registry, sinks)
    if settings.admin_api_enabled:
        specs.append(_admin_api_spec(settings, store, metrics))
    deps = StripeDeps(
        settings=settings,
        store=store,
        stripe=client,
        wake_sync=sync_bell.ring,
        metrics=metrics,
        reconciler=reconciler,
        on_entitlement_changed=on_entitlement_changed,
    )
    return StripeWiring(child_specs=specs, add_routes=lambda app: add_stripe_routes(app, deps))


def _sync_spec(
    store: LedgerStore,
    client: Any,
    reconciler: Reconciler,
    metrics: StripeMetrics,
    doorbell: Doorbell,
    disputes: tuple[DisputeSubmissions, EvidenceOf] | None,
) -> ChildSpec:
    """StripeSync: turns recorded Stripe events into entitlements; answers
    disputes when `disputes` says where answers go and what the evidence is."""
    responder = None
    if disputes is not None:
        submissions, evidence_of = disputes
        responder = DisputeResponder(store=store, submissions=submissions, client=client,
                                     evidence_of=evidence_of)
    return ChildSpec(
        id="stripe_sync",
        start=lambda link: StripeSync.start(
            link, store=store, reconciler=reconciler, metrics=metrics,
            doorbell=doorbell, disputes=responder,
        ),
        shutdown_timeout_ms=STRIPE_SHUTDOWN_TIMEOUT_MS,
    )


def _admin_api_spec(
    settings: StripeSettings, store: LedgerStore, metrics: StripeMetrics
) -> ChildSpec:
    """The Admin API relay: entitlement changes delivered to the Admin API."""
    doorbell = Doorbell()
    url, token = settings.admin_api_url or "", settings.admin_api_token or ""
    return ChildSpec(
        id="admin_api",
        start=lambda link: AdminApiRelay.start(
            link,
            store=store,
            client=AdminApiClient(url, token),
            metrics=metrics,
            doorbell=doorbell,
        ),
        shutdown_timeout_ms=STRIPE_SHUTDOWN_TIMEOUT_MS,
    )


def _usage_specs(
    settings: StripeSettings,
    store: LedgerStore,
    client: Any,
    registry: CollectorRegistry,
    sinks: dict[str, Callable[[Sequence[StoredReceipt]], None]] | None,
) -> list[ChildSpec]:
    """Usage reporting (an outbox sink) and its audit, when any plan is metered."""
    if sinks is None or not any(p.meter_event_name for p in settings.plans.values()):
        return []
    metrics = UsageMetrics(registry)
    sinks[TOPIC_STRIPE_USAGE] = StripeUsageSink(
        store=store, client=client, plans=settings.plans, metrics=metrics
    )
    auditor = UsageAuditor(store=store, client=client, plans=settings.plans,
                           entitlement_id=settings.entitlement_id, metrics=metrics)
    return [
        ChildSpec(
            id="stripe_usage_audit",
            start=lambda link: UsageAudit.start(
                link, auditor=auditor, interval_s=settings.usage_audit_interval_s
            ),
            shutdown_timeout_ms=STRIPE_SHUTDOWN_TIMEOUT_MS,
        )
    ]
