"""Reconciler: the periodic audit of the ledger (DESIGN.md, supervision tree).

Every `interval_s` it audits the next slice of customers (round-robin):
chain, signatures, balance == sum of receipts, account head and usage, and
each receipt's leaf in the log (`audit_customer`), then the read model and
archive copies against the ledger (`compare_copies`), filling in receipts a
copy lacks. Each pass also audits the whole receipt log
(`ledger.log_audit`: every checkpoint's signature and root, the tiles, each
leaf the hash of its receipt), a share of it each round alongside the
customers (`LogAuditRun`), and the slices are sized so that a pass ends
within `audit_pass_s`. A round spreads its share over most of its interval,
a page or a customer at a time (`_Pacer`): done in one go at the start of a
pass, the log audit held charges to 52% of their rate for ~26 s at
1,000,000 receipts. Whatever is changed anywhere is found within one pass of
its making: the scan comes back to every place once a pass (issue 17:
within 5 minutes, with 1,000 customers and 1,000,000 receipts;
loadtest/bench_audit.py). A full pass on demand (`FullPass`, start-up
checks) audits the log in one go.
A broken chain, signature or balance, or a copy that holds
something other than the ledger's receipt, calls `on_integrity_failure`: the
composition root halts charges (readyz fails, 503) until a person looks.

A copy is repaired only from a ledger that audited clean: a tampered ledger
must not be copied over the archive that could prove it.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from actors.integrity._audit import CustomerAudit, audit_customer
from actors.integrity._audit_process import (
    AuditProcess,
    AuditProcessLost,
    AuditSources,
    RemoteLogRun,
    remote_audit,
)
from actors.integrity._copies import CopyReport, compare_copies, repair_copies
from actors.integrity.halts import IntegrityFailure
from actors.stage_owner import LoopThread, StageOwner
from crypto import JWKSError, TrustedKeys
from ledger import LedgerError, LedgerStore, ReceiptArchive, ReceiptReadModel, limits
from ledger.errors import InvariantViolation
from ledger.limits import reconcile_interval_s_max, summary_items_max
from ledger.log_audit import AuditReport, AuditState, LogAuditRun, audit_log
from ledger.log_proofs import LogProofs
from supervisor import Link

__all__ = [
    "AuditSources",
    "CopyReport",
    "CustomerAudit",
    "FullPass",
    "PassSummary",
    "Reconciler",
    "ReconcilerMetrics",
    "audit_customer",
    "compare_copies",
]

log = structlog.get_logger(__name__)

# A full pass (the log, then every customer) is paced to end within this: a
# change is found within about one pass of its making, under the 5-minute
# promise with a round's overrun to spare.
audit_pass_target_s: Final = 240.0
# A background round spreads its work over this share of its interval, and
# the rest is idle: its slices never run back to back with the next round's.
round_busy_share: Final = 0.8
# The background audit's CPU share is capped (limits.audit_busy_share_max), and
# when its round is behind schedule (a busy machine): the pass must
# still end in time. Measured: capped at a quarter throughout, a pass at
# 1,000,000 receipts took 333 s on the loaded 2-core machine.
audit_busy_share_late: Final = 0.5
# How long a full pass waits for a background round to finish its slice.
full_pass_wait_s: Final = 120.0
# How long on_stop waits for the audit thread (it checks between customers).
thread_join_timeout_s: Final = 10.0

JwksProvider = Callable[[], Mapping[str, object]]
OnIntegrityFailure = Callable[[IntegrityFailure], None]


class ReconcilerMetrics:
    """Built once per registry by the composition root (a restarted
    Reconciler reuses them: a registry refuses the same name twice)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.audits = Counter(
            "billing_reconciler_audits_total",
            "Customer audits run, by result (ok, failed, error).",
            ["result"],
            registry=registry,
        )
        self.failures = Counter(
            "billing_reconciler_audit_failures_total",
            "Customer audits that found the ledger broken, by reason.",
            ["reason"],
            registry=registry,
        )
        self.missing = Counter(
            "billing_reconciler_copy_missing_total",
            "Receipts a copy (read_model, archive) lacked.",
            ["copy"],
            registry=registry,
        )
        self.repaired = Counter(
            "billing_reconciler_copy_repaired_total",
            "Missing receipts written to a copy from the ledger.",
            ["copy"],
            registry=registry,
        )
        self.divergent = Counter(
            "billing_reconciler_copy_divergent_total",
            "Receipts a copy holds that are not the ledger's (integrity alarm).",
            ["copy"],
            registry=registry,
        )
        self.integrity_failures = Counter(
            "billing_reconciler_integrity_failures_total",
            "Integrity failures reported to the composition root.",
            registry=registry,
        )
        self._add_pass_metrics(registry)

    def _add_pass_metrics(self, registry: CollectorRegistry) -> None:
        self.last_full_pass = Gauge(
            "billing_reconciler_last_full_pass_timestamp_seconds",
            "Unix time at which the last pass over every customer ended.",
            registry=registry,
        )
        self.log_audit_s = Histogram(
            "billing_reconciler_log_audit_seconds",
            "Duration of one audit of the whole receipt log (one per pass; a background "
            "pass spreads it over the pass).",
            buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.last_pass_s = Gauge(
            "billing_reconciler_last_pass_seconds",
            "How long the last background pass over the log and every customer took.",
            registry=registry,
        )
        self.audit_process_restarts = Counter(
            "billing_reconciler_audit_process_restarts_total",
            "Times the background audit's child process was lost and started again.",
            registry=registry,
        )
        self.round_s = Histogram(
            "billing_reconciler_round_seconds",
            "Duration of one reconciliation round.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=registry,
        )


class FullPass(NamedTuple):
    """Ask the Reconciler to audit every customer now; the answer is a PassSummary.

    Fields:
        repair: fill in receipts the copies lack (from a ledger that audited clean).
    """

    repair: bool = True


@dataclass
class PassSummary:
    """What one round or full pass found. `failures` and `errors` keep the
    first `summary_items_max`; the counters are exact."""

    customers: int = 0
    audits_ok: int = 0
    audits_failed: int = 0
    errors: int = 0
    missing: int = 0
    repaired: int = 0
    divergent: int = 0
    log_failures: int = 0  # the receipt log's audit failed (beyond any customer's)
    failures: list[str] = field(default_factory=list)
    error_details: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def absorb(self, other: PassSummary) -> None:
        """Add what another part of the same pass found (the log audit)."""
        self.errors += other.errors
        self.failures = (other.failures + self.failures)[:summary_items_max]
        self.error_details = (other.error_details + self.error_details)[:summary_items_max]
        self.log_failures += other.log_failures

    @property
    def integrity_ok(self) -> bool:
        return self.audits_failed == 0 and self.divergent == 0 and self.log_failures == 0

    def add_failure(self, reason: str) -> None:
        if len(self.failures) < summary_items_max:
            self.failures.append(reason)

    def add_error(self, detail: str) -> None:
        self.errors += 1
        if len(self.error_details) < summary_items_max:
            self.error_details.append(detail)


class Reconciler(StageOwner):
    """Supervised worker owning one audit thread; `FullPass` (or
    `proxy().full_pass()`) audits everyone synchronously."""

    name = "reconciler"

    def __init__(
        self,
        link: Link | None,
        *,
        store: LedgerStore,
        read_model: ReceiptReadModel,
        archive: ReceiptArchive,
        jwks: JwksProvider,
        interval_s: float,
        metrics: ReconcilerMetrics,
        on_integrity_failure: OnIntegrityFailure,
        log_proofs: LogProofs | None = None,
        customers_per_round_max: int = limits.reconcile_round_customers_max,
        audit_pass_s: float = audit_pass_target_s,
        log_page_receipts: int = limits.audit_page_receipts_max,
        audit_sources: AuditSources | None = None,
    ) -> None:
        """`audit_sources`: the background pass reads and hashes in a child
        process that opens the ledger (and the copies) there read-only
        (`_audit_process`); None keeps it in this process (a store only this
        process can see, e.g. in memory). Full passes (operator, start-up)
        run here either way."""
        super().__init__(link, stop_timeout_s=thread_join_timeout_s)
        _check_rounds(interval_s, customers_per_round_max)
        self._store = store
        self._log_proofs = log_proofs  # proves receipts that carry no signature
        self._read_model = read_model
        self._archive = archive
        self._jwks = jwks
        self._interval_s = float(interval_s)
        self._metrics = metrics
        self._on_integrity_failure = on_integrity_failure
        self._per_round = customers_per_round_max
        self._log_page = log_page_receipts  # a slice of the log is whole pages of this
        # A pass is at least one round (an interval beyond the target is an
        # operator's choice: the pass then takes that round).
        self._pass_s = max(float(audit_pass_s), self._interval_s)
        self._log_state: AuditState | None = None  # the last checkpoint the log audit verified
        self._failed_customers: set[str] = set()  # whose alarm a full pass raised
        self._cursor: str | None = None  # last customer audited in the current pass
        # The current pass's audit of the log.
        self._log_run: LogAuditRun | RemoteLogRun | None = None
        self._log_lost = False  # the log run ended with the audit process: start another
        self._pass_started = 0.0
        self._round_due = 0.0  # when the current background round was due
        self._pacer: _Pacer | None = None  # set during a background round
        self._work_lock = threading.Lock()  # one round or full pass at a time
        self._loop = LoopThread("reconciler", self._run, self.report_crash)
        self._stopping = self._loop.stopping
        self._process: AuditProcess | None = None
        if audit_sources is not None:
            self._process = AuditProcess(
                audit_sources, metrics.audit_process_restarts, self._stopping
            )

    # -- actor lifecycle ---------------------------------------------------
    def stage(self) -> LoopThread:
        return self._loop

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, FullPass):
            return self.full_pass(repair=message.repair)
        return super().on_receive(message)

    # -- the work ----------------------------------------------------------
    def full_pass(self, repair: bool = True) -> PassSummary:
        """Audit every customer now (operator command, tests). Raises
        TimeoutError if a background round holds the work for too long."""
        if not self._work_lock.acquire(timeout=full_pass_wait_s):
            raise TimeoutError(f"a reconciliation round is still running after {full_pass_wait_s}s")
        try:
            self._failed_customers.clear()
            summary = self._reconcile(sorted(self._store.list_customer_ids()), repair)
            summary.absorb(self._audit_log(already_failed=set(self._failed_customers)))
            self._metrics.last_full_pass.set(time.time())
            log.info("reconciler.full_pass", **_summary_fields(summary))
            return summary
        finally:
            self._work_lock.release()

    def _run(self, stopping: threading.Event) -> None:
        # Fixed rate: a round's own length (it is paced to fill most of its
        # interval) does not stretch the pass.
        due = time.monotonic() + self._interval_s
        try:
            while not stopping.wait(max(0.0, due - time.monotonic())):
                # A late round keeps its due time: its pacer sees it is behind.
                self._round_due = due
                due = max(due + self._interval_s, time.monotonic() - self._pass_s)
                self._round()
        finally:
            if self._process is not None:
                self._process.close()

    def _round(self) -> None:
        # A full pass in progress covers this round's customers too.
        if not self._work_lock.acquire(blocking=False):
            return
        try:
            try:
                ids = sorted(self._store.list_customer_ids())
            except LedgerError as error:
                log.warning("reconciler.list_customers_failed", error=repr(error))
                return
            cursor = self._cursor
            if cursor is None:  # a new pass: a new run over the whole log
                self._pass_started = time.monotonic()
                self._log_run = self._start_log_run()
            elif self._log_run is None and self._log_lost:
                # The audit process was lost mid-run: the log starts afresh in
                # this pass (its rounds catch up), not a pass later.
                self._log_run = self._start_log_run()
            remaining = [c for c in ids if cursor is None or c > cursor]
            # Enough customers a round for the pass to end within audit_pass_s.
            rounds = max(1, math.floor(self._pass_s / self._interval_s))
            per_round = max(self._per_round, math.ceil(len(ids) / rounds))
            batch = remaining[:per_round]
            last_round = len(remaining) <= per_round
            summary = self._paced_round(batch, math.ceil(len(remaining) / per_round) or 1)
            if last_round:
                self._cursor = None
                if not self._stopping.is_set():
                    self._metrics.last_full_pass.set(time.time())
                    self._metrics.last_pass_s.set(time.monotonic() - self._pass_started)
            elif batch:
                self._cursor = batch[-1]
            if summary.customers:
                log.debug("reconciler.round", **_summary_fields(summary))
        finally:
            self._work_lock.release()

    def _paced_round(self, batch: list[str], rounds_left: int) -> PassSummary:
        """This round's share of the log run, then its customers, spread over
        most of the interval (`_Pacer`): the audit takes the CPU in slices of
        one page or one customer, and charges run in between (issue 17)."""
        run = self._log_run
        leaves = 0
        if run is not None:
            leaves = math.ceil((run.tree_size - run.leaves_done) / rounds_left)
        pages = math.ceil(leaves / self._log_page)
        self._pacer = _Pacer(self._round_due, self._interval_s * round_busy_share,
                             pages + len(batch), self._stopping)
        try:
            if run is not None:
                report = run.advance(leaves if rounds_left > 1 else None)
                if report is not None:
                    self._log_run = None
                    self._judge_log(report, None, self._pass_started, background=True)
            return self._reconcile(batch, repair=True, background=True)
        except _Stopping:
            self._log_run, self._cursor = None, None  # a stopped run proves nothing
            return PassSummary()
        except LedgerError as error:
            # The store failed mid-run: the next pass audits the log afresh.
            log.warning("reconciler.log_audit_error", error=repr(error))
            self._log_run = None
            self._log_lost = isinstance(error, AuditProcessLost)
            return self._reconcile(batch, repair=True, background=True)
        finally:
            self._pacer = None

    def _start_log_run(self) -> LogAuditRun | RemoteLogRun | None:
        try:
            if self._process is not None:
                return RemoteLogRun(self._process, self._jwks(), self._log_state,
                                    self._log_page, on_page=self._unit_done)
            keys = TrustedKeys(self._jwks())
            return LogAuditRun(self._store, keys, self._log_state, on_leaves=self._page_done,
                               page_receipts=self._log_page)
        except JWKSError:
            return None  # the customers' part of the pass reports unusable keys
        except LedgerError as error:
            log.warning("reconciler.log_audit_error", error=repr(error))
            self._log_lost = isinstance(error, AuditProcessLost)
            return None

    def _page_done(self, _leaves: int) -> None:
        self._unit_done(None)

    def _unit_done(self, cpu_s: float | None) -> None:
        """After a page or a customer: stop if asked, else rest (`_Pacer`);
        `cpu_s` is what the unit took in the audit process (None: here)."""
        if self._stopping.is_set():
            raise _Stopping
        if self._pacer is not None:
            self._pacer.unit_done(cpu_s)

    def _audit_log(self, already_failed: set[str] | None) -> PassSummary:
        """The whole receipt log now, in one go (a full pass)."""
        summary = PassSummary()
        started = time.monotonic()
        try:
            keys = TrustedKeys(self._jwks())
            report = audit_log(self._store, keys, self._log_state, on_leaves=self._page_done)
        except _Stopping:
            return summary
        except JWKSError:
            return summary  # the customers' part of the pass reports unusable keys
        except LedgerError as error:
            log.warning("reconciler.log_audit_error", error=repr(error))
            summary.add_error(f"log: {error!r}")
            return summary
        return self._judge_log(report, already_failed, started, summary)

    def _judge_log(
        self,
        report: AuditReport,
        already_failed: set[str] | None,
        started: float,
        summary: PassSummary | None = None,
        *,
        background: bool = False,
    ) -> PassSummary:
        """The log against its checkpoints and the remembered one (a rollback
        or fork since the last pass fails too).

        A failure at a receipt is its customer's: that customer is audited
        now (or, `already_failed`, was in this pass) and its own alarm
        stands; one damage, one incident."""
        summary = summary or PassSummary()
        self._metrics.log_audit_s.observe(time.monotonic() - started)
        failure = report.failure
        if failure is None:
            self._log_state = report.state() or self._log_state
            log.debug("reconciler.log_audited", leaves=report.leaves)
            return summary
        log.error("reconciler.log_audit_failed", reason=failure.reason,
                  where=failure.where(), detail=failure.detail)
        customer_id = self._customer_of(failure.receipt_id)
        if customer_id is not None:
            if already_failed is None:
                again = self._reconcile([customer_id], repair=False, background=background)
                if not again.integrity_ok:
                    return summary
            elif customer_id in already_failed:
                return summary
        summary.log_failures += 1
        self._integrity_failure(summary, IntegrityFailure(
            failure.reason, f"the receipt log, {failure.where()}: {failure.detail}",
            customer_id, failure.receipt_id,
        ))
        return summary

    def _customer_of(self, receipt_id: str | None) -> str | None:
        if receipt_id is None:
            return None
        try:
            receipt = self._store.get_receipt(receipt_id)
        except LedgerError:
            return None
        return None if receipt is None else receipt.customer_id

    def _reconcile(
        self, customer_ids: Iterable[str], repair: bool, background: bool = False
    ) -> PassSummary:
        """`background`: a paced round, audited in the child process if
        there is one."""
        started = time.monotonic()
        summary = PassSummary()
        remote = self._process if background else None
        try:
            jwks = self._jwks()
            keys = TrustedKeys(jwks)
        except (JWKSError, LedgerError) as error:
            # Without keys nothing can be verified; not the ledger's fault.
            log.error("reconciler.jwks_failed", error=repr(error))
            summary.add_error(f"jwks: {error}")
            return summary
        for customer_id in customer_ids:
            if self._stopping.is_set():
                break
            summary.customers += 1
            cpu_s = None
            try:
                copies = None
                if remote is not None:
                    audit, copies, cpu_s = remote_audit(remote, jwks, customer_id)
                else:
                    audit = audit_customer(self._store, keys, customer_id, self._log_proofs)
                self._judge_customer(audit, repair, summary, copies)
            except InvariantViolation as error:
                # A copy refused a write as conflicting with what it holds.
                self._integrity_failure(
                    summary,
                    IntegrityFailure(
                        "copy_conflict", f"customer {customer_id}: {error}", customer_id
                    ),
                )
            except (LedgerError, JWKSError) as error:
                self._metrics.audits.labels(result="error").inc()
                log.warning("reconciler.audit_error", customer_id=customer_id, error=repr(error))
                summary.add_error(f"customer {customer_id}: {error!r}")
            if self._pacer is not None:
                self._pacer.unit_done(cpu_s)
        summary.duration_s = time.monotonic() - started
        self._metrics.round_s.observe(summary.duration_s)
        return summary

    def _judge_customer(
        self,
        audit: CustomerAudit,
        repair: bool,
        summary: PassSummary,
        copies: CopyReport | None = None,
    ) -> None:
        """Count the verdict, raise the alarm on a failure, then judge the
        copies: as the audit process compared them (`copies`), or compared
        here. Repairs are written here (the audit process only reads)."""
        customer_id = audit.customer_id
        if audit.ok:
            self._metrics.audits.labels(result="ok").inc()
            summary.audits_ok += 1
        else:
            self._metrics.audits.labels(result="failed").inc()
            self._metrics.failures.labels(reason=audit.reason or "unknown").inc()
            summary.audits_failed += 1
            log.error(
                "reconciler.audit_failed",
                customer_id=customer_id,
                reason=audit.reason,
                detail=audit.detail,
                receipt_id=audit.receipt_id,
            )
            self._integrity_failure(
                summary,
                IntegrityFailure(
                    audit.reason or "unknown", audit.detail, customer_id, audit.receipt_id
                ),
            )
        # Never copy a ledger that failed its audit over the copies.
        repair = repair and audit.ok
        if copies is None or (
            repair and not repair_copies(copies, self._read_model, self._archive)
        ):
            copies = compare_copies(
                self._store, self._read_model, self._archive, customer_id, repair
            )
        self._count_copies(copies, summary)

    def _count_copies(self, report: CopyReport, summary: PassSummary) -> None:
        for diff in report.copies:
            self._metrics.missing.labels(copy=diff.copy).inc(diff.missing)
            self._metrics.repaired.labels(copy=diff.copy).inc(diff.repaired)
            self._metrics.divergent.labels(copy=diff.copy).inc(diff.divergent_count)
            summary.missing += diff.missing
            summary.repaired += diff.repaired
            summary.divergent += diff.divergent_count
            if diff.missing:
                log.info(
                    "reconciler.copy_missing",
                    customer_id=report.customer_id,
                    copy=diff.copy,
                    missing=diff.missing,
                    repaired=diff.repaired,
                    receipt_ids=diff.missing_ids[:10],
                )
            if diff.divergent_count:
                log.error(
                    "reconciler.copy_divergent",
                    customer_id=report.customer_id,
                    copy=diff.copy,
                    divergent=diff.divergent_count,
                    receipt_ids=[d.receipt_id for d in diff.divergent[:10]],
                )
        if not report.ok:
            self._integrity_failure(
                summary,
                IntegrityFailure("divergent_copy", report.describe(), report.customer_id),
            )

    def _integrity_failure(self, summary: PassSummary, failure: IntegrityFailure) -> None:
        summary.add_failure(f"{failure.reason}: {failure.detail}")
        if failure.customer_id is not None:
            self._failed_customers.add(failure.customer_id)
        self._metrics.integrity_failures.inc()
        try:
            self._on_integrity_failure(failure)
        except Exception:
            # The alarm must not stop the audit of the others; say so loudly.
            log.exception(
                "reconciler.on_integrity_failure_failed", customer_id=failure.customer_id
            )


