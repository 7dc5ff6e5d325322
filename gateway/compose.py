"""The composition root: builds every part from the frozen Settings, starts
the supervision tree, then the HTTP server; stops them in reverse.

Startup and shutdown are explicit phases (as in aiohttp's web_runner):
SIGTERM => stop accepting, drain in-flight requests, stop the tree (which
flushes the ledger writer), close the store.

Read `_start` top-down: each part is built from those before it, and what
needs undoing is a step (gateway.startup) undone in reverse; the supervision
tree itself is data, returned by gateway.tree.billing_tree.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
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
from actors.accounts import AccountDirectory, LiveAccounts
from actors.delivery.outbox import OutboxMetrics
from actors.integrity.evidence import build_evidence
from actors.integrity.halts import HaltRecorder, IntegrityFailure
from actors.integrity.reconciler import ReconcilerMetrics
from actors.integrity.startup_audit import AccountHeadAudit, audit_log_at_startup
from actors.metrics import ActorMetrics
from actors.pipeline import Pipeline
from actors.receipt_log import LogAppender
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
from gateway.startup import Step, Steps
from gateway.storage import Adapters, open_adapters
from gateway.stripe.settings import StripeSettings
from gateway.stripe.settings import load as load_stripe_settings
from gateway.stripe.wiring import StripeWiring, wire_stripe
from gateway.thread_cpu import ThreadCpuCollector
from gateway.tree import ChargePath, TreeParts, TreeSpec, billing_tree
from gateway.web import WebSettings, add_web_routes, load_web_settings
from gateway.webhook_wiring import wire_webhooks
from ledger import (
    ChargeRequests,
    LedgerError,
    LedgerStore,
    SigningKeyRecord,
    StoredReceipt,
    limits,
)
from ledger.clock import utc_now_rfc3339
from ledger.log_proofs import LogProofs
from supervisor import ActorScheduler, Supervisor

log = structlog.get_logger(__name__)

ADMIN_TOKEN_FILE = "admin-token"
KEYS_DIR = "keys"
NOTE_KEY_FILE = "receipt-log-note-ed25519.key"
# A generated admin token: 192 random bits.
ADMIN_TOKEN_BYTES = 24
# The background part of the start-up audit runs this long at a time on the
# blocking executor (the handlers' store calls get their turn in between),
# and pauses this long after the store failed to answer.
AUDIT_SLICE_S = 0.05
AUDIT_RETRY_S = 1.0
# How soon a halt recorded by another gateway, or cleared, reaches this one.
READINESS_REFRESH_INTERVAL_S = 1.0


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
    token = "adm_" + secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
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


# The tree's children stop in their own time after the drain (the writer
# flushes, relays finish a delivery); past this margin the stop gives up on
# them and says so.
TREE_STOP_MARGIN_MS = 20_000


@dataclass
class Runtime:
    """Everything the composition root started, for an orderly stop."""

    settings: Settings
    adapters: Adapters
    root: Supervisor
    services: Services
    admin_token: str
    admin_token_generated: bool
    account_audit: AccountHeadAudit
    # What started, in order; `stop` undoes it in reverse.
    steps: Steps
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
        """Stop the tree, then the rest, in reverse start order; every step is
        undone even if one fails (the first error is raised at the end)."""
        self.steps.unwind()


def build_runtime(settings: Settings, environ: Mapping[str, str] | None = None) -> Runtime:
    """Open storage, load keys, start the supervision tree. Blocking.

    `environ` feeds the Stripe settings (secret files or variables); None
    leaves Stripe unconfigured. A failed start undoes what had started."""
    # No `*_created` series: one more per counter and histogram child, which
    # Prometheus does not need (process-wide; here, not at import).
    disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
    stripe_settings = load_stripe_settings(settings.secrets_dir, environ or {})
    web_settings = load_web_settings(
        settings.secrets_dir, environ or {}, settings.data_dir, dev=settings.dev
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    admin_token, generated = resolve_admin_token(settings)
    settings = replace(settings, admin_token=admin_token)
    steps = Steps()
    with steps.starting():
        return _start(steps, settings, stripe_settings, web_settings, generated)


def _start(
    steps: Steps,
    settings: Settings,
    stripe_settings: StripeSettings,
    web_settings: WebSettings,
    admin_token_generated: bool,
) -> Runtime:
    """The start-up steps in dependency order: each part is built from parts
    built before it, so nothing is filled in or patched afterwards."""
    adapters = steps.enter("storage", _storage_step(settings))
    key = steps.enter("signing_key", _signing_key_step(settings))
    key_ring = build_key_ring(adapters, key)
    note_key = load_note_key(settings)
    registry = _metrics_registry()
    readiness = _readiness(adapters)
    halts = HaltRecorder(adapters.halts, utc_now_rfc3339, readiness.halted)
    account_audit = _audit_before_ready(adapters, key_ring, halts)
    executor = steps.enter("executor", _executor_step())
    scheduler = steps.enter("account_scheduler", _account_scheduler_step(settings))
    charge = _charge_path(settings, adapters, key_ring, registry)
    directory = _account_directory(settings, stripe_settings, adapters, charge, scheduler,
                                   account_audit)
    stripe = _wire_stripe(stripe_settings, adapters, registry, charge, key_ring)
    parts = TreeParts(
        settings=settings, adapters=adapters, key=key, key_ring=key_ring, halts=halts,
        registry=registry, charge=charge, signer_processes=_signs_in_processes(settings, key),
        stripe_specs=stripe.child_specs,
    )
    root = steps.enter("tree", _tree_step(billing_tree(parts), readiness, settings, registry))
    readiness.refresh()  # before the first request: a recorded halt holds at once
    metrics = HttpMetrics(registry)
    services = Services(
        settings=settings,
        store=adapters.store,
        read_model=adapters.read_model,
        directory=directory,
        key_ring=key_ring,
        registry=registry,
        metrics=metrics,
        admission=_admission(settings, metrics),
        api_keys=ApiKeyCache(adapters.store, executor),
        readiness=readiness,
        executor=executor,
        log_proofs=charge.log_proofs,
        note_key=note_key,
        halts=adapters.halts,
        tree=root,
        jwks_body=orjson.dumps(key_ring.jwks()),
    )
    _export_gauges(services)
    return Runtime(
        settings=settings, adapters=adapters, root=root, services=services,
        admin_token=settings.admin_token or "", admin_token_generated=admin_token_generated,
        account_audit=account_audit, steps=steps, app_hooks=[
            stripe.add_routes,
            lambda app: add_web_routes(app, web_settings, stripe_settings.api_base),
        ],
    )


def _storage_step(settings: Settings) -> Step[Adapters]:
    adapters = open_adapters(settings)
    yield adapters
    adapters.close()


def _signing_key_step(settings: Settings) -> Step[Signer]:
    key = load_signing_key(settings)
    yield key
    key.close()  # a KMS client's connections, a signing process's key


def _executor_step() -> Step[concurrent.futures.ThreadPoolExecutor]:
    """The bounded pool of the handlers' blocking store calls."""
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=limits.blocking_threads_max, thread_name_prefix="blocking"
    )
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def _account_scheduler_step(settings: Settings) -> Step[ActorScheduler]:
    """The few threads every account actor runs on (stopped after the tree)."""
    scheduler = ActorScheduler(settings.effective_account_threads, "accounts")
    yield scheduler
    scheduler.stop()


