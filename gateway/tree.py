"""The supervision tree as data (OTP's `init/1`): `billing_tree` returns the
root's flags and child specs from parts already built, and starts nothing.
Children start in this order and stop in reverse; `rest_for_one` restarts a
failed child and every child after it, so what depends on the ledger writer
(accounts, relays, reconciler) comes after it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from actors.accounts import LiveAccounts
from actors.delivery.archive_feed import ArchiveFeed
from actors.delivery.outbox import OutboxMetrics, OutboxRelay
from actors.integrity.halts import HaltRecorder, IntegrityFailure
from actors.integrity.reconciler import AuditSources, Reconciler, ReconcilerMetrics
from actors.metrics import ActorMetrics
from actors.pipeline import Pipeline
from actors.receipt_log import LogAppender
from actors.signer import SignerPool
from actors.writer import LedgerWriter
from crypto import KeyRing, Signer
from gateway.settings import Settings
from gateway.storage import Adapters
from gateway.webhook_wiring import WebhookWiring
from ledger import StoredReceipt, limits
from ledger.log_proofs import LogProofs
from supervisor import ChildSpec, SupervisorFlags

log = structlog.get_logger(__name__)

# More than 5 restarts of the root's children in 10 s: the tree stops and
# escalates (readiness then refuses charges, saying why).
ROOT_FLAGS = SupervisorFlags(strategy="rest_for_one", intensity=5, period_s=10.0)
# The writer flushes its last batch; a signer finishes the receipts it holds.
STAGE_SHUTDOWN_TIMEOUT_MS = 10_000
# A relay or follower finishes the delivery under way (one network call).
RELAY_SHUTDOWN_TIMEOUT_MS = 15_000
# The accounts supervisor stops every live actor (up to
# limits.account_actors_live_max), each within ACCOUNT_SHUTDOWN_TIMEOUT_MS.
ACCOUNTS_SHUTDOWN_TIMEOUT_MS = 60_000
ACCOUNT_SHUTDOWN_TIMEOUT_MS = 5_000
# One customer's actor crashing must not take the others down: the accounts
# supervisor gives up only past this many restarts a second.
ACCOUNT_RESTARTS_PER_PERIOD = 1_000
ACCOUNT_RESTART_PERIOD_S = 1.0


@dataclass(frozen=True)
class ChargePath:
    """The charge path's shared parts: built before the tree, used by the
    children it starts and by the gateway."""

    pipeline: Pipeline
    receipt_log: LogAppender
    log_proofs: LogProofs
    live_accounts: LiveAccounts
    webhooks: WebhookWiring
    actor_metrics: ActorMetrics
    outbox_metrics: OutboxMetrics
    reconciler_metrics: ReconcilerMetrics
    # Rung after each durable commit: the outbox relay and the archive feed.
    outbox_wake: threading.Event
    archive_wake: threading.Event


@dataclass(frozen=True)
class TreeParts:
    """What the tree's children are started with, built before the tree."""

    settings: Settings
    adapters: Adapters
    key: Signer
    key_ring: KeyRing
    halts: HaltRecorder
    registry: CollectorRegistry
    charge: ChargePath
    # Receipt mode: sign in child processes (else threads).
    signer_processes: bool
    # The Stripe and Admin API children (gateway.stripe.wiring), last.
    stripe_specs: Sequence[ChildSpec] = ()


@dataclass(frozen=True)
class TreeSpec:
    flags: SupervisorFlags
    children: list[ChildSpec]


def billing_tree(parts: TreeParts) -> TreeSpec:
    """The root supervisor's flags and children, in start order."""
    signs_receipts = parts.settings.receipt_signing == "receipt"
    return TreeSpec(
        flags=ROOT_FLAGS,
        children=[
            _writer_spec(parts),
            *(_signer_specs(parts) if signs_receipts else []),
            _accounts_spec(parts),
            _outbox_spec(parts),
            *_archive_feed_specs(parts),
            _reconciler_spec(parts),
            *parts.stripe_specs,
        ],
    )


def _stage_queue_max(settings: Settings) -> int:
    return limits.stage_queue_max(settings.admission_queue_max)


def _writer_spec(parts: TreeParts) -> ChildSpec:
    settings, adapters = parts.settings, parts.adapters

    def on_log_damaged(detail: str) -> None:
        parts.halts.record(IntegrityFailure("log_damaged", detail), source="ledger_writer")

    return ChildSpec(
        id="store",
        start=lambda link: LedgerWriter.start(
            link,
            store=adapters.store,
            receipt_log=parts.charge.receipt_log,
            pipeline=parts.charge.pipeline,
            metrics=parts.charge.actor_metrics,
            outbox_for=adapters.outbox_for,
            checkpoint_outbox_for=adapters.checkpoint_outbox_for,
            batch_max=settings.commit_batch_receipts_max,
            queue_max=_stage_queue_max(settings),
            linger_ms=settings.commit_linger_ms,
            on_committed=_after_commit(parts),
            on_log_damaged=on_log_damaged,
        ),
        shutdown_timeout_ms=STAGE_SHUTDOWN_TIMEOUT_MS,
    )


