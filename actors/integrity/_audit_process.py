"""The background audit's hashing, in a process of its own (issue 17).

In the gateway's process the audit shares the GIL with the charges: a pass
at 1,000,000 receipts (~40 s of CPU) held charges to 71% of their idle rate
for the whole pass on a quiet 2-core machine (deploy/README.md, "Continuous
audit"). Here the reconciler keeps its schedule, pacing, halts and metrics,
and asks a child process, a page of the log or a customer at a time, to do
the reading and hashing: the child opens the ledger read-only from its store
URL (`ledger.readers`) and answers each request over a pipe with what it
found (customer, receipt, reason) and the CPU time it took. Given where the
copies are (`AuditSources`), it also compares a customer's archive and read
model with the ledger, reading only: the receipts a copy lacks come back
with the answer and the reconciler writes them. Compared in the gateway's
process, the copies cost charges ~16% of their rate during a pass at
1,000,000 receipts (37 us of GIL per charge, `loadtest.bench_audit`).

The child is started with the 'spawn' context (never fork a threaded
process). Every read of the pipe has a deadline; a child that dies, hangs
or closes its end is killed, logged and started again on the next request
(`AuditProcessLost`, a StoreUnavailable: the reconciler's answer to a store
that failed mid-run holds, the log run starts afresh next pass).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any, Final, NamedTuple

import structlog
from prometheus_client import Counter

from actors.integrity._audit import CustomerAudit, LedgerReceipts, audit_customer
from actors.integrity._copies import CopyReport, compare_copies
from crypto import JWKSError, TrustedKeys
from ledger import LedgerError, ReceiptArchive, ReceiptReadModel
from ledger.errors import StoreUnavailable
from ledger.log_audit import AuditReport, AuditState, LogAuditRun
from ledger.log_proofs import LogProofs
from ledger.readers import open_archive, open_read_model, open_read_only

__all__ = ["AuditProcess", "AuditProcessLost", "AuditSources", "RemoteLogRun"]

log = structlog.get_logger(__name__)

# How long the child may take to start and open the ledger (a spawn imports
# the audit's modules afresh: ~1 s on the 2-core machine).
start_timeout_s: Final = 60.0
# How long one answer (a page of the log, or one customer) may take.
reply_timeout_s: Final = 120.0
# How often a wait on the pipe looks at the reconciler's stop flag, and the
# child at whether its parent is still there.
poll_step_s: Final = 0.5
# How long a stopping child gets to exit before it is killed.
child_exit_timeout_s: Final = 5.0
# The child's niceness, added to the gateway's: on the 2-core machine its
# CPU competed with the gateway's threads, and charges/s during a pass were
# 78%..108% of idle (loadtest.bench_audit). The gateway's threads should
# win the CPU; a pass (228 s, deploy/README.md) had ~70 s to spare under
# its 5-minute bound. On a machine the gateway saturates the child gets
# ~a tenth of a core (Linux weights nice 10 at 110 to nice 0's 1024): the
# pass time bench_audit prints is the figure to watch.
audit_process_nice: Final = 10


class AuditSources(NamedTuple):
    """What the child reads: the ledger of record at `store_url`, and the
    copies it compares with it: the archive at `archive` (a directory or a
    gs:// URL; None: the reconciler compares the copies itself) and the read
    model at `read_model_url` (None: the read model is the store)."""

    store_url: str
    archive: str | None = None
    read_model_url: str | None = None


class StartLog(NamedTuple):
    """Begin an audit of the log up to its current head."""

    jwks: Mapping[str, object]
    last: AuditState | None
    page_receipts: int


class AdvanceLog(NamedTuple):
    """Audit about `leaves` more leaves of the run StartLog began."""

    leaves: int


class AuditOne(NamedTuple):
    """Audit one customer (`actors.integrity._audit.audit_customer`), and
    compare its copies if the child has them: the answer's value is the
    CustomerAudit and the CopyReport (None: not compared)."""

    jwks: Mapping[str, object]
    customer_id: str


class Answer(NamedTuple):
    """The child's reply: `value` (tree size, AuditReport | None with the
    leaves done, or a CustomerAudit), or `error` ("ledger" or "jwks" and
    its text); `cpu_s` the CPU time the request took in the child."""

    value: Any
    cpu_s: float
    error: tuple[str, str] | None = None


class AuditProcessLost(StoreUnavailable):
    """The audit's child process died, hung or could not start."""