def _tree_step(
    tree: TreeSpec, readiness: Readiness, settings: Settings, registry: CollectorRegistry
) -> Step[Supervisor]:
    """Start the root supervisor; its escalation makes the gateway unready."""
    root = Supervisor.start(
        name="billing",
        flags=tree.flags,
        children=tree.children,
        on_escalation=readiness.escalated,
        registry=registry,
    )
    readiness.tree_up = True
    yield root
    readiness.tree_up = False
    if not root.stop(timeout_ms=int(settings.drain_timeout_s * 1000) + TREE_STOP_MARGIN_MS):
        log.error("runtime.tree_stop_timeout")


def _metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    # Collector runs and the process's memory, CPU and open files, for SREs
    # (python_gc_*, process_*): see gateway.gc_tuning for why GC matters here.
    GCCollector(registry=registry)
    ProcessCollector(registry=registry)
    # ... and the CPU of each stage's threads and of the signing processes.
    registry.register(ThreadCpuCollector())
    return registry


def _readiness(adapters: Adapters) -> Readiness:
    """Built first: a halt recorded by the start-up audit holds at once."""
    return Readiness(
        store_writable=functools.partial(_store_writable, adapters.store),
        open_halts=adapters.halts.open_halts,
    )


def _store_writable(store: LedgerStore) -> bool:
    try:
        store.check_writable()
    except LedgerError:
        return False
    return True