def _after_commit(parts: TreeParts) -> Callable[[Sequence[StoredReceipt]], None]:
    publishers = parts.adapters.after_commit

    def after_commit(receipts: Sequence[StoredReceipt]) -> None:
        for publish in publishers:
            try:
                publish(receipts)
            except Exception:  # an in-process subscriber must not stop the writer
                log.exception("billing.after_commit_failed")
        parts.charge.outbox_wake.set()
        parts.charge.archive_wake.set()

    return after_commit


def _signer_specs(parts: TreeParts) -> list[ChildSpec]:
    """The per-receipt signer stage: only in `receipt` signing mode."""
    settings = parts.settings
    return [
        ChildSpec(
            id="signer",
            start=lambda link: SignerPool.start(
                link,
                key=parts.key,
                pipeline=parts.charge.pipeline,
                workers=settings.effective_signer_workers,
                queue_max=_stage_queue_max(settings),
                metrics=parts.charge.actor_metrics,
                processes=parts.signer_processes,
            ),
            shutdown_timeout_ms=STAGE_SHUTDOWN_TIMEOUT_MS,
        )
    ]


def _accounts_spec(parts: TreeParts) -> ChildSpec:
    """Every customer's actor, started on demand by the account directory."""
    return ChildSpec(
        id="accounts",
        start=lambda link: parts.charge.live_accounts.start(
            link,
            child_restart="transient",
            child_shutdown_timeout_ms=ACCOUNT_SHUTDOWN_TIMEOUT_MS,
            intensity=ACCOUNT_RESTARTS_PER_PERIOD,
            period_s=ACCOUNT_RESTART_PERIOD_S,
            registry=parts.registry,
        ),
        shutdown_timeout_ms=ACCOUNTS_SHUTDOWN_TIMEOUT_MS,
        type="supervisor",
    )


def _outbox_spec(parts: TreeParts) -> ChildSpec:
    adapters = parts.adapters
    return ChildSpec(
        id="outbox",
        start=lambda link: OutboxRelay.start(
            link,
            store=adapters.store,
            sinks=adapters.sinks,
            checkpoint_sinks=adapters.checkpoint_sinks,
            metrics=parts.charge.outbox_metrics,
            wake=parts.charge.outbox_wake,
            message_sinks=parts.charge.webhooks.message_sinks,
        ),
        shutdown_timeout_ms=RELAY_SHUTDOWN_TIMEOUT_MS,
    )


def _archive_feed_specs(parts: TreeParts) -> list[ChildSpec]:
    """The archive's follower of the ledger, when the archive takes it (embedded)."""
    adapters = parts.adapters
    if adapters.archive_feed is None:
        return []
    feed, cursor = adapters.archive_feed
    return [
        ChildSpec(
            id="archive",
            start=lambda link: ArchiveFeed.start(
                link,
                feed=feed,
                archive=adapters.archive,
                cursor=cursor,
                metrics=parts.charge.outbox_metrics,
                wake=parts.charge.archive_wake,
                checkpoints=adapters.checkpoint_feed,
            ),
            shutdown_timeout_ms=RELAY_SHUTDOWN_TIMEOUT_MS,
        )
    ]


def _reconciler_spec(parts: TreeParts) -> ChildSpec:
    adapters = parts.adapters

    def on_integrity_failure(failure: IntegrityFailure) -> None:
        # Repeated each round while the damage is there: one open incident.
        parts.halts.record(failure, source="reconciler")

    return ChildSpec(
        id="reconciler",
        start=lambda link: Reconciler.start(
            link,
            store=adapters.store,
            read_model=adapters.read_model,
            archive=adapters.archive,
            jwks=parts.key_ring.jwks,
            interval_s=parts.settings.reconcile_interval_s,
            metrics=parts.charge.reconciler_metrics,
            on_integrity_failure=on_integrity_failure,
            log_proofs=parts.charge.log_proofs,
            # The background pass hashes in a process of its own, beside this one.
            audit_sources=None if adapters.store_url is None else AuditSources(
                adapters.store_url, adapters.archive_location, adapters.read_model_url
            ),
        ),
        shutdown_timeout_ms=RELAY_SHUTDOWN_TIMEOUT_MS,
    )
