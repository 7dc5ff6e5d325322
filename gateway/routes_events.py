"""Client routes: post billing events (one or a batch), read receipts and balance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from actors.charges import ChargeOutcome
from gateway.errors import ApiError, bad_request, json_response
from gateway.rendering import (
    charge_summary,
    outcome_response,
    refusal_result,
)
from gateway.routes_log import documents_with_proofs, query_size
from gateway.services import REQUEST_ID, SERVICES, Services
from gateway.validation import (
    IDEMPOTENCY_HEADER,
    EventRequest,
    parse_event,
    query_int,
    read_json_body,
    reject_unknown,
)
from gateway.web import WEB, receipt_page, wants_html
from ledger import ApiKey, RequestRecord, limits
from ledger.clock import utc_now_rfc3339
from ledger.money import format_amount

routes = web.RouteTableDef()


def origin_of(request: web.Request) -> str:
    """Where links point: the configured public URL. The request's own scheme
    and Host only when none is configured, which Settings allows only in
    development or on loopback (behind a proxy they say http://)."""
    public_url = request.app[SERVICES].settings.public_url
    return public_url if public_url is not None else f"{request.scheme}://{request.host}"


def ensure_ready(services: Services) -> None:
    if not services.readiness.ready():
        reason = services.readiness.public_reason()
        raise ApiError(
            503, "service_unavailable", f"charges are refused: {reason}", retry_after_s=5
        )


def _check_owner(event: EventRequest, customer_id: str, param: str = "customer_id") -> None:
    if event.customer_id != customer_id:
        # Same answer as for an unknown customer: never confirm another's existence.
        raise ApiError(404, "customer_not_found", "no such customer for this API key", param=param)


def _request_record(request: web.Request, api_key: ApiKey) -> RequestRecord:
    """Who asked, as this gateway saw it (dispute evidence; not signed)."""
    return RequestRecord(
        api_key_id=api_key.key_id,
        client_address=request.remote or "",
        user_agent=request.headers.get("User-Agent", "")[: limits.user_agent_chars_max],
        received_at=utc_now_rfc3339(),
        request_id=request.get(REQUEST_ID, "")[: limits.request_id_chars_max],
    )


@routes.post("/v1/events")
async def post_event(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    api_key = await services.api_keys.key_for(request)
    customer_id = api_key.customer_id
    record = _request_record(request, api_key)
    ensure_ready(services)
    # Admission before the body is read and parsed: under overload a 429
    # must cost the saturated event loop as little as possible.
    started_s = services.admission.enter_timed(customer_id)
    try:
        body = await read_json_body(request)
        event = parse_event(body, datetime.now(UTC), request.headers.get(IDEMPOTENCY_HEADER))
        _check_owner(event, customer_id)
        outcome = await services.charge(event, record)
    finally:
        latency_s = services.admission.leave_timed(customer_id, started_s)
        services.metrics.receipt_latency_s.observe(latency_s)
    return outcome_response(outcome, origin_of(request))


@routes.post("/v1/events/batch")
async def post_event_batch(request: web.Request) -> web.Response:
    """Up to `batch_events_max` events, each with its own result, charged in
    order per customer; the response comes once every item is durable."""
    services = request.app[SERVICES]
    api_key = await services.api_keys.key_for(request)
    customer_id = api_key.customer_id
    record = _request_record(request, api_key)
    ensure_ready(services)
    services.admission.refuse_if_saturated(customer_id)  # cheap 429 before reading the body
    if IDEMPOTENCY_HEADER in request.headers:
        # One key for many charges would hide which ones it covers.
        raise bad_request(
            "parameter_unknown",
            "a batch takes no Idempotency-Key header: each event has its idempotent_key",
            IDEMPOTENCY_HEADER,
        )
    items = _batch_items(await read_json_body(request), services)
    parsed = _parse_batch(items, customer_id, datetime.now(UTC))
    valid = [p for p in parsed if isinstance(p, EventRequest)]
    services.admission.enter(customer_id, max(1, len(valid)))
    try:
        # One message to the one account actor: charged in the batch's order.
        ref = await services.account_ref(customer_id) if valid else None
        outcomes = await services.submit(valid, ref, record) if valid else []
    finally:
        services.admission.leave(customer_id, max(1, len(valid)))
    results = _batch_results(parsed, outcomes, origin_of(request))
    # `data` is Stripe's name for a list's items; `results` stays for old clients.
    return json_response(
        {
            "object": "list",
            "data": results,
            "results": results,
            "has_more": False,
            "url": request.path,
        }
    )


def _batch_items(body: Any, services: Services) -> list[Any]:
    """The body's `events`, or the 4xx for a body that is no batch."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise bad_request("invalid_type", "send {\"events\": [...]}", "events")
    reject_unknown(body, ("events",))
    items: list[Any] = body["events"]
    if not items:
        raise bad_request("invalid_value", "events must not be empty", "events")
    # A batch is admitted whole: never larger than one customer's bound.
    events_max = min(limits.batch_events_max, services.settings.customer_inflight_max)
    if len(items) > events_max:
        raise ApiError(
            413,
            "batch_too_large",
            f"at most {events_max} events per batch, got {len(items)}",
            param="events",
        )
    return items


def _parse_batch(
    items: list[Any], customer_id: str, now: datetime
) -> list[EventRequest | ApiError]:
    """Each item as an event, or the error that is its result (param `events[i]....`)."""
    parsed: list[EventRequest | ApiError] = []
    for index, item in enumerate(items):
        try:
            event = parse_event(item, now)
            _check_owner(event, customer_id, param=f"events[{index}].customer_id")
            parsed.append(event)
        except ApiError as error:
            if error.param and not error.param.startswith("events["):
                error.param = f"events[{index}].{error.param}"
            parsed.append(error)
    return parsed


def _batch_results(
    parsed: list[EventRequest | ApiError], outcomes: list[ChargeOutcome], origin: str
) -> list[dict[str, Any]]:
    """One result per item, in order: its error, its refusal, or its receipt."""
    answered = iter(outcomes)
    results: list[dict[str, Any]] = []
    for item in parsed:
        if isinstance(item, ApiError):
            results.append({"status": item.status, **item.body()})
            continue
        outcome = next(answered)
        if outcome.receipt is None or outcome.kind == "refused":
            results.append(refusal_result(outcome))
        else:
            results.append(
                {
                    "status": 202,
                    "replayed": outcome.kind == "replayed",
                    "receipt": charge_summary(outcome.receipt, origin, outcome.log),
                }
            )
    return results


@routes.get("/v1/receipts/{receipt_id}")
async def get_receipt(request: web.Request) -> web.StreamResponse:
    if WEB in request.app and wants_html(request):  # a browser opened the receipt_url
        return await receipt_page(request)
    services = request.app[SERVICES]
    customer_id = await services.api_keys.customer_for(request)
    receipt_id = request.match_info["receipt_id"]
    receipt = await services.blocking(services.read_model.get_receipt, receipt_id)
    if receipt is None:
        receipt = await services.blocking(services.store.get_receipt, receipt_id)
    if receipt is None or receipt.customer_id != customer_id:
        raise ApiError(404, "receipt_not_found", "no such receipt", param="receipt_id")
    (document,) = await documents_with_proofs(services, [receipt])
    return json_response(document)


async def _cursor_seq(services: Services, customer_id: str, request: web.Request, name: str) -> int:
    """The seq of the receipt a `starting_after`/`ending_before` id names
    (the customer's own; another's is as unknown as a missing one)."""
    receipt_id = request.query[name]
    receipt = await services.blocking(services.store.get_receipt, receipt_id)
    if receipt is None or receipt.customer_id != customer_id:
        raise bad_request("resource_missing", f"no such receipt: {receipt_id!r}", name)
    return receipt.seq


def _one_cursor(request: web.Request) -> str | None:
    given = [n for n in ("starting_after", "ending_before", "after_seq") if request.query.get(n)]
    if len(given) > 1:
        raise bad_request(
            "parameter_conflict", f"send only one of {', '.join(given)}", given[1]
        )
    return given[0] if given else None


@routes.get("/v1/receipts")
async def list_receipts(request: web.Request) -> web.Response:
    """Oldest first, in chain order. Stripe's cursors (`starting_after`,
    `ending_before`: receipt ids) or `after_seq` (a seq, kept for old clients)."""
    services = request.app[SERVICES]
    customer_id = await services.api_keys.customer_for(request)
    cursor = _one_cursor(request)
    limit = query_int(request, "limit", 100, 1, limits.receipts_page_max)
    if cursor == "ending_before":
        # Seqs are 1, 2, 3... per customer: the page before seq n starts at n - limit.
        before_seq = await _cursor_seq(services, customer_id, request, cursor)
        after_seq = max(0, before_seq - 1 - limit)
        limit = min(limit, before_seq - 1)
    elif cursor == "starting_after":
        after_seq = await _cursor_seq(services, customer_id, request, cursor)
    else:
        after_seq = query_int(request, "after_seq", 0, 0, limits.json_safe_integer_max)
    # The ledger of record answers: it is never behind, unlike a read model.
    page = []
    if limit > 0:
        page = await services.blocking(
            services.store.list_receipts, customer_id, after_seq, limit
        )
    return json_response(
        {
            "object": "list",
            "data": await documents_with_proofs(
                services, page, query_size(request, "tree_size", required=False)
            ),
            "has_more": await _has_more(services, customer_id, cursor, page, after_seq, limit),
            "url": request.path,
            "next_after_seq": page[-1].seq if page else after_seq,
        }
    )


async def _has_more(
    services: Services,
    customer_id: str,
    cursor: str | None,
    page: list[Any],
    after_seq: int,
    limit: int,
) -> bool:
    """Whether more receipts follow in the direction of the listing."""
    if cursor == "ending_before":
        return after_seq > 0  # older receipts precede this page
    # Adapters cap a page at receipts_page_max, so `limit + 1` cannot tell
    # whether more follow; a one-row look past a full page can.
    return len(page) == limit and bool(
        await services.blocking(services.store.list_receipts, customer_id, page[-1].seq, 1)
    )


@routes.get("/v1/balance")
async def get_balance(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    customer_id = await services.api_keys.customer_for(request)
    account = await services.blocking(services.store.load_account, customer_id)
    if account is None:
        raise ApiError(404, "customer_not_found", "no such customer")
    currency = account.customer.currency
    entitlements = []
    for entitlement in sorted(account.entitlements.values(), key=lambda e: e.entitlement_id):
        quota = entitlement.quota_minor
        entitlements.append(
            {
                "id": entitlement.entitlement_id,
                "object": "entitlement",
                "entitlement_id": entitlement.entitlement_id,
                "status": entitlement.status,
                "policy": entitlement.policy,
                "plan": entitlement.plan,
                "quota": None if quota is None else format_amount(quota, currency),
                "used": format_amount(entitlement.used_minor, currency),
                "quota_remaining": (
                    None
                    if quota is None
                    else format_amount(quota - entitlement.used_minor, currency)
                ),
            }
        )
    return json_response(
        {
            "id": customer_id,  # one balance per customer
            "object": "balance",
            "customer_id": customer_id,
            "currency": currency,
            "balance": format_amount(account.balance_minor, currency),
            "balance_minor": account.balance_minor,
            "seq": account.seq,
            "last_receipt_hash": account.last_receipt_hash,
            "entitlements": entitlements,
        }
    )
