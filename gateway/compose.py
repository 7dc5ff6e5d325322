"""The composition root: builds every part from the frozen Settings, starts
the supervision tree, then the HTTP server; stops them in reverse.

Startup and shutdown are explicit phases (as in aiohttp's web_runner):
SIGTERM => stop accepting, drain in-flight requests, stop the tree (which
flushes the ledger writer), close the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    ProcessCollector,
    disable_created_metrics,
)

from actors.account import AccountDeps
from actors.accounts import AccountDirectory
from actors.archive_feed import ArchiveFeed
from actors.evidence import build_evidence
from actors.halts import HaltRecorder, IntegrityFailure
from actors.metrics import ActorMetrics
from actors.outbox import OutboxMetrics, OutboxRelay
from actors.pipeline import Pipeline
from actors.receipt_log import LogAppender
from actors.reconciler import Reconciler, ReconcilerMetrics
from actors.signer import SignerPool
from actors.startup_audit import AccountHeadAudit, audit_log_at_startup
from actors.writer import LedgerWriter
from crypto import (
    KMS_ENDPOINT,
    GoogleAccessToken,
    KeyRing,
    KmsSigningKey,
    NoteKey,
    Signer,
    SigningKey,
    TrustedKeys,
    load_or_create_dev_key,
    load_or_create_note_key,
    load_private_key_pem,
)
from gateway.admission import Admission, watch_loop_lag
from gateway.app import build_app
from gateway.auth import ApiKeyCache
from gateway.http_metrics import HttpMetrics
from gateway.services import Readiness, Services
from gateway.settings import Settings
from gateway.storage import Adapters, open_adapters
from gateway.stripe_settings import StripeSettings
from gateway.stripe_settings import load as load_stripe_settings
from gateway.stripe_wiring import wire_stripe
from gateway.thread_cpu import ThreadCpuCollector
from gateway.web import WebSettings, add_web_routes, load_web_settings
from gateway.webhook_wiring import wire_webhooks
from ledger import (
    ChargeRequests,
    HaltIncident,
    LedgerError,
    SigningKeyRecord,
    StoredReceipt,
    limits,
)
from ledger.clock import utc_now_rfc3339
from ledger.log_proofs import LogProofs
from supervisor import ActorScheduler, ChildSpec, DynamicSupervisor, Supervisor, SupervisorFlags

log = structlog.get_logger(__name__)

ADMIN_TOKEN_FILE = "admin-token"
KEYS_DIR = "keys"
NOTE_KEY_FILE = "receipt-log-note-ed25519.key"


def write_secret_file(path: Path, content: str) -> None:
    """Create a file only its owner can read, atomically (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def resolve_admin_token(settings: Settings) -> tuple[str, bool]:
    """(token, generated_now): from settings, else the data dir, else a new one."""
    if settings.admin_token:
        return settings.admin_token, False
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip(), False
    token = "adm_" + secrets.token_urlsafe(24)
    write_secret_file(path, token + "\n")
    return token, True


def load_note_key(settings: Settings) -> NoteKey:
    """The receipt log's Ed25519 key for C2SP signed notes (a development key
    in the data dir unless BILLING_LOG_NOTE_KEY_FILE names one)."""
    path = settings.log_note_key_path or settings.data_dir / KEYS_DIR / NOTE_KEY_FILE
    return load_or_create_note_key(path, settings.log_origin)


def load_signing_key(settings: Settings) -> Signer:
    """Cloud KMS when BILLING_SIGNING_KEY names a key version, else the PEM
    file, else a development key in the data dir."""
    if settings.signing_key_uri is not None:
        endpoint = settings.kms_endpoint or KMS_ENDPOINT
        # Settings allow http:// only on loopback: a local fake, never given a token.
        token = None if endpoint.startswith("http://") else GoogleAccessToken()
        return KmsSigningKey.from_uri(settings.signing_key_uri, endpoint, token)
    if settings.signing_key_path is not None:
        return load_private_key_pem(settings.signing_key_path)
    return load_or_create_dev_key(settings.data_dir / KEYS_DIR, settings.signing_alg)


def build_key_ring(adapters: Adapters, key: Signer) -> KeyRing:
    """The active key plus every public key that ever signed (kept forever)."""
    adapters.store.record_signing_key(
        SigningKeyRecord(
            kid=key.kid,
            alg=key.alg,
            public_jwk_json=orjson.dumps(key.public_jwk()).decode(),
            created_at=utc_now_rfc3339(),
        )
    )
    others = [
        orjson.loads(record.public_jwk_json)
        for record in adapters.store.signing_keys()
        if record.kid != key.kid
    ]
    return KeyRing(active=key, others=others)


@dataclass
class Runtime:
    """Everything the composition root started, for an orderly stop."""

    settings: Settings
    adapters: Adapters
    root: Supervisor
    services: Services
    admin_token: str
    admin_token_generated: bool
    account_scheduler: ActorScheduler
    account_audit: AccountHeadAudit
    app_hooks: list[Callable[[web.Application], None]] = field(default_factory=list)

    def make_app(self) -> web.Application:
        app = build_app(self.services)
        for hook in self.app_hooks:
            hook(app)
        app.cleanup_ctx.append(self._background_tasks)
        return app

    async def _background_tasks(self, app: web.Application) -> AsyncIterator[None]:
        """Periodic work tied to the app's life: readiness probe, passivation,
        event loop lag for admission."""
        tasks = [
            asyncio.create_task(_refresh_readiness_forever(self.services)),
            asyncio.create_task(_passivate_forever(self.services)),
            asyncio.create_task(watch_loop_lag(self.services.admission)),
            asyncio.create_task(_audit_accounts_in_background(self.services, self.account_audit)),
        ]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stop(self) -> None:
        stopped = self.root.stop(timeout_ms=int(self.settings.drain_timeout_s * 1000) + 20_000)
        if not stopped:
            log.error("runtime.tree_stop_timeout")
        self.account_scheduler.stop()
        self.services.executor.shutdown(wait=True, cancel_futures=True)
        self.services.key_ring.active.close()
        self.adapters.close()


def build_runtime(settings: Settings, environ: Mapping[str, str] | None = None) -> Runtime:
    """Open storage, load keys, start the supervision tree. Blocking.

    `environ` feeds the Stripe settings (secret files or variables); None
    leaves Stripe unconfigured."""
    # No `*_created` series: one more per counter and histogram child, which
    # Prometheus does not need (process-wide; here, not at import).
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
    stripe_settings = load_stripe_settings(settings.secrets_dir, environ or {})
    web_settings = load_web_settings(
        settings.secrets_dir, environ or {}, settings.data_dir, dev=settings.dev
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    admin_token, generated = resolve_admin_token(settings)
    settings_with_token = replace(settings, admin_token=admin_token)
    adapters = open_adapters(settings)
    key: Signer | None = None
    try:
        key = load_signing_key(settings)
        key_ring = build_key_ring(adapters, key)
        note_key = load_note_key(settings)
        return _start(
            settings_with_token, adapters, key, key_ring, note_key, generated, stripe_settings,
            web_settings,
        )
    except BaseException:
        if key is not None:
            key.close()
        adapters.close()
        raise


def _start(
    settings: Settings,
    adapters: Adapters,
    key: Signer,
    key_ring: KeyRing,
    note_key: NoteKey,
    admin_token_generated: bool,
    stripe_settings: StripeSettings,
    web_settings: WebSettings,
) -> Runtime:
    registry = CollectorRegistry()
    # Collector runs and the process's memory, CPU and open files, for SREs
    # (python_gc_*, process_*): see gateway.gc_tuning for why GC matters here.
    GCCollector(registry=registry)
    ProcessCollector(registry=registry)
    # ... and the CPU of each stage's threads and of the signing processes.
    registry.register(ThreadCpuCollector())
    actor_metrics = ActorMetrics(registry)
    signs_receipts = settings.receipt_signing == "receipt"
    pipeline = Pipeline(signs_receipts=signs_receipts)
    log_proofs = LogProofs(adapters.store)
    receipt_log = LogAppender(
        adapters.store,
        key=lambda: key_ring.active,
        origin=settings.log_origin,
        now_rfc3339=utc_now_rfc3339,
    )
    webhooks = wire_webhooks(settings, adapters.store, registry)
    deps = AccountDeps(
        store=adapters.store,
        pipeline=pipeline,
        metrics=actor_metrics,
        now_rfc3339=utc_now_rfc3339,
        activity={},
        scheduler=ActorScheduler(settings.effective_account_threads, "accounts"),
        payment_grace_s=float(stripe_settings.payment_grace_s),
        alerts=webhooks.alerts,
    )
    actor_metrics.runnable_accounts.set_function(deps.scheduler.runnable)
    readiness_box: list[Readiness] = []

    def on_halt_recorded(incident: HaltIncident) -> None:
        if readiness_box:
            readiness_box[0].halted(incident)

    halts = HaltRecorder(adapters.halts, utc_now_rfc3339, on_halt_recorded)
    account_audit = _audit_before_ready(adapters, key_ring, halts)

    def on_escalation(reason: str) -> None:
        log.critical("billing.escalated", reason=reason)
        if readiness_box:
            readiness_box[0].halted_reason = f"supervision tree stopped: {reason}"

    store = adapters.store
    directory_box: list[AccountDirectory] = []

    def reload_account(customer_id: str) -> None:
        if directory_box:
            directory_box[0].reload(customer_id)

    requests = store if isinstance(store, ChargeRequests) else None

    def evidence_of(receipt: StoredReceipt) -> bytes:
        return build_evidence(store, log_proofs, requests, key_ring, receipt, utc_now_rfc3339)

    stripe = wire_stripe(stripe_settings, store, registry, reload_account, adapters.sinks,
                         disputes=(adapters.disputes, evidence_of))
    outbox_metrics = OutboxMetrics(registry)
    outbox_wake = threading.Event()
    archive_wake = threading.Event()

    def after_commit(receipts: Sequence[StoredReceipt]) -> None:
        for publish in adapters.after_commit:
            try:
                publish(receipts)
            except Exception:  # an in-process subscriber must not stop the writer
                log.exception("billing.after_commit_failed")
        outbox_wake.set()
        archive_wake.set()

    reconciler_metrics = ReconcilerMetrics(registry)
    # Signer and writer queues are sized from admission, as limits.writer_queue_max.
    stage_queue_max = settings.admission_queue_max * 2

    def on_integrity_failure(failure: IntegrityFailure) -> None:
        # Repeated each round while the damage is there: one open incident.
        halts.record(failure, source="reconciler")

    def on_log_damaged(detail: str) -> None:
        halts.record(IntegrityFailure("log_damaged", detail), source="ledger_writer")

    children = [
        ChildSpec(
            id="store",
            start=lambda link: LedgerWriter.start(
                link,
                store=store,
                receipt_log=receipt_log,
                pipeline=pipeline,
                metrics=actor_metrics,
                outbox_for=adapters.outbox_for,
                checkpoint_outbox_for=adapters.checkpoint_outbox_for,
                batch_max=settings.commit_batch_receipts_max,
                queue_max=stage_queue_max,
                linger_ms=settings.commit_linger_ms,
                on_committed=after_commit,
                on_log_damaged=on_log_damaged,
            ),
            restart="permanent",
            shutdown_timeout_ms=10_000,
            type="worker",
        ),
        *(
            _signer_specs(settings, key, pipeline, actor_metrics, stage_queue_max)
            if signs_receipts
            else []
        ),
        ChildSpec(
            id="accounts",
            start=lambda link: DynamicSupervisor.start(
                name="accounts",
                link=link,
                child_restart="transient",
                child_shutdown_timeout_ms=5_000,
                intensity=1_000,
                period_s=1.0,
                registry=registry,
            ),
            restart="permanent",
            shutdown_timeout_ms=60_000,
            type="supervisor",
        ),
        ChildSpec(
            id="outbox",
            start=lambda link: OutboxRelay.start(
                link,
                store=store,
                sinks=adapters.sinks,
                checkpoint_sinks=adapters.checkpoint_sinks,
                metrics=outbox_metrics,
                wake=outbox_wake,
                message_sinks=webhooks.message_sinks,
            ),
            restart="permanent",
            shutdown_timeout_ms=15_000,
            type="worker",
        ),
        *_archive_feed_specs(adapters, outbox_metrics, archive_wake),
        ChildSpec(
            id="reconciler",
            start=lambda link: Reconciler.start(
                link,
                store=store,
                read_model=adapters.read_model,
                archive=adapters.archive,
                jwks=key_ring.jwks,
                interval_s=settings.reconcile_interval_s,
                metrics=reconciler_metrics,
                on_integrity_failure=on_integrity_failure,
                log_proofs=log_proofs,
            ),
            restart="permanent",
            shutdown_timeout_ms=15_000,
            type="worker",
        ),
        *stripe.child_specs,
    ]
    root = Supervisor.start(
        name="billing",
        flags=SupervisorFlags(strategy="rest_for_one", intensity=5, period_s=10.0),
        children=children,
        on_escalation=on_escalation,
        registry=registry,
    )

    def accounts() -> DynamicSupervisor | None:
        child = root.child("accounts")
        return child if isinstance(child, DynamicSupervisor) else None

    directory = AccountDirectory(
        deps, accounts, idle_s=settings.account_idle_s,
        check_before_use=account_audit.check_before_use,
    )
    directory_box.append(directory)
    pipeline.on_chain_failed = directory.reload
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="blocking")

    def store_writable() -> bool:
        try:
            store.check_writable()
        except LedgerError:
            return False
        return True

    readiness = Readiness(
        tree_up=lambda: root.is_running,
        store_writable=store_writable,
        open_halts=adapters.halts.open_halts,
    )
    readiness.refresh()  # before the first request: a recorded halt holds at once
    readiness_box.append(readiness)
    http_metrics = HttpMetrics(registry)
    http_metrics.integrity_halted.set_function(lambda: 0 if readiness.halt is None else 1)
    admission = Admission(
        settings.admission_queue_max,
        settings.customer_inflight_max,
        on_reject=http_metrics.rejected_overload.inc,
        loop_lag_max_s=settings.loop_lag_max_ms / 1000.0,
        latency_target_s=settings.admission_latency_target_ms / 1000.0,
    )
    http_metrics.admission_inflight.set_function(lambda: admission.inflight)
    http_metrics.admission_bound.set_function(admission.saturation_bound)
    http_metrics.loop_lag_s.set_function(lambda: admission.loop_lag_s)

    services = Services(
        settings=settings,
        store=store,
        read_model=adapters.read_model,
        directory=directory,
        key_ring=key_ring,
        registry=registry,
        metrics=http_metrics,
        admission=admission,
        api_keys=ApiKeyCache(store, executor),
        readiness=readiness,
        executor=executor,
        log_proofs=log_proofs,
        note_key=note_key,
        halts=adapters.halts,
        jwks_body=orjson.dumps(key_ring.jwks()),
        extras={"tree": root.tree, "reconciler": lambda: root.child("reconciler")},
    )
    return Runtime(
        settings=settings,
        adapters=adapters,
        root=root,
        services=services,
        admin_token=settings.admin_token or "",
        admin_token_generated=admin_token_generated,
        account_scheduler=deps.scheduler,
        account_audit=account_audit,
        app_hooks=[
            stripe.add_routes,
            lambda app: add_web_routes(app, web_settings, stripe_settings.api_base),
        ],
    )


def _audit_before_ready(
    adapters: Adapters, key_ring: KeyRing, halts: HaltRecorder
) -> AccountHeadAudit:
    """Check the log head, then account heads for at most
    `startup_audit_before_ready_ms` (see actors.startup_audit); each failure
    is a recorded halt, so the service comes up (or turns) unready."""
    started_s = time.monotonic()
    problem = audit_log_at_startup(adapters.store, TrustedKeys(key_ring.jwks()))
    if problem is not None:
        halts.record(problem, source="startup_audit")

    def record(failure: IntegrityFailure) -> None:
        halts.record(failure, source="startup_audit")

    audit = AccountHeadAudit(adapters.store, record)
    audit.run(limits.startup_audit_before_ready_ms / 1000.0)
    log.info(
        "billing.startup_audit",
        failures=audit.failures + (problem is not None),
        accounts_checked=audit.checked,
        accounts_done=audit.done,
        duration_s=round(time.monotonic() - started_s, 3),
    )
    return audit


async def _audit_accounts_in_background(services: Services, audit: AccountHeadAudit) -> None:
    """The rest of the start-up audit, a slice at a time, after ready."""
    while not audit.done:
        try:
            await services.blocking(audit.run, 0.05)
        except Exception:  # the store is unreachable: accounts are checked on use
            log.exception("billing.startup_audit_failed")
            await asyncio.sleep(1.0)
        await asyncio.sleep(0)


def _signer_specs(
    settings: Settings,
    key: Signer,
    pipeline: Pipeline,
    metrics: ActorMetrics,
    queue_max: int,
) -> list[ChildSpec]:
    """The per-receipt signer stage: only in `receipt` signing mode."""
    # A signing process is handed the private key; a KMS key has none to hand,
    # and its calls wait on the network, not the CPU: it signs in threads.
    processes = settings.signer_processes and isinstance(key, SigningKey)
    if settings.signer_processes and not processes:
        log.warning("signer.threads_not_processes", reason="the key is in Cloud KMS", key=repr(key))
    return [
        ChildSpec(
            id="signer",
            start=lambda link: SignerPool.start(
                link,
                key=key,
                pipeline=pipeline,
                workers=settings.effective_signer_workers,
                queue_max=queue_max,
                metrics=metrics,
                processes=processes,
            ),
            restart="permanent",
            shutdown_timeout_ms=10_000,
            type="worker",
        )
    ]


def _archive_feed_specs(
    adapters: Adapters, metrics: OutboxMetrics, wake: threading.Event
) -> list[ChildSpec]:
    """The archive's follower of the ledger, when the archive takes it (embedded)."""
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
                metrics=metrics,
                wake=wake,
                checkpoints=adapters.checkpoint_feed,
            ),
            restart="permanent",
            shutdown_timeout_ms=15_000,
            type="worker",
        )
    ]