class AuditProcess:
    """The reconciler's end: starts the child on first use, sends one request
    at a time (from the reconciler's one audit thread), and restarts the
    child after it is lost."""

    def __init__(
        self, sources: AuditSources, restarts: Counter, stopping: threading.Event
    ) -> None:
        self._sources = sources
        self._restarts = restarts
        self._stopping = stopping
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._started = 0  # children started, for the log
        self.generation = 0  # bumped per child: a log run lives in one child

    def ask(
        self, request: object, generation: int | None = None, timeout_s: float = reply_timeout_s
    ) -> Answer:
        """Send `request`, wait for the answer; AuditProcessLost if the child
        is gone or does not answer in time (it is then killed), or if it is
        not the `generation` that holds the state the request needs."""
        conn = self._ensure_started()
        if generation is not None and generation != self.generation:
            raise AuditProcessLost("the audit process restarted during a log run")
        try:
            conn.send(request)
            answer = self._receive(conn, timeout_s)
        except (OSError, EOFError) as error:
            self._lose(f"pipe: {error!r}")
            raise AuditProcessLost(f"the audit process is gone ({error!r})") from error
        if not isinstance(answer, Answer):
            self._lose(f"unexpected answer {type(answer).__name__}")
            raise AuditProcessLost("the audit process answered out of turn")
        return answer

    def close(self) -> None:
        """Ask the child to exit (its pipe closes), then kill it if it lingers."""
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(child_exit_timeout_s)
            if process.is_alive():
                process.kill()
                process.join(child_exit_timeout_s)

    def _receive(self, conn: Connection, timeout_s: float) -> object:
        deadline = time.monotonic() + timeout_s
        while not conn.poll(min(poll_step_s, max(0.0, deadline - time.monotonic()))):
            if self._stopping.is_set():
                self._lose("stopping")  # the answer would come too late to use
                raise AuditProcessLost("the reconciler is stopping")
            if self._process is None or not self._process.is_alive():
                raise EOFError("the audit process exited")
            if time.monotonic() >= deadline:
                self._lose(f"no answer within {timeout_s:g} s")
                raise AuditProcessLost(f"the audit process did not answer within {timeout_s:g} s")
        return conn.recv()

    def _ensure_started(self) -> Connection:
        if self._process is not None and self._conn is not None:
            if self._process.is_alive():
                return self._conn
            self._lose(f"exit code {self._process.exitcode}")
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(
            target=serve_audits, args=(child_end, self._sources, os.getpid()),
            name="billing-audit", daemon=True,
        )
        process.start()
        child_end.close()
        self._process, self._conn = process, parent_end
        self._started += 1
        self.generation += 1
        if self._started > 1:
            self._restarts.inc()
        try:
            ready = self._receive(parent_end, start_timeout_s)
        except (OSError, EOFError) as error:
            self._lose(f"start: {error!r}")
            raise AuditProcessLost(f"the audit process did not start ({error!r})") from error
        if isinstance(ready, Answer) and ready.error is not None:
            self._lose(f"start: {ready.error[1]}")
            raise AuditProcessLost(f"the audit process cannot read the ledger: {ready.error[1]}")
        log.info("reconciler.audit_process_started", pid=process.pid, restarts=self._started - 1)
        return parent_end

    def _lose(self, reason: str) -> None:
        process = self._process
        log.warning("reconciler.audit_process_lost", reason=reason,
                    pid=None if process is None else process.pid,
                    exit_code=None if process is None else process.exitcode)
        if process is not None and process.is_alive():
            process.kill()
        self.close()


class RemoteLogRun:
    """`ledger.log_audit.LogAuditRun`'s surface, the work done in the child:
    the reconciler's round advances it a page at a time and paces itself
    after each (`on_page`, with the CPU time the page took there)."""

    def __init__(
        self,
        process: AuditProcess,
        jwks: Mapping[str, object],
        last: AuditState | None,
        page_receipts: int,
        on_page: Callable[[float], None],
    ) -> None:
        self._process = process
        self._page = page_receipts
        self._on_page = on_page
        answer = _value(process.ask(StartLog(jwks, last, page_receipts)))
        self._generation = process.generation
        self.tree_size: int = answer.value
        self.leaves_done = 0

    def advance(self, leaves_max: int | None) -> AuditReport | None:
        goal = self.tree_size if leaves_max is None else self.leaves_done + max(1, leaves_max)
        while True:
            answer = _value(self._process.ask(AdvanceLog(self._page), self._generation))
            report, self.leaves_done = answer.value
            if report is not None:
                return report  # type: ignore[no-any-return]
            self._on_page(answer.cpu_s)
            if self.leaves_done >= goal:
                return None


class RemoteAudit(NamedTuple):
    """One customer's audit in the child: its copies' report (None: the
    child does not read the copies) and the CPU time it took there."""

    audit: CustomerAudit
    copies: CopyReport | None
    cpu_s: float


