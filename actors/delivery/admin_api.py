"""AdminApiRelay: delivers entitlement changes to the Admin API, at least once.

Messages come from the durable outbox (topic `entitlement.admin_api`), written
by the Stripe reconciliation. Each message carries the customer's full
entitlement, so only the newest message per customer needs sending; older
ones are settled with it.

Wire format (Bearer admin token, JSON):
  GET   {base}/admin/users/email/{email}   200 user | 404
  POST  {base}/admin/users {"email"}       201 user | 409 already exists
  PATCH {base}/admin/users/{id}            {"max_concurrent_bots", "data": {"billing": {...}}}
A user is looked up before it is created and a create conflict counts as
found, so retries never create a duplicate user.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final

import orjson
import structlog

from actors.stripe._metrics import StripeMetrics
from actors.stripe._poll import Doorbell, PollingActor, RetryPolicy
from actors.stripe._reconcile import ADMIN_API_TOPIC
from ledger import LedgerStore, OutboxMessage
from ledger.clock import utc_now_rfc3339
from ledger.limits import admin_batch_max, admin_response_bytes_max
from supervisor import Link

__all__ = [
    "ADMIN_API_TOPIC",
    "AdminApiClient",
    "AdminApiError",
    "AdminApiRelay",
    "AdminApiRelayWorker",
    "RetryPolicy",
    "granted_bots",
]

log = structlog.get_logger(__name__)

admin_timeout_s: Final = 10.0
ADMIN_RETRY: Final = RetryPolicy(base_s=2.0, max_s=1800.0)


def granted_bots(entitlement: dict[str, Any]) -> int:
    """The bots an entitlement grants now: its plan's `max_bots` only while it
    is chargeable. A cancelled or unpaid subscription keeps its plan (for
    the record) but grants nothing, so the Admin API must be told 0."""
    if not entitlement.get("chargeable"):
        return 0
    bots = entitlement.get("max_bots")
    return bots if isinstance(bots, int) and not isinstance(bots, bool) and bots > 0 else 0


class AdminApiError(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")
        self.reason = reason
        self.status = status


class AdminApiClient:
    """Blocking JSON client with a timeout on every call."""

    def __init__(self, base_url: str, token: str, timeout_s: float = admin_timeout_s) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def __repr__(self) -> str:  # never show the token
        return f"AdminApiClient({self._base!r})"

    def _call(self, method: str, path: str, body: Any | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                status, raw = response.status, response.read(admin_response_bytes_max)
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read(admin_response_bytes_max)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise AdminApiError(f"unreachable: {type(error).__name__}") from error
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def find_user(self, email: str) -> dict[str, Any] | None:
        status, body = self._call("GET", "/admin/users/email/" + urllib.parse.quote(email, ""))
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise AdminApiError("find_user_failed", status)
        return body

    def ensure_user(self, email: str) -> dict[str, Any]:
        found = self.find_user(email)
        if found is not None:
            return found
        status, body = self._call("POST", "/admin/users", {"email": email})
        if status in (200, 201) and isinstance(body, dict):
            return body
        if status == 409:  # created meanwhile (by us on an earlier try, or by someone else)
            again = self.find_user(email)
            if again is not None:
                return again
        raise AdminApiError("create_user_failed", status)

    def patch_entitlements(self, user_id: Any, entitlement: dict[str, Any]) -> None:
        body = {"max_concurrent_bots": granted_bots(entitlement),
                "data": {"billing": entitlement}}
        status, _ = self._call("PATCH", f"/admin/users/{user_id}", body)
        if status not in (200, 204):
            raise AdminApiError("patch_failed", status)


class AdminApiRelayWorker:
    """One bounded batch per `run_once()`; driven by one AdminApiRelay thread."""

    def __init__(
        self,
        *,
        store: LedgerStore,
        client: AdminApiClient,
        metrics: StripeMetrics,
        batch_max: int = admin_batch_max,
        retry: RetryPolicy = ADMIN_RETRY,
        clock: Callable[[], str] = utc_now_rfc3339,
    ) -> None:
        self._store = store
        self._client = client
        self._metrics = metrics
        self._batch_max = batch_max
        self._retry = retry
        self._clock = clock

    def run_once(self) -> bool:
        messages = self._store.pending_outbox(ADMIN_API_TOPIC, self._clock(), self._batch_max)
        by_customer: dict[str, list[OutboxMessage]] = {}
        for message in messages:  # oldest first per ordering key
            by_customer.setdefault(message.ordering_key, []).append(message)
        for group in by_customer.values():
            self._deliver(group)
        return len(messages) >= self._batch_max

    def _deliver(self, group: list[OutboxMessage]) -> None:
        newest = group[-1]
        try:
            payload = orjson.loads(newest.payload)
            user = self._client.ensure_user(str(payload["email"]))
            self._client.patch_entitlements(user["id"], payload["entitlement"])
        except (AdminApiError, KeyError, TypeError, orjson.JSONDecodeError) as error:
            reason = error.reason if isinstance(error, AdminApiError) else "bad_message"
            self._metrics.admin_api_failures.labels(reason).inc()
            next_at = self._retry.next_attempt_at(self._clock(), newest.attempts)
            log.warning("admin_api.retry_later", customer_id=newest.ordering_key,
                        message_id=newest.message_id, attempts=newest.attempts + 1,
                        next_attempt_at=next_at, error=str(error))
            # Only the newest is retried: it supersedes the others.
            older = [m.message_id for m in group[:-1]]
            if older:
                self._store.outbox_delivered(older)
            self._store.outbox_retry_later(newest.message_id, str(error)[:500], next_at)
            return
        self._store.outbox_delivered([m.message_id for m in group])
        self._metrics.admin_api_delivered.inc()
        log.info("admin_api.delivered", customer_id=newest.ordering_key,
                 status=payload["entitlement"].get("status"))


class AdminApiRelay(PollingActor):
    """Supervised actor driving AdminApiRelayWorker.

    `AdminApiRelay.start(link, store=..., client=AdminApiClient(url, token),
    metrics=..., doorbell=...)`.
    """

    def __init__(
        self,
        link: Link | None,
        *,
        store: LedgerStore,
        client: AdminApiClient,
        metrics: StripeMetrics,
        doorbell: Doorbell,
        poll_interval_s: float = 5.0,
        batch_max: int = admin_batch_max,
        retry: RetryPolicy = ADMIN_RETRY,
    ) -> None:
        super().__init__(link, doorbell, poll_interval_s)
        self._worker = AdminApiRelayWorker(
            store=store, client=client, metrics=metrics, batch_max=batch_max, retry=retry
        )

    def poll_once(self) -> bool:
        return self._worker.run_once()