def _charge_path(
    settings: Settings, adapters: Adapters, key_ring: KeyRing, registry: CollectorRegistry
) -> ChargePath:
    live_accounts = LiveAccounts()
    return ChargePath(
        # A commit that failed leaves the customer's actor ahead of the store:
        # the pipeline has it reload.
        pipeline=Pipeline(
            signs_receipts=settings.receipt_signing == "receipt",
            on_chain_failed=live_accounts.reload,
        ),
        receipt_log=LogAppender(
            adapters.store,
            key=lambda: key_ring.active,
            origin=settings.log_origin,
            now_rfc3339=utc_now_rfc3339,
        ),
        log_proofs=LogProofs(adapters.store),
        live_accounts=live_accounts,
        webhooks=wire_webhooks(settings, adapters.store, registry),
        actor_metrics=ActorMetrics(registry),
        outbox_metrics=OutboxMetrics(registry),
        reconciler_metrics=ReconcilerMetrics(registry),
        outbox_wake=threading.Event(),
        archive_wake=threading.Event(),
    )


def _account_directory(
    settings: Settings,
    stripe_settings: StripeSettings,
    adapters: Adapters,
    charge: ChargePath,
    scheduler: ActorScheduler,
    audit: AccountHeadAudit,
) -> AccountDirectory:
    deps = AccountDeps(
        store=adapters.store,
        pipeline=charge.pipeline,
        metrics=charge.actor_metrics,
        now_rfc3339=utc_now_rfc3339,
        activity={},
        scheduler=scheduler,
        payment_grace_s=float(stripe_settings.payment_grace_s),
        alerts=charge.webhooks.alerts,
    )
    charge.actor_metrics.runnable_accounts.set_function(scheduler.runnable)
    return AccountDirectory(
        deps, charge.live_accounts, idle_s=settings.account_idle_s,
        check_before_use=audit.check_before_use,
    )


def _wire_stripe(
    settings: StripeSettings,
    adapters: Adapters,
    registry: CollectorRegistry,
    charge: ChargePath,
    key_ring: KeyRing,
) -> StripeWiring:
    """Stripe's children and routes; a changed entitlement reloads the actor."""
    store = adapters.store
    requests = store if isinstance(store, ChargeRequests) else None

    def evidence_of(receipt: StoredReceipt) -> bytes:
        return build_evidence(
            store, charge.log_proofs, requests, key_ring, receipt, utc_now_rfc3339
        )

    return wire_stripe(settings, store, registry, charge.live_accounts.reload, adapters.sinks,
                       disputes=(adapters.disputes, evidence_of))


def _signs_in_processes(settings: Settings, key: Signer) -> bool:
    # A signing process is handed the private key; a KMS key has none to hand,
    # and its calls wait on the network, not the CPU: it signs in threads.
    processes = settings.signer_processes and isinstance(key, SigningKey)
    if settings.signer_processes and not processes:
        log.warning("signer.threads_not_processes", reason="the key is in Cloud KMS", key=repr(key))
    return processes


def _admission(settings: Settings, metrics: HttpMetrics) -> Admission:
    return Admission(
        settings.admission_queue_max,
        settings.customer_inflight_max,
        on_reject=metrics.rejected_overload.inc,
        loop_lag_max_s=settings.loop_lag_max_ms / 1000.0,
        latency_target_s=settings.admission_latency_target_ms / 1000.0,
    )


def _export_gauges(services: Services) -> None:
    """Gauges read from the parts when Prometheus scrapes."""
    metrics, admission, readiness = services.metrics, services.admission, services.readiness
    metrics.integrity_halted.set_function(lambda: 0 if readiness.halt is None else 1)
    metrics.admission_inflight.set_function(lambda: admission.inflight)
    metrics.admission_bound.set_function(admission.saturation_bound)
    metrics.loop_lag_s.set_function(lambda: admission.loop_lag_s)


def _audit_before_ready(
    adapters: Adapters, key_ring: KeyRing, halts: HaltRecorder
) -> AccountHeadAudit:
    """Check the log head, then account heads for at most
    `startup_audit_before_ready_ms` (see actors.integrity.startup_audit); each failure
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
            await services.blocking(audit.run, AUDIT_SLICE_S)
        except Exception:  # the store is unreachable: accounts are checked on use
            log.exception("billing.startup_audit_failed")
            await asyncio.sleep(AUDIT_RETRY_S)
        await asyncio.sleep(0)


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


async def _refresh_readiness_forever(
    services: Services, interval_s: float = READINESS_REFRESH_INTERVAL_S
) -> None:
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
