"""Locust scenarios for Vexa Billing.

Pick one by class name or by tag (both are the scenario's name):

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 SteadyUser
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --tags retry_storm

| class | tag | what it does |
|---|---|---|
| SteadyUser | steady | paced traffic spread over `--customers` customers, some batches |
| HotCustomerUser | hot | every user charges one customer as fast as it can |
| RetryStormUser | retry_storm | resends each key (serially and concurrently); never two charges |
| OverloadUser | overload | bursts of concurrent charges on a few customers; expects 429s |
| WebhookMixUser | webhook_mix | charges mixed with signed Stripe webhook deliveries |

Every scenario creates its own customers, API keys and entitlements through the
admin API (`--admin-token` or env `BILLING_ADMIN_TOKEN`) and appends what it
saw to `--results-file` (JSON lines) for `python -m loadtest.check`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import secrets
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import gevent
import gevent.lock
import gevent.pool
import orjson
from locust import FastHttpUser, between, constant, constant_throughput, events, tag, task
from locust.env import Environment
from locust.exception import StopUser

log = logging.getLogger("loadtest")

SCENARIOS = ("steady", "hot", "retry_storm", "overload", "webhook_mix")
ENTITLEMENT_ID = "api_calls"
CURRENCY = "USD"
# Amounts as the API takes them: decimal strings, never floats.
AMOUNTS = ("0.01", "0.25", "1.00", "2.50")
# Customers created at the same time during setup.
setup_concurrency_max = 8
# Attempts per key when the service answers 429 (then the key is given up).
retry_attempts_max = 5
# A Retry-After longer than this is shortened so a short run still ends on time.
retry_after_s_max = 1.0
# Events per batch request.
batch_events = 10
# A signed webhook whose delivery is then repeated, as Stripe does on retries.
webhook_repeat_ratio = 0.2

_RUN_ID = secrets.token_hex(4)
_results_lock = threading.Lock()
_results_fd: int | None = None
_pools: dict[str, list[dict[str, Any]]] = {}
_pool_lock = gevent.lock.BoundedSemaphore(1)
_user_serial = 0
_tallies: Counter[str] = Counter()
_setup_error: list[str] = []


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("BILLING_ADMIN_TOKEN", ""),
        is_secret=True,
        help="admin bearer token (default: env BILLING_ADMIN_TOKEN)",
    )
    parser.add_argument(
        "--results-file",
        default=os.environ.get("LOADTEST_RESULTS", "loadtest/reports/results.jsonl"),
        help="JSON-lines file of customers and outcomes for loadtest.check",
    )
    parser.add_argument(
        "--customers", type=int, default=50, help="customers of the steady/webhook pool"
    )
    parser.add_argument("--user-rate", type=float, default=10.0, help="steady: requests/s per user")
    parser.add_argument(
        "--burst", type=int, default=50, help="overload: concurrent requests per user burst"
    )
    parser.add_argument(
        "--hot-quota",
        default="",
        help="hot: hard quota of the hot customer, e.g. 50.00 (default: unlimited)",
    )
    parser.add_argument(
        "--requests-per-user-max",
        type=int,
        default=100_000,
        help="each user stops after this many requests (runs are also bounded by -t)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("STRIPE_WEBHOOK_SECRET", ""),
        is_secret=True,
        help="webhook_mix: the service's Stripe webhook signing secret"
        " (default: env STRIPE_WEBHOOK_SECRET)",
    )


@events.init.add_listener
def _select_scenarios(environment: Environment, **_kwargs: Any) -> None:
    """Let `--tags` pick whole scenarios: drop classes left with no tasks."""
    options = environment.parsed_options
    tags = set(getattr(options, "tags", None) or ())
    if tags:
        unknown = tags - set(SCENARIOS)
        if unknown:
            log.warning("loadtest.unknown_tags %s (scenarios: %s)", sorted(unknown), SCENARIOS)
        environment.user_classes[:] = [
            cls for cls in environment.user_classes if getattr(cls, "scenario", None) in tags
        ]


@events.test_start.add_listener
def _open_results(environment: Environment, **_kwargs: Any) -> None:
    global _results_fd
    path = getattr(environment.parsed_options, "results_file", "") or ""
    if not path or _results_fd is not None:
        return
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # O_APPEND + one write per line: lines from several processes never interleave.
    _results_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


@events.test_stop.add_listener
def _report(environment: Environment, **_kwargs: Any) -> None:
    global _results_fd
    if _results_fd is not None:
        os.close(_results_fd)
        _results_fd = None
    if _setup_error:
        log.error("loadtest.setup_failed: %s", _setup_error[0])
    if _tallies:
        print("loadtest tallies: " + ", ".join(f"{k}={v}" for k, v in sorted(_tallies.items())))
    if _tallies["overload.sent"] and not _tallies["status.429"]:
        print(
            "loadtest overload: no 429 seen - the offered load stayed inside the service's"
            " admission bounds; raise -u or --burst, or lower BILLING_ADMISSION_QUEUE_MAX"
        )


def record(item: dict[str, Any]) -> None:
    if _results_fd is None:
        return
    line = orjson.dumps(item) + b"\n"
    with _results_lock:
        os.write(_results_fd, line)


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stripe_signature(secret: str, payload: bytes, timestamp: int) -> str:
    """The `Stripe-Signature` header value for `payload` (Stripe's v1 scheme)."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class BillingUser(FastHttpUser):
    """Shared machinery: customer setup, event posting, outcome recording."""

    abstract = True
    scenario = ""
    # Customers this scenario shares among its users (per Locust process).
    pool_size = 1
    quota: str | None = None
    policy = "soft"

    def on_start(self) -> None:
        global _user_serial
        _user_serial += 1
        self.serial = _user_serial
        self.counter = 0
        options = self.environment.parsed_options
        self.requests_max = int(getattr(options, "requests_per_user_max", 100_000))
        self.customers = self._pool()

    # -- setup -------------------------------------------------------------

    def _admin_headers(self) -> dict[str, str]:
        token = getattr(self.environment.parsed_options, "admin_token", "") or ""
        if not token:
            self._fail_setup("no admin token: pass --admin-token or set BILLING_ADMIN_TOKEN")
        return {"Authorization": f"Bearer {token}"}

    def _fail_setup(self, message: str) -> None:
        if not _setup_error:
            _setup_error.append(message)
            log.error("loadtest.setup_failed: %s", message)
        runner = self.environment.runner
        if runner is not None:
            gevent.spawn(runner.quit)
        raise StopUser()

    def _pool_key(self) -> str:
        return self.scenario

    def _pool_count(self) -> int:
        return self.pool_size

    def _pool(self) -> list[dict[str, Any]]:
        key = self._pool_key()
        with _pool_lock:  # the first user creates the pool, the others wait for it
            if _setup_error:
                raise StopUser()
            if key not in _pools:
                count = self._pool_count()
                group = gevent.pool.Pool(setup_concurrency_max)
                customers = group.map(lambda i: self._create_customer(key, i), range(count))
                _pools[key] = customers
            return _pools[key]

    def _admin(self, method: str, path: str, body: dict[str, Any], name: str) -> Any:
        with self.client.request(
            method,
            path,
            data=orjson.dumps(body),
            headers={**self._admin_headers(), "Content-Type": "application/json"},
            name=name,
            catch_response=True,
        ) as resp:
            if resp.status_code not in (200, 201):
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")
                self._fail_setup(
                    f"{method} {name} -> {resp.status_code}: {(resp.text or '')[:200]}"
                )
            return orjson.loads(resp.content or b"{}")

    def _create_customer(self, pool: str, index: int) -> dict[str, Any]:
        wanted = f"lt_{_RUN_ID}_{pool}_{index}"
        created = self._admin(
            "POST",
            "/v1/customers",
            {"customer_id": wanted, "email": f"{wanted}@127.0.0.1", "currency": CURRENCY},
            "admin: POST /v1/customers",
        )
        customer_id = str(created.get("customer_id") or wanted)
        key = self._admin(
            "POST", f"/v1/customers/{customer_id}/api-keys", {}, "admin: POST api-keys"
        )
        api_key = str(key["api_key"])
        self._admin(
            "PUT",
            f"/v1/customers/{customer_id}/entitlements/{ENTITLEMENT_ID}",
            {"quota": self.quota, "policy": self.policy, "status": "active"},
            "admin: PUT entitlement",
        )
        customer = {
            "t": "customer",
            "scenario": pool,
            "customer_id": customer_id,
            "api_key": api_key,
            "entitlement_id": ENTITLEMENT_ID,
            "currency": CURRENCY,
            "quota": self.quota,
            "policy": self.policy,
        }
        record(customer)
        return customer

    # -- charging ----------------------------------------------------------

    def _next_key(self) -> str:
        self.counter += 1
        if self.counter > self.requests_max:
            raise StopUser()
        return f"lt-{_RUN_ID}-{self.scenario}-{self.serial}-{self.counter}"

    def _event(
        self, customer: dict[str, Any], key: str | None = None, amount: str | None = None
    ) -> dict[str, Any]:
        """A new event: a fresh idempotency key unless `key` is given."""
        key = key if key is not None else self._next_key()
        amount = amount if amount is not None else random.choice(AMOUNTS)
        return {
            "idempotent_key": key,
            "customer_id": customer["customer_id"],
            "entitlement_id": customer["entitlement_id"],
            "amount": amount,
            "currency": CURRENCY,
            "usage_description": f"loadtest {self.scenario}",
            "timestamp": _now_rfc3339(),
        }

    def _post(self, path: str, customer: dict[str, Any], body: bytes, name: str) -> Any:
        """POST as `customer`; the caller judges the answer (`catch_response`)."""
        return self.client.post(
            path,
            data=body,
            headers={
                "Authorization": f"Bearer {customer['api_key']}",
                "Content-Type": "application/json",
            },
            name=name,
            catch_response=True,
        )

    def _record_outcome(
        self,
        customer: dict[str, Any],
        key: str,
        status: int,
        receipt_id: str | None = None,
        replayed: bool = False,
    ) -> None:
        _tallies[f"status.{status}"] += 1
        record(
            {
                "t": "outcome",
                "customer_id": customer["customer_id"],
                "key": key,
                "status": status,
                "receipt_id": receipt_id,
                "replayed": replayed,
            }
        )

    def post_event(
        self, customer: dict[str, Any], event: dict[str, Any], *, expect_replay: bool = False
    ) -> tuple[int, str | None, float]:
        """POST one event (a retry must send the very same `event`); records it.
        Returns (status, receipt_id, retry_after_s)."""
        cid = customer["customer_id"]
        key, amount = event["idempotent_key"], event["amount"]
        body = orjson.dumps(event)
        record({"t": "sent", "customer_id": cid, "key": key, "amount": amount})
        status, receipt_id, retry_after_s, replayed = 0, None, 0.0, False
        try:
            with self._post("/v1/events", customer, body, "POST /v1/events") as resp:
                status = int(resp.status_code or 0)
                replayed = (resp.headers or {}).get("Idempotent-Replayed", "") == "true"
                if status in (200, 202):
                    payload = orjson.loads(resp.content or b"{}")
                    receipt_id = payload.get("receipt_id")
                    if not receipt_id:
                        resp.failure(f"{status} without receipt_id")
                    elif expect_replay and not replayed:
                        resp.failure("replay not marked Idempotent-Replayed: true")
                    else:
                        resp.success()
                    if replayed:
                        resp.request_meta["name"] = "POST /v1/events (replay)"
                elif status == 429:
                    retry_after = (resp.headers or {}).get("Retry-After")
                    if retry_after is None:
                        resp.failure("429 without Retry-After")
                    else:
                        retry_after_s = min(float(retry_after), retry_after_s_max)
                        resp.success()
                    resp.request_meta["name"] = "POST /v1/events (429)"
                elif status == 402 and self.quota is not None:
                    resp.success()  # the hard quota was reached: refusing is correct
                    resp.request_meta["name"] = "POST /v1/events (402 quota)"
                else:
                    resp.failure(f"{status}: {(resp.text or '')[:200]}")
        finally:
            self._record_outcome(customer, key, status, receipt_id, replayed)
        return status, receipt_id, retry_after_s

    def charge(self, customer: dict[str, Any], event: dict[str, Any]) -> str | None:
        """POST until accepted, honouring Retry-After, at most `retry_attempts_max` times."""
        for _attempt in range(retry_attempts_max):
            status, receipt_id, retry_after_s = self.post_event(customer, event)
            if status != 429:
                return receipt_id
            gevent.sleep(retry_after_s)
        return None

    def post_batch(self, customer: dict[str, Any], count: int) -> None:
        """POST /v1/events/batch with `count` fresh keys; records each item."""
        cid = customer["customer_id"]
        events_out = []
        for _ in range(count):
            event = self._event(customer)
            events_out.append(event)
            record(
                {
                    "t": "sent",
                    "customer_id": cid,
                    "key": event["idempotent_key"],
                    "amount": event["amount"],
                }
            )
        statuses = [0] * count
        receipt_ids: list[str | None] = [None] * count
        try:
            body = orjson.dumps({"events": events_out})
            with self._post("/v1/events/batch", customer, body, "POST /v1/events/batch") as resp:
                if resp.status_code == 429:
                    statuses = [429] * count
                    resp.success()
                    resp.request_meta["name"] = "POST /v1/events/batch (429)"
                elif resp.status_code != 200:
                    resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")
                else:
                    results = orjson.loads(resp.content or b"{}").get("results") or []
                    if len(results) != count:
                        resp.failure(f"{len(results)} results for {count} events")
                    for index, item in enumerate(results[:count]):
                        statuses[index], receipt_ids[index] = _batch_item(item)
                    bad = [s for s in statuses if s not in (200, 202, 429)]
                    if bad:
                        resp.failure(f"batch items failed: {sorted(set(bad))}")
                    else:
                        resp.success()
        finally:
            for event, status, receipt_id in zip(events_out, statuses, receipt_ids, strict=True):
                self._record_outcome(customer, event["idempotent_key"], status, receipt_id)


def _batch_item(item: Any) -> tuple[int, str | None]:
    """(status, receipt_id) of one batch result, accepting a flat or nested receipt."""
    if not isinstance(item, dict):
        return 0, None
    status = item.get("status")
    status = int(status) if isinstance(status, int) else 0
    receipt = item.get("receipt")
    source = receipt if isinstance(receipt, dict) else item
    receipt_id = source.get("receipt_id")
    return status, str(receipt_id) if receipt_id else None


class SteadyUser(BillingUser):
    """Paced traffic over many customers; one request in ten is a small batch."""

    scenario = "steady"

    def wait_time(self) -> float:
        rate = float(getattr(self.environment.parsed_options, "user_rate", 10.0) or 10.0)
        return constant_throughput(rate)(self)

    def _pool_count(self) -> int:
        return int(getattr(self.environment.parsed_options, "customers", 50))

    @tag("steady")
    @task(9)
    def single(self) -> None:
        customer = random.choice(self.customers)
        self.charge(customer, self._event(customer))

    @tag("steady")
    @task(1)
    def batch(self) -> None:
        self.post_batch(random.choice(self.customers), batch_events)


class HotCustomerUser(BillingUser):
    """Every user charges the same customer back to back: one actor, full pressure."""

    scenario = "hot"
    wait_time = constant(0)

    def on_start(self) -> None:
        quota = getattr(self.environment.parsed_options, "hot_quota", "") or ""
        if quota:
            self.quota, self.policy = quota, "hard"
        super().on_start()

    @tag("hot")
    @task
    def single(self) -> None:
        self.charge(self.customers[0], self._event(self.customers[0]))


class RetryStormUser(BillingUser):
    """Clients that resend: the same key again, several copies at once, and a
    changed request under a used key. One key must never charge twice."""

    scenario = "retry_storm"
    pool_size = 10
    wait_time = between(0.0, 0.05)

    @tag("retry_storm")
    @task(3)
    def resend(self) -> None:
        customer = random.choice(self.customers)
        event = self._event(customer)
        original = self.charge(customer, event)
        if original is None:
            return
        for _ in range(random.randint(1, 3)):
            _status, replay_id, _ = self.post_event(customer, event, expect_replay=True)
            if replay_id is not None and replay_id != original:
                self._mismatch(event["idempotent_key"], original, replay_id)

    @tag("retry_storm")
    @task(2)
    def concurrent_duplicates(self) -> None:
        customer = random.choice(self.customers)
        event = self._event(customer)
        copies = [
            gevent.spawn(self.post_event, customer, event) for _ in range(random.randint(2, 4))
        ]
        gevent.joinall(copies, timeout=30)
        ids = {c.value[1] for c in copies if c.successful() and c.value and c.value[1]}
        if len(ids) > 1:
            self._mismatch(event["idempotent_key"], *sorted(ids)[:2])

    @tag("retry_storm")
    @task(1)
    def changed_request(self) -> None:
        customer = random.choice(self.customers)
        event = self._event(customer, amount="1.00")
        key = event["idempotent_key"]
        if self.charge(customer, event) is None:
            return
        body = orjson.dumps({**event, "amount": "2.50"})
        record({"t": "sent", "customer_id": customer["customer_id"], "key": key, "amount": None})
        name = "POST /v1/events (reused key, changed)"
        with self._post("/v1/events", customer, body, name) as resp:
            status = int(resp.status_code or 0)
            self._record_outcome(customer, key, status)
            if status in (409, 429):
                resp.success()
            else:
                resp.failure(f"expected 409 for a reused key, got {status}")

    def _mismatch(self, key: str, first: str, second: str) -> None:
        self.environment.events.request.fire(
            request_type="CHECK",
            name="replay returns the original receipt",
            response_time=0,
            response_length=0,
            exception=AssertionError(f"key {key}: {first} then {second}"),
            context={},
        )


class OverloadUser(BillingUser):
    """Bursts of concurrent charges on a few customers, beyond the admission bound:
    the service must shed load with 429 + Retry-After, never fail or hang."""

    scenario = "overload"
    pool_size = 2
    wait_time = constant(0)

    @tag("overload")
    @task
    def burst(self) -> None:
        size = int(getattr(self.environment.parsed_options, "burst", 50))
        jobs = []
        for _ in range(size):
            customer = random.choice(self.customers)
            _tallies["overload.sent"] += 1
            jobs.append(gevent.spawn(self.post_event, customer, self._event(customer)))
        gevent.joinall(jobs, timeout=60)


class WebhookMixUser(BillingUser):
    """Charges interleaved with signed Stripe webhook deliveries (some repeated)."""

    scenario = "webhook_mix"
    wait_time = between(0.01, 0.1)
    _warned = False
    _service_unconfigured = False

    def _pool_count(self) -> int:
        return max(1, int(getattr(self.environment.parsed_options, "customers", 50)) // 5)

    @tag("webhook_mix")
    @task(4)
    def single(self) -> None:
        customer = random.choice(self.customers)
        self.charge(customer, self._event(customer))

    @tag("webhook_mix")
    @task(1)
    def webhook(self) -> None:
        secret = getattr(self.environment.parsed_options, "webhook_secret", "") or ""
        if not secret:
            self._say_once(
                "webhook_mix: no webhook secret (--webhook-secret or STRIPE_WEBHOOK_SECRET):"
                " sending charges only"
            )
            return
        self.counter += 1
        event_id = f"evt_lt_{_RUN_ID}_{self.serial}_{self.counter}"
        customer = random.choice(self.customers)
        payload = orjson.dumps(
            {
                "id": event_id,
                "object": "event",
                "api_version": "2024-06-20",
                "created": int(time.time()),
                "type": "invoice.paid",
                "livemode": False,
                "data": {
                    "object": {
                        "id": f"in_lt_{_RUN_ID}_{self.counter}",
                        "object": "invoice",
                        "customer": f"cus_lt_{customer['customer_id']}",
                        "metadata": {"customer_id": customer["customer_id"]},
                    }
                },
            }
        )
        repeats = 2 if random.random() < webhook_repeat_ratio else 1
        for delivery in range(repeats):
            if WebhookMixUser._service_unconfigured:
                return
            self._deliver(payload, secret, redelivery=delivery > 0)

    def _deliver(self, payload: bytes, secret: str, *, redelivery: bool) -> None:
        signature = _stripe_signature(secret, payload, int(time.time()))
        name = "POST /v1/stripe/webhook" + (" (redelivery)" if redelivery else "")
        with self.client.post(
            "/v1/stripe/webhook",
            data=payload,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
            name=name,
            catch_response=True,
        ) as resp:
            status = int(resp.status_code or 0)
            _tallies[f"webhook.{status}"] += 1
            content = resp.content or b""
            if 200 <= status < 300:
                answer = orjson.loads(content or b"{}")
                # Stripe redelivers the same event id; the service must notice.
                if redelivery and answer.get("duplicate") is False:
                    resp.failure("a redelivered event was not recognised as a duplicate")
                else:
                    resp.success()
            elif status == 429:
                resp.success()
                resp.request_meta["name"] = "POST /v1/stripe/webhook (429)"
            elif status in (404, 501, 503) and b"webhook" in content.lower():
                WebhookMixUser._service_unconfigured = True
                self._say_once(
                    f"webhook_mix: the service has no Stripe webhook secret configured ({status}:"
                    f" {(resp.text or '')[:160]}); sending charges only"
                )
                resp.success()
                resp.request_meta["name"] = "POST /v1/stripe/webhook (not configured)"
            else:
                resp.failure(f"{status}: {(resp.text or '')[:200]}")

    def _say_once(self, message: str) -> None:
        if not WebhookMixUser._warned:
            WebhookMixUser._warned = True
            print(message)
            log.warning(message)