class _Pacer:
    """Spreads a round's units of work (log pages, customers) over `span_s`
    from when the round was due, and rests after each unit: until the
    schedule catches up, and at least 3x the CPU time the unit took (the
    audit holds the CPU a quarter of the time), or 1x when the round is
    behind its schedule (half the time, so that the pass still ends within
    the 5-minute promise on a busy machine).

    Why: the audit shares the GIL with the gateway. A thread that hashes
    without pause takes the GIL back every 5 ms switch interval, and every
    request's many short GIL acquisitions queue behind it; measured on the
    2-core machine (deploy/README.md, "Continuous audit"), the whole-log
    audit in one go held charges to 52% of their rate for ~26 s, and even
    spread over the pass, rounds behind schedule without rest did as badly."""

    def __init__(
        self,
        due: float,
        span_s: float,
        units: int,
        stopping: threading.Event,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self._clock, self._cpu_clock = clock, cpu_clock
        self._start = min(due, clock())
        self._unit_s = span_s / max(1, units)
        self._done = 0
        self._stopping = stopping
        self._cpu_s = cpu_clock()

    def unit_done(self, cpu_s: float | None = None) -> None:
        """`cpu_s`: the CPU time the unit took elsewhere (the audit
        process), added to this thread's (comparing the copies stays here)."""
        self._done += 1
        cpu_s = (cpu_s or 0.0) + self._cpu_clock() - self._cpu_s
        schedule_s = self._start + self._done * self._unit_s - self._clock()
        busy_share = limits.audit_busy_share_max if schedule_s >= 0 else audit_busy_share_late
        wait_s = max(schedule_s, cpu_s * (1.0 / busy_share - 1.0))
        if wait_s > 0:
            self._stopping.wait(wait_s)
        self._cpu_s = self._cpu_clock()


def _check_rounds(interval_s: float, customers_per_round_max: int) -> None:
    if not (isinstance(interval_s, int | float) and math.isfinite(interval_s)) or not (
        0 < interval_s <= reconcile_interval_s_max
    ):
        raise ValueError(
            f"interval_s must be in (0, {reconcile_interval_s_max}], got {interval_s!r}"
        )
    if (
        not isinstance(customers_per_round_max, int)
        or not 1 <= customers_per_round_max <= limits.reconcile_round_customers_asked_max
    ):
        raise ValueError(
            "customers_per_round_max must be in "
            f"1..{limits.reconcile_round_customers_asked_max}, "
            f"got {customers_per_round_max!r}"
        )


class _Stopping(Exception):
    """The actor is stopping: a long log audit gives up between pages."""


def _summary_fields(summary: PassSummary) -> dict[str, object]:
    fields = {k: v for k, v in dataclasses.asdict(summary).items() if not isinstance(v, list)}
    fields["duration_s"] = round(summary.duration_s, 3)
    return fields
