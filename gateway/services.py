"""What the HTTP handlers need, built once by the composition root and
shared through a typed AppKey."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import pykka
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from actors import tickets
from actors.accounts import AccountDirectory
from actors.charges import ChargeBatch, ChargeCommand, ChargeOutcome
from actors.integrity.halts import public_halt_reason
from actors.pipeline import Unavailable
from actors.tickets import TicketBatch
from crypto import KeyRing, NoteKey
from gateway.admission import Admission
from gateway.auth import ApiKeyCache
from gateway.http_metrics import HttpMetrics
from gateway.settings import Settings
from gateway.validation import EventRequest
from ledger import (
    HaltIncident,
    IntegrityHalts,
    LedgerError,
    LedgerStore,
    ReceiptReadModel,
    RequestRecord,
)
from ledger.log_proofs import LogProofs
from supervisor import SupervisorError, SupervisorHandle

T = TypeVar("T")

log = structlog.get_logger(__name__)

# Where the middleware leaves the request's id (X-Request-Id) for handlers.
REQUEST_ID: Final = web.RequestKey("billing.request_id", str)


@dataclass
class Readiness:
    """Whether charges are accepted: the tree is up, the store writable, no
    integrity incident is open in the store, and no drain is in progress.

    `ready()` is on the hot path and only reads flags; `refresh()` does the
    real checks and runs off the event loop (a store check waits behind the
    ledger writer's lock, which must never stall the loop or fail a charge).
    It runs every second, so an incident recorded by any gateway on the
    store, or cleared by an operator, reaches this one within seconds.
    Built before the supervision tree: the tree's start and stop set
    `tree_up`, its escalation calls `escalated`.
    """

    store_writable: Callable[[], bool]
    open_halts: Callable[[], list[HaltIncident]] = list
    tree_up: bool = False
    # The supervision tree escalated: this process is going down (in memory).
    halted_reason: str | None = None
    # The oldest open integrity incident of the store, as of the last refresh.
    halt: HaltIncident | None = None
    draining: bool = False
    _healthy: bool = False

    def refresh(self) -> bool:
        healthy = self.tree_up and self.store_writable()
        try:
            halts = self.open_halts()
        except LedgerError:
            healthy = False  # whether a halt is in force is unknown: not ready
        else:
            self.halt = halts[0] if halts else None
        self._healthy = healthy
        return healthy

    def escalated(self, reason: str) -> None:
        """The root supervisor gave up (its escalation callback): not ready
        until this process is restarted."""
        log.critical("billing.escalated", reason=reason)
        self.tree_up = False
        self.halted_reason = f"supervision tree stopped: {reason}"

    def halted(self, incident: HaltIncident) -> None:
        """An incident this process just recorded: effective now, not at the
        next refresh."""
        if self.halt is None:
            self.halt = incident

    def ready(self) -> bool:
        return (
            self._healthy
            and self.halt is None
            and self.halted_reason is None
            and not self.draining
        )

    def public_reason(self) -> str:
        """Why charges are refused, in words anyone may read: the incident id
        of a halt, never whose ledger or which receipt (the admin route has that)."""
        if self.halt is not None:
            return public_halt_reason(self.halt)
        if self.halted_reason is not None:
            return "the supervision tree stopped"
        if self.draining:
            return "draining"
        return "not ready"


@dataclass
class Services:
    settings: Settings
    store: LedgerStore
    read_model: ReceiptReadModel
    directory: AccountDirectory
    key_ring: KeyRing
    registry: CollectorRegistry
    metrics: HttpMetrics
    admission: Admission
    api_keys: ApiKeyCache
    readiness: Readiness
    executor: concurrent.futures.ThreadPoolExecutor
    log_proofs: LogProofs
    note_key: NoteKey
    halts: IntegrityHalts
    # The root supervisor: the admin routes show its tree and ask its reconciler.
    tree: SupervisorHandle
    jwks_body: bytes = b""

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop, on the bounded executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def account_ref(self, customer_id: str) -> pykka.ActorRef[Any] | None:
        """The customer's live actor, started off the loop if needed; None while
        the accounts supervisor is restarting."""
        ref = self.directory.lookup(customer_id)
        if ref is not None:
            return ref
        try:
            return await self.blocking(self.directory.ensure, customer_id)
        except (Unavailable, SupervisorError):  # the tree is restarting or stopped
            return None

    def submit(
        self,
        events: Sequence[EventRequest],
        ref: pykka.ActorRef[Any] | None,
        request: RequestRecord | None = None,
    ) -> asyncio.Future[list[ChargeOutcome]]:
        """Queue one customer's charges on its actor as one message; the future
        resolves once every one is durable (or refused), with one outcome per
        event in order. One hop into the actor and one back per call; every
        answer, failures and the deadline included, comes through the tickets."""
        batch, answered = TicketBatch.awaited(
            len(events), asyncio.get_running_loop(), self.settings.request_timeout_ms / 1000.0
        )
        if ref is None:
            batch.fail_unsettled(tickets.ACCOUNT_RESTARTING)
            return answered
        commands = tuple(
            ChargeCommand(
                customer_id=event.customer_id,
                idempotency_key=event.idempotency_key,
                entitlement_id=event.entitlement_id,
                amount_minor=event.amount_minor,
                currency=event.currency,
                usage_description=event.usage_description,
                event_timestamp=event.event_timestamp,
                ticket=ticket,
                reverses=event.reverses,
                request=request,
            )
            for event, ticket in zip(events, batch.issue(), strict=True)
        )
        tickets.ask(ref, ChargeBatch(commands), batch)
        return answered

    async def charge(
        self, event: EventRequest, request: RequestRecord | None = None
    ) -> ChargeOutcome:
        """Send one charge to its account actor and wait for the durable answer."""
        ref = await self.account_ref(event.customer_id)
        (outcome,) = await self.submit([event], ref, request)
        return outcome


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