class ListenError(Exception):
    """The gateway could not bind its address (port in use, no permission)."""


async def run_server(
    runtime: Runtime,
    on_ready: Callable[[str], None],
    stop_event: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop_event`), then drain and stop."""
    settings = runtime.settings
    services = runtime.services
    app = runtime.make_app()
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=settings.drain_timeout_s, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.port, backlog=limits.listen_backlog_max, reuse_address=True
    )
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        # Inside the try: a port in use must still stop the tree started by
        # build_runtime, or its threads keep a process alive that serves nothing.
        try:
            await site.start()
        except OSError as error:
            where = f"{settings.host}:{settings.port}"
            raise ListenError(f"cannot listen on {where}: {error.strerror or error}") from None
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        on_ready(f"http://{settings.host}:{_bound_port(site, settings.port)}")
        log.info("billing.serving", host=settings.host, port=settings.port)
        await stop.wait()
    finally:
        log.info("billing.draining")
        services.readiness.draining = True
        await runner.cleanup()  # stop accepting, let in-flight requests finish
        await loop.run_in_executor(None, runtime.stop)
        log.info("billing.stopped")


def _bound_port(site: web.TCPSite, default: int) -> int:
    server = site._server  # aiohttp keeps the asyncio server here
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return default


async def _refresh_readiness_forever(services: Services, interval_s: float = 1.0) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await services.blocking(services.readiness.refresh)
        except Exception:
            log.exception("readiness.refresh_failed")


async def _passivate_forever(services: Services) -> None:
    # Every second, not every idle_s / 4: a burst of new customers must not
    # overshoot account_actors_live_max by 15 s of them.
    interval_s = limits.account_passivation_interval_s
    while True:
        await asyncio.sleep(interval_s)
        try:
            await services.blocking(services.directory.passivate_idle)
        except Exception:
            log.exception("accounts.passivation_failed")
