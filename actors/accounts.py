"""The account directory: finds or starts a customer's actor under the
`accounts` dynamic supervisor, and passivates actors that sat idle so the
memory held for customers stays bounded (the actors share a few scheduler
threads: see `supervisor._scheduled`)."""

from __future__ import annotations

import contextlib
import heapq
import time
from collections.abc import Callable
from typing import Any

import pykka
import structlog

from actors.account import AccountActor, AccountDeps, InjectFault, Reload
from actors.pipeline import Unavailable
from ledger import LedgerError, limits
from supervisor import DynamicSupervisor, Link

log = structlog.get_logger(__name__)


class LiveAccounts:
    """The running `accounts` supervisor, as its child spec last started it
    (each incarnation registers itself, as the stages do with the Pipeline),
    and the customers' live actors under it. Built before the tree, so what
    reloads an actor (a failed commit, a changed entitlement) needs no
    directory."""

    def __init__(self) -> None:
        self._supervisor: DynamicSupervisor | None = None

    def start(self, link: Link, **options: Any) -> DynamicSupervisor:
        """The `accounts` child's start function: `options` as DynamicSupervisor.start's."""
        supervisor = DynamicSupervisor.start(name="accounts", link=link, **options)
        self._supervisor = supervisor
        return supervisor

    def current(self) -> DynamicSupervisor | None:
        """The running incarnation; None while it restarts (or after the tree stopped)."""
        supervisor = self._supervisor
        return supervisor if supervisor is not None and supervisor.is_running else None

    def lookup(self, customer_id: str) -> pykka.ActorRef[Any] | None:
        """The live actor, without starting one (cheap: safe on the event loop)."""
        supervisor = self.current()
        if supervisor is None:
            return None
        ref = supervisor.lookup(customer_id)
        if ref is None or not ref.is_alive():
            return None
        return ref

    def reload(self, customer_id: str) -> None:
        """Make a live actor reload from the store; a passive one loads anyway."""
        ref = self.lookup(customer_id)
        if ref is None:
            return
        with contextlib.suppress(pykka.ActorDeadError):
            ref.tell(Reload())


class AccountDirectory:
    def __init__(
        self,
        deps: AccountDeps,
        accounts: LiveAccounts,
        idle_s: float,
        stop_timeout_ms: int = 5_000,
        check_before_use: Callable[[str], bool] = lambda customer_id: True,
        live_max: int | None = None,
    ) -> None:
        self._deps = deps
        # The start-up audit of this account's head, if it has not run yet
        # (actors.integrity.startup_audit): False means the head is broken.
        self._check_before_use = check_before_use
        self._live_max = limits.account_actors_live_max if live_max is None else live_max
        self._accounts = accounts
        self._idle_s = idle_s
        self._stop_timeout_ms = stop_timeout_ms

    def _supervisor(self) -> DynamicSupervisor:
        supervisor = self._accounts.current()
        if supervisor is None:
            raise Unavailable("the accounts supervisor is restarting")
        return supervisor

    def lookup(self, customer_id: str) -> pykka.ActorRef[Any] | None:
        return self._accounts.lookup(customer_id)

    def reload(self, customer_id: str) -> None:
        self._accounts.reload(customer_id)

    def ensure(self, customer_id: str) -> pykka.ActorRef[Any]:
        """The live actor, started if needed (blocks briefly: call off the loop)."""
        ref = self.lookup(customer_id)
        if ref is not None:
            return ref
        try:
            healthy = self._check_before_use(customer_id)
        except LedgerError as error:
            raise Unavailable(f"the account could not be audited: {error}") from error
        if not healthy:
            raise Unavailable("integrity halt: this account's head failed its audit")
        deps = self._deps

        def start(link: Link) -> pykka.ActorRef[Any]:
            return AccountActor.start(link, customer_id, deps)

        return self._supervisor().start_child(customer_id, start)

    def inject_fault(self, customer_id: str, reason: str) -> bool:
        ref = self.lookup(customer_id)
        if ref is None:
            return False
        ref.tell(InjectFault(reason))
        return True

    def passivate_idle(self) -> int:
        """Stop actors idle for longer than `idle_s`, and the least recently
        active beyond `live_max` (a live actor holds ~13 KiB: 100,000 touched
        within `idle_s` held 2.6 GiB); returns how many were stopped."""
        supervisor = self._accounts.current()
        if supervisor is None:
            return 0
        cutoff = time.monotonic() - self._idle_s
        seen = list(self._deps.activity.items())
        candidates = [(at, cid) for cid, at in seen if at < cutoff]
        excess = len(seen) - len(candidates) - self._live_max
        if excess > 0:
            candidates += heapq.nsmallest(excess, ((at, cid) for cid, at in seen if at >= cutoff))
        stopped = 0
        batch_max = limits.passivation_batch_max
        for start in range(0, len(candidates), batch_max):
            # Busy again since (or already gone): left alone.
            chunk = tuple(cid for at, cid in candidates[start:start + batch_max]
                          if self._deps.activity.get(cid) == at)
            supervisor.terminate_children(chunk, timeout_ms=self._stop_timeout_ms)
            for customer_id in chunk:
                self._deps.activity.pop(customer_id, None)
            stopped += len(chunk)
        if stopped:
            self._deps.metrics.passivations.inc(stopped)
            log.info("accounts.passivated", count=stopped, over_live_max=max(0, excess))
        return stopped