def remote_audit(
    process: AuditProcess, jwks: Mapping[str, object], customer_id: str
) -> RemoteAudit:
    answer = _value(process.ask(AuditOne(jwks, customer_id)))
    audit, copies = answer.value
    if not isinstance(audit, CustomerAudit):
        raise AuditProcessLost("the audit process answered out of turn")
    return RemoteAudit(audit, copies, answer.cpu_s)


def _value(answer: Answer) -> Answer:
    """The answer, or the error the child met raised here as it would be in process."""
    if answer.error is None:
        return answer
    kind, text = answer.error
    if kind == "jwks":
        raise JWKSError(text)
    raise StoreUnavailable(f"the audit process: {text}")


# -- the child ----------------------------------------------------------------
def serve_audits(conn: Connection, sources: AuditSources, parent_pid: int) -> None:
    """The child's main: open the ledger (and the copies) read-only, then
    answer requests until the pipe closes or the parent is gone. An
    unexpected exception ends the child (the parent sees the pipe close,
    logs and restarts it)."""
    # Ctrl-C in a terminal reaches the whole group: the gateway stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority()
    closers: list[Callable[[], None]] = []
    try:
        store = open_read_only(sources.store_url)
        closers.append(store.close)
        copies = _open_copies(sources, store, closers)
    except (LedgerError, ValueError) as error:
        conn.send(Answer(None, 0.0, ("ledger", repr(error))))
        for close in reversed(closers):
            close()
        return
    conn.send(Answer(os.getpid(), 0.0))
    worker = _Worker(store, copies)
    try:
        while True:
            if not conn.poll(poll_step_s):
                if os.getppid() != parent_pid:
                    return  # orphaned: nobody reads the answers
                continue
            try:
                request = conn.recv()
            except EOFError:
                return
            conn.send(worker.answer(request))
    finally:
        for close in reversed(closers):
            close()


def _lower_priority() -> None:
    """Yield the CPU to the gateway (`audit_process_nice`), where the
    platform can: a child at the gateway's priority still audits."""
    nice = getattr(os, "nice", None)  # not on Windows
    if nice is None:
        return
    try:
        nice(audit_process_nice)
    except OSError as error:
        log.warning("reconciler.audit_process_nice_failed", error=repr(error))


def _open_copies(
    sources: AuditSources, store: Any, closers: list[Callable[[], None]]
) -> tuple[ReceiptReadModel, ReceiptArchive] | None:
    if sources.archive is None:
        return None
    archive = open_archive(sources.archive)
    closers.append(archive.close)
    if sources.read_model_url is None:
        return store, archive  # compare_copies skips the store as its own copy
    read_model = open_read_model(sources.read_model_url)
    closers.append(read_model.close)
    return read_model, archive


class _Worker:
    def __init__(self, store: Any, copies: tuple[ReceiptReadModel, ReceiptArchive] | None) -> None:
        self._store = store
        self._copies = copies
        self._proofs = LogProofs(store)
        self._run: LogAuditRun | None = None
        self._keys: tuple[str, TrustedKeys] | None = None

    def answer(self, request: object) -> Answer:
        started = time.process_time()
        try:
            value = self._do(request)
        except JWKSError as error:
            return Answer(None, time.process_time() - started, ("jwks", str(error)))
        except LedgerError as error:
            self._run = None  # a failed run proves nothing
            return Answer(None, time.process_time() - started, ("ledger", repr(error)))
        return Answer(value, time.process_time() - started)

    def _do(self, request: object) -> Any:
        if isinstance(request, StartLog):
            self._run = LogAuditRun(self._store, self._trusted(request.jwks), request.last,
                                    page_receipts=request.page_receipts)
            return self._run.tree_size
        if isinstance(request, AdvanceLog):
            if self._run is None:
                raise StoreUnavailable("no log run under way")
            report = self._run.advance(request.leaves)
            return report, self._run.leaves_done
        if isinstance(request, AuditOne):
            keys = self._trusted(request.jwks)
            ledger = None  # without copies to compare, the audit streams the receipts
            if self._copies is not None:
                ledger = LedgerReceipts(self._store, request.customer_id)
            audit = audit_customer(self._store, keys, request.customer_id, self._proofs, ledger)
            copies = None
            if self._copies is not None:
                read_model, archive = self._copies
                copies = compare_copies(self._store, read_model, archive, request.customer_id,
                                        repair=False, keep_missing=True, ledger=ledger)
            return audit, copies
        raise TypeError(f"unknown audit request {type(request).__name__}")

    def _trusted(self, jwks: Mapping[str, object]) -> TrustedKeys:
        text = json.dumps(jwks, sort_keys=True)
        if self._keys is None or self._keys[0] != text:
            self._keys = (text, TrustedKeys(jwks))
        return self._keys[1]
