"""What the Stripe routes share: their dependencies, the per-app state the
route tables read through an AppKey, and how a Stripe failure is answered.

Blocking calls (store, Stripe) run on the gateway's executor
(`Services.blocking`), like every other route's. Stripe calls wait on the
network for seconds, so only a few may hold its threads at once (the charge
path's store calls must still find one), and past a bound of waiting calls
the route answers 503 with Retry-After instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

import stripe
import structlog
from aiohttp import web

from actors.stripe._metrics import StripeMetrics
from actors.stripe._reconcile import Reconciler
from gateway.errors import ApiError
from gateway.stripe.settings import StripeSettings
from ledger import LedgerStore
from ledger.clock import utc_now_rfc3339
from ledger.limits import stripe_calls_inflight_max, stripe_calls_running_max

__all__ = [
    "STRIPE",
    "Blocking",
    "RouteError",
    "StripeContext",
    "StripeDeps",
    "not_configured",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

_EMAIL_LOCKS: Final = 64
RETRY_AFTER_S: Final = 5

# Runs a blocking function off the event loop: `Services.blocking`.
Blocking = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class StripeDeps:
    """What the Stripe routes need; built by the composition root.

    `stripe` is None when Stripe is not configured (routes answer 503).
    `reconciler` should be the one StripeSync uses (shared per-customer
    locks); one is built from `on_entitlement_changed` when omitted.
    """

    settings: StripeSettings
    store: LedgerStore
    stripe: stripe.StripeClient | None
    wake_sync: Callable[[], None]
    metrics: StripeMetrics
    reconciler: Reconciler | None = None
    on_entitlement_changed: Callable[[str], None] = field(default=lambda _customer_id: None)
    clock: Callable[[], str] = utc_now_rfc3339


class RouteError(ApiError):
    """An ApiError whose Stripe `type` is chosen here (ApiError maps 409 to
    idempotency_error, which a trial conflict is not)."""

    def __init__(self, status: int, code: str, message: str, *, type_: str,
                 param: str | None = None) -> None:
        super().__init__(status, code, message, param=param)
        self._type = type_

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["type"] = self._type
        return body


def not_configured(what: str) -> ApiError:
    return ApiError(503, "stripe_not_configured", f"{what} is not configured on this server")


def _stripe_failure(error: stripe.StripeError) -> ApiError:
    """Map a Stripe failure to our answer without echoing Stripe's text."""
    if isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)):
        return ApiError(503, "stripe_unavailable", "Stripe could not be reached; retry later",
                        retry_after_s=RETRY_AFTER_S)
    return ApiError(502, "stripe_error", "Stripe refused the request; see the server logs")


class _StripeCalls:
    """The bound on Stripe route calls over the shared executor."""

    def __init__(self, blocking: Blocking) -> None:
        self._blocking = blocking
        self._running = asyncio.Semaphore(stripe_calls_running_max)
        self._inflight = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._inflight >= stripe_calls_inflight_max:
            raise ApiError(503, "overloaded", "too many billing requests in flight",
                           retry_after_s=RETRY_AFTER_S)
        self._inflight += 1
        try:
            async with self._running:
                return cast(T, await self._blocking(functools.partial(fn, *args)))
        except stripe.StripeError as error:
            log.warning("stripe_routes.stripe_error", error=type(error).__name__,
                        request_id=error.request_id)
            raise _stripe_failure(error) from None
        finally:
            self._inflight -= 1


@dataclass
class StripeContext:
    """One app's Stripe route state, read by the handlers as `request.app[STRIPE]`."""

    deps: StripeDeps
    reconciler: Reconciler | None
    calls: _StripeCalls
    email_locks: tuple[asyncio.Lock, ...]

    @classmethod
    def build(cls, deps: StripeDeps, blocking: Blocking) -> StripeContext:
        reconciler = deps.reconciler
        if reconciler is None and deps.stripe is not None:
            reconciler = Reconciler(
                store=deps.store, stripe_client=deps.stripe, plans=deps.settings.plans,
                entitlement_id=deps.settings.entitlement_id,
                on_entitlement_changed=deps.on_entitlement_changed, metrics=deps.metrics,
                clock=deps.clock,
            )
        locks = tuple(asyncio.Lock() for _ in range(_EMAIL_LOCKS))
        return cls(deps, reconciler, _StripeCalls(blocking), locks)

    @property
    def settings(self) -> StripeSettings:
        return self.deps.settings

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` off the loop, a Stripe failure answered as a 502/503."""
        return await self.calls.run(fn, *args)

    def client(self) -> stripe.StripeClient:
        if self.deps.stripe is None or not self.settings.enabled:
            raise not_configured("Stripe")
        return self.deps.stripe

    def email_lock(self, email: str) -> asyncio.Lock:
        """One signup per email at a time in this process."""
        return self.email_locks[hashlib.sha256(email.encode()).digest()[0] % _EMAIL_LOCKS]


STRIPE: Final = web.AppKey("stripe", StripeContext)
