"""The API contract: an OpenAPI 3.1 document of every route, built as data.

Served at `GET /openapi.json` and rendered at `GET /docs`; a test checks that
it and the app's router agree, and Schemathesis fuzzes the running service
from it. The gateway also reads it: the query parameters an operation lists
are the only ones it accepts (`parameter_unknown` otherwise), so the document
cannot drift from what the query parser takes.

Built on first use (no work at import time) and cached: it is constant.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from actors.charges import KEPT_REFUSAL_CODES
from gateway import _openapi_schemas as schemas
from gateway.error_codes import ERROR_CODES
from gateway.validation import IDEMPOTENCY_HEADER
from ledger import limits

OPENAPI_VERSION: Final = "3.1.0"
API_VERSION: Final = "1"

_AUTH_KEY = ("missing_api_key", "invalid_api_key", "api_key_revoked")
_AUTH_ADMIN = ("missing_api_key", "invalid_token")
_AUTH_SERVICE = ("invalid_service_token", "service_token_not_configured")
_JSON_BODY = (
    "unsupported_media_type",
    "body_too_large",
    "invalid_json",
    "json_too_deep",
    "invalid_type",
    "parameter_unknown",
    "parameter_missing",
)
_EVENT_FIELDS = (
    "invalid_value",
    "too_long",
    "invalid_amount",
    "amount_precision",
    "amount_too_large",
    "unknown_currency",
    "invalid_timestamp",
    "timestamp_in_future",
    "timestamp_too_old",
)
_CHARGE = (
    "customer_not_found",
    "entitlement_not_found",
    "currency_mismatch",
    "quota_exceeded",
    "entitlement_inactive",
    "payment_required",
    "balance_limit_reached",
    "idempotency_key_reuse",
    "overloaded",
    "customer_overloaded",
    "service_unavailable",
    "account_unavailable",
    "store_unavailable",
)
_STRIPE_BODY = ("body_too_large", "invalid_json", "stripe_not_configured", "stripe_unavailable")

SECURITY_SCHEMES: Final = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A customer's API key (`sk_test_...` / `sk_live_...`): client apps.",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's admin token (`BILLING_ADMIN_TOKEN`).",
    },
    "serviceToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The web app's service token (`BILLING_SERVICE_TOKEN`).",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The Prometheus scraper's token (`BILLING_METRICS_TOKEN`); not "
        "needed in development or on a loopback listener without one.",
    },
    "stripeSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Stripe-Signature",
        "description": "Stripe's webhook signature (`t=...,v1=...`) over the raw body.",
    },
}


def _json(schema_name: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _ok(status: int, description: str, schema_name: str, example: Any = None) -> dict[str, Any]:
    return {str(status): {"description": description, "content": _json(schema_name, example)}}


def _receipt_responses() -> dict[str, Any]:
    """A receipt as JSON, or as the page a browser asked for (Accept: text/html)."""
    ok = _ok(200, "The receipt (or, for a browser, its page)", "Receipt")
    ok["200"]["content"]["text/html"] = {"schema": {"type": "string"}}
    ok["303"] = {"description": "A signed-out browser: to /signin?next=<this path>",
                 "headers": {"Location": {"schema": {"type": "string"}}}}
    return ok


def _error_responses(codes: tuple[str, ...]) -> dict[str, Any]:
    """One Error response per status the codes come with, listing them."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        for status in ERROR_CODES[code].statuses:
            by_status.setdefault(status, []).append(code)
    responses: dict[str, Any] = {}
    for status, status_codes in sorted(by_status.items()):
        listed = ", ".join(f"`{c}`" for c in status_codes)
        response: dict[str, Any] = {"description": listed, "content": _json("Error")}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
        if KEPT_REFUSAL_CODES.intersection(status_codes):
            response["description"] += (" (a refusal kept under its idempotency key: "
                                        "`Idempotent-Replayed: true` when sent again)")
            response["headers"] = {
                "Idempotent-Replayed": {"$ref": "#/components/headers/IdempotentReplayed"}}
        responses[str(status)] = response
    return responses


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    *,
    security: str | None,
    codes: tuple[str, ...] = (),
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    # Every route refuses query parameters it does not list (see app.py).
    codes = tuple(dict.fromkeys((*codes, "parameter_unknown")))
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description or summary,
        "security": [{security: []}] if security else [],
        "parameters": parameters or [],
        "responses": {**responses, **_error_responses(codes)},
        "x-error-codes": list(codes),
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def _path_param(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "example": example,
    }


def _query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _body(schema_name: str, examples: dict[str, Any]) -> dict[str, Any]:
    media = {
        "schema": {"$ref": f"#/components/schemas/{schema_name}"},
        "examples": {name: {"value": value} for name, value in examples.items()},
    }
    return {"required": True, "content": {"application/json": media}}


def _public_paths() -> dict[str, Any]:
    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": _operation(operation_id, "Public", summary, security=None,
                                  responses=responses)}

    text = {"200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}
    html = {"200": {"description": "This document as one HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}}}}
    return {
        "/.well-known/jwks.json": get(
            "getJwks", "The public keys that verify receipt signatures (RFC 7517).",
            _ok(200, "The key set", "Jwks")),
        "/healthz": get("getHealth", "Liveness: the process answers.",
                        _ok(200, "Alive", "Health", {"status": "ok"})),
        "/readyz": get("getReadiness", "Readiness: the service takes charges.", {
            **_ok(200, "Ready", "Readiness", {"status": "ready"}),
            **_ok(503, "Starting, draining or halted", "Readiness",
                  {"status": "unavailable", "reason": "integrity halt: incident inc_5f0c2a9e",
                   "incident_id": "inc_5f0c2a9e"}),
        }),
        "/metrics": {"get": _operation(
            "getMetrics", "Public", "Prometheus metrics (the scraper's token outside "
            "development).", security="metricsToken",
            codes=("missing_api_key", "invalid_token", "metrics_token_not_configured"),
            responses=text)},
        "/openapi.json": get("getOpenApi", "This OpenAPI 3.1 document.",
                             {"200": {"description": "The document",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}}),
        "/docs": get("getDocs", "The API reference (this document, as HTML).", html),
    }


_EVENT_EXAMPLE: Final = {
    "idempotent_key": "req-1",
    "customer_id": "cus_42",
    "entitlement_id": "api_calls",
    "amount": "0.25",
    "currency": "USD",
    "usage_description": "one call",
    "timestamp": "2026-11-22T10:00:00Z",
}


def _event_paths() -> dict[str, Any]:
    header = {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": "Stripe's idempotency header; the same as the body's `idempotent_key` "
        "(send one, or both equal).",
        "schema": {"type": "string", "minLength": 1,
                   "maxLength": limits.idempotency_key_chars_max},
    }
    number_example = {**_EVENT_EXAMPLE, "amount": 150.00}
    del number_example["idempotent_key"]
    post_event = _operation(
        "postEvent", "Charges", "Charge one billing event, exactly once per idempotency key.",
        security="apiKey",
        codes=(*_AUTH_KEY, *_JSON_BODY, *_EVENT_FIELDS, "idempotency_key_mismatch", *_CHARGE),
        parameters=[header],
        body=_body("EventRequest", {"string amount": _EVENT_EXAMPLE,
                                    "number amount, key in the header": number_example}),
        responses={"202": {
            "description": "Charged (or, with `Idempotent-Replayed: true`, charged before "
            "under this key: the original receipt).",
            "headers": {"Idempotent-Replayed": {
                "$ref": "#/components/headers/IdempotentReplayed"}},
            "content": _json("ReceiptSummary"),
        }},
        description="The charge is durable (signed and committed) when the answer comes. "
        "A retry with the same key and body answers the original receipt; the same key "
        "with another body is 409. A final refusal (402 `quota_exceeded`, "
        "`payment_required`, `entitlement_inactive`, `balance_limit_reached`; 400 "
        "`entitlement_not_found`, `currency_mismatch`) is kept under its key as Stripe "
        "keeps a first answer: a retry gets the same status and body with "
        "`Idempotent-Replayed: true`, never a charge, even after the quota was raised; "
        "use a new key for a new attempt. Not kept: errors of a malformed request, 401, "
        "404 `customer_not_found`, 409, 429 and 503 (retry those with the same key).",
    )
    post_batch = _operation(
        "postEventBatch", "Charges", f"Charge up to {limits.batch_events_max} events, "
        "each with its own result.", security="apiKey",
        codes=(*_AUTH_KEY, *_JSON_BODY, "invalid_value", "batch_too_large", "overloaded",
               "customer_overloaded", "service_unavailable", "store_unavailable"),
        body=_body("BatchRequest", {"two events": {"events": [
            _EVENT_EXAMPLE, {**_EVENT_EXAMPLE, "idempotent_key": "req-2"}]}}),
        responses=_ok(200, "One result per event, in order", "BatchResult"),
        description="Each event carries its own `idempotent_key` (the `Idempotency-Key` "
        "header is refused here). Events are charged in order; the answer comes once "
        "every charged item is durable. Keys are shared with POST /v1/events: a kept "
        "refusal sent again answers the same error with `replayed: true`.",
    )
    return {"/v1/events": {"post": post_event}, "/v1/events/batch": {"post": post_batch}}


def _receipt_paths() -> dict[str, Any]:
    receipt_id = _path_param("receipt_id", "The receipt's id", "rcpt_0123456789abcdef")
    cursor = {"type": "string", "minLength": 1, "maxLength": 255}
    seq = {"type": "integer", "minimum": 0, "maximum": limits.json_safe_integer_max}
    list_params = [
        _query_param("limit", "Receipts per page (default 100).",
                     {"type": "integer", "minimum": 1, "maximum": limits.receipts_page_max}),
        _query_param("starting_after", "A receipt id: the page after it.", cursor),
        _query_param("ending_before", "A receipt id: the page before it.", cursor),
        _query_param("after_seq", "A seq: the page after it (the older cursor, kept).", seq),
        _query_param("tree_size", "Prove each receipt against the checkpoint of this many "
                     "leaves (default: the head); receipts after it carry no `log`.", seq),
    ]
    return {
        "/v1/receipts/{receipt_id}": {"get": _operation(
            "getReceipt", "Receipts", "One receipt, signed, as stored.", security="apiKey",
            codes=(*_AUTH_KEY, "receipt_not_found", "store_unavailable"),
            description="JSON by default. A browser (`Accept` lists `text/html` before any "
            "JSON type) gets the receipt's page instead: signed in with the web app's "
            "session cookie rather than an API key (signed out: a 303 to /signin), it "
            "verifies the receipt in the browser against the JWKS.",
            parameters=[receipt_id], responses=_receipt_responses())},
        "/v1/receipts": {"get": _operation(
            "listReceipts", "Receipts", "The customer's receipts in chain order (oldest first).",
            security="apiKey",
            codes=(*_AUTH_KEY, "invalid_type", "out_of_range", "parameter_unknown",
                   "parameter_conflict", "resource_missing", "store_unavailable",
                   "checkpoint_not_found"),
            parameters=list_params, responses=_ok(200, "One page", "ReceiptList"),
            description="A Stripe list object. Page forward with `starting_after` = the last "
            "id of a page while `has_more`; `ending_before` pages backward. `after_seq` and "
            "`next_after_seq` are the older seq cursor; one cursor per request.")},
        "/v1/receipts/{receipt_id}/reversals": {"post": _operation(
            "reverseReceipt", "Operators", "Reverse all or part of a receipt.",
            security="adminToken",
            codes=(*_AUTH_ADMIN, *_JSON_BODY, "parameter_missing", "too_long",
                   "invalid_amount", "amount_precision", "amount_too_large",
                   "receipt_not_found", "reversal_exceeds_receipt", "reversal_not_allowed",
                   "entitlement_not_found", "idempotency_key_reuse", "service_unavailable",
                   "account_unavailable", "store_unavailable", "overloaded"),
            parameters=[receipt_id, {
                "name": "Idempotency-Key", "in": "header", "required": True,
                "description": "The operator's key: a retry answers the same reversal.",
                "schema": {"type": "string", "minLength": 1, "maxLength":
                           limits.idempotency_key_chars_max
                           - limits.reversal_key_overhead_chars_max}}],
            body=_body("ReversalRequest", {"part": {"amount": "1.00", "reason": "outage"},
                                           "all of it": {"reason": "charged twice"}}),
            responses={"202": {"description": "The reversal receipt, durable (with "
                               "`Idempotent-Replayed: true`: made before under this key).",
                               "content": _json("ReceiptSummary")}},
            description="Appends a receipt with a negative amount to the customer's chain; "
            "its idempotency_key is `reversal:<receipt_id>:<Idempotency-Key>` and its "
            "usage_description the reason. The total reversed never exceeds the receipt. "
            "Without `amount`, all that is left is reversed.")},
        "/v1/balance": {"get": _operation(
            "getBalance", "Receipts", "The customer's balance and entitlements.",
            security="apiKey", codes=(*_AUTH_KEY, "customer_not_found", "store_unavailable"),
            responses=_ok(200, "The balance", "Balance"))},
    }


_LOG_READER = (*_AUTH_KEY, "store_unavailable", "log_empty")
_LOG_DESCRIBED = "With a customer's API key or the admin token."


def _tree_size() -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": limits.json_safe_integer_max}


def _log_paths() -> dict[str, Any]:
    size, reader, described = _tree_size(), _LOG_READER, _LOG_DESCRIBED
    text = {"200": {"description": "C2SP tlog-checkpoint signed note",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}
    return {
        "/v1/log/checkpoint": {"get": _operation(
            "getLogCheckpoint", "Receipt log", "The latest signed checkpoint (the log head).",
            security="apiKey", codes=reader, description=described,
            responses=_ok(200, "The head", "Checkpoint"))},
        "/v1/log/checkpoint.note": {"get": _operation(
            "getLogCheckpointNote", "Receipt log", "The head as a C2SP signed note.",
            security="apiKey", codes=reader, description=described, responses=text)},
        "/v1/log/checkpoints": {"get": _operation(
            "listLogCheckpoints", "Receipt log", "Every checkpoint, oldest first (one per "
            "commit).", security="apiKey",
            codes=(*reader, "invalid_type", "out_of_range"), description=described,
            parameters=[_query_param("after_size", "Checkpoints of larger logs only.", size),
                        _query_param("limit", "Per page (default 100).", {
                            "type": "integer", "minimum": 1,
                            "maximum": limits.log_checkpoints_page_max})],
            responses=_ok(200, "One page", "CheckpointList"))},
        "/v1/log/consistency": {"get": _operation(
            "getLogConsistency", "Receipt log", "RFC 9162 consistency proof between two "
            "checkpoints.", security="apiKey",
            codes=(*reader, "parameter_missing", "invalid_type", "out_of_range",
                   "checkpoint_not_found"), description=described,
            parameters=[{**_query_param("first", "The older checkpoint's tree size.", size),
                         "required": True},
                        _query_param("second", "The newer one's (default: the head).", size)],
            responses=_ok(200, "The proof", "ConsistencyProof"))},
        **_receipt_proof_paths(),
    }


def _receipt_proof_paths() -> dict[str, Any]:
    """The log's per-receipt answers (evidence, inclusion) and its raw tiles."""
    size, reader, described = _tree_size(), _LOG_READER, _LOG_DESCRIBED
    evidence_html = {"200": {"description": "The evidence page",
                             "content": {"text/html": {"schema": {"type": "string"}}}}}
    evidence = {"200": {"description": "The sealed bundle", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Evidence"}},
        "text/html": {"schema": {"type": "string"}}}}}
    tile = {"200": {"description": "C2SP tlog-tiles tile: concatenated 32-byte hashes",
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}}}}
    receipt_id = _path_param("receipt_id", "The receipt's id", "rcpt_0123456789abcdef")
    return {
        "/v1/receipts/{receipt_id}/evidence": {"get": _operation(
            "getReceiptEvidence", "Receipt log",
            "Dispute evidence: the receipt, its proofs, the chain, keys and request, sealed.",
            security="apiKey", codes=(*_AUTH_KEY, "receipt_not_found", "store_unavailable"),
            description="The receipt's customer (API key) or an operator (admin token). "
            "Canonical JSON (RFC 8785) sealed by a detached JWS; `billing verify --evidence` "
            "checks it offline. `Accept: text/html` gives the page of /evidence.html.",
            parameters=[receipt_id], responses=evidence)},
        "/v1/receipts/{receipt_id}/evidence.html": {"get": _operation(
            "getReceiptEvidenceHtml", "Receipt log",
            "The same evidence as one HTML page (what support sends).", security="apiKey",
            codes=(*_AUTH_KEY, "receipt_not_found", "store_unavailable"),
            parameters=[receipt_id], responses=evidence_html)},
        "/v1/receipts/{receipt_id}/inclusion": {"get": _operation(
            "getReceiptInclusion", "Receipt log", "The receipt's inclusion proof against a "
            "checkpoint.", security="apiKey",
            codes=(*reader, "receipt_not_found", "invalid_type", "checkpoint_not_found",
                   "not_in_checkpoint"), description=described,
            parameters=[receipt_id, _query_param(
                "tree_size", "The checkpoint's tree size (default: the head).", size)],
            responses=_ok(200, "The proof", "InclusionProof"))},
        "/v1/log/tile/{path}": {"get": _operation(
            "getLogTile", "Receipt log", "A C2SP tlog-tiles tile, e.g. 0/x001/234.p/5.",
            security="apiKey", codes=(*reader, "tile_not_found"), description=described,
            parameters=[_path_param("path", "Tile path after tile/", "0/000")],
            responses=tile)},
        "/.well-known/receipt-log-note-key": {"get": _operation(
            "getLogNoteKey", "Public", "The signed note's verifier key (Go sumdb/note).",
            security=None, responses={"200": {"description": "The verifier key", "content": {
                "text/plain": {"schema": {"type": "string"}}}}})},
    }


def _admin_paths() -> dict[str, Any]:
    customer_id = _path_param("customer_id", "The customer's id", "cus_42")
    store = ("store_unavailable",)
    found = (*_AUTH_ADMIN, "customer_not_found", *store)
    list_customers = _operation(
        "listCustomers", "Operators", "Customers in id order, a page at a time.",
        security="adminToken", codes=(*_AUTH_ADMIN, "invalid_type", "out_of_range", *store),
        parameters=[
            _query_param("limit", "Customers per page (default 20).", {
                "type": "integer", "minimum": 1, "maximum": limits.customers_page_max}),
            _query_param("starting_after", "A customer id: the page after it.",
                         {"type": "string", "minLength": 1, "maxLength": 255}),
        ],
        responses=_ok(200, "One page", "CustomerList"))
    list_keys = _operation(
        "listApiKeys", "Operators", "The customer's API keys, newest first (never a secret "
        "or its hash).", security="adminToken", codes=(*found, "not_supported"),
        parameters=[customer_id], responses=_ok(200, "The keys", "ApiKeyList"))
    return {
        "/v1/customers": {"post": _operation(
            "createCustomer", "Operators", "Create a customer.", security="adminToken",
            codes=(*_AUTH_ADMIN, *_JSON_BODY, "invalid_value", "too_long", "invalid_email",
                   "unknown_currency", "customer_exists", *store),
            body=_body("CustomerCreate", {"customer": {
                "customer_id": "cus_42", "email": "ops@example.com", "currency": "USD"}}),
            responses=_ok(201, "Created", "Customer")), "get": list_customers},
        "/v1/customers/{customer_id}": {"get": _operation(
            "getCustomer", "Operators", "One customer.", security="adminToken", codes=found,
            parameters=[customer_id], responses=_ok(200, "The customer", "Customer"))},
        "/v1/customers/{customer_id}/api-keys": {"post": _operation(
            "createApiKey", "Operators", "Issue an API key (the secret is shown once).",
            security="adminToken", codes=found, parameters=[customer_id],
            responses=_ok(201, "Issued", "ApiKey")), "get": list_keys},
        "/v1/customers/{customer_id}/api-keys/{key_id}": {"delete": _operation(
            "revokeApiKey", "Operators", "Revoke an API key (at once in this process).",
            security="adminToken", codes=(*found, "api_key_not_found"),
            parameters=[customer_id, _path_param("key_id", "The key's id", "key_0123")],
            responses=_ok(200, "Revoked", "DeletedApiKey"))},
        "/v1/customers/{customer_id}/entitlements/{entitlement_id}": {"put": _operation(
            "putEntitlement", "Operators", "Create or replace an entitlement.",
            security="adminToken",
            codes=(*found, *_JSON_BODY, "invalid_value", "too_long", "out_of_range",
                   "invalid_amount", "amount_precision", "amount_too_large"),
            parameters=[customer_id, _path_param("entitlement_id", "The entitlement's id",
                                                 "api_calls")],
            body=_body("EntitlementPut", {"hard quota": {"quota": "500.00", "policy": "hard"},
                                          "unlimited": {"quota": None}}),
            responses=_ok(200, "The entitlement as stored", "Entitlement"))},
        **_operator_tool_paths(customer_id),
    }


def _operator_tool_paths(customer_id: dict[str, Any]) -> dict[str, Any]:
    return {
        "/v1/admin/faults/{customer_id}": {"post": _operation(
            "injectFault", "Operators", "Crash a customer's account actor (chaos tests only).",
            security="adminToken", codes=(*_AUTH_ADMIN, "not_found"),
            parameters=[customer_id], responses=_ok(200, "Done", "FaultResult"))},
        "/v1/admin/tree": {"get": _operation(
            "getSupervisionTree", "Operators", "The supervision tree, live.",
            security="adminToken", codes=_AUTH_ADMIN,
            responses=_ok(200, "The tree", "AnyObject"))},
        "/v1/admin/reconcile": {"post": _operation(
            "reconcileNow", "Operators", "Audit every chain now and repair lagging copies.",
            security="adminToken", codes=(*_AUTH_ADMIN, "reconciler_unavailable"),
            responses=_ok(200, "What the pass found", "ReconcileSummary"))},
        "/v1/admin/halt": {"get": _operation(
            "getIntegrityHalt", "Operators",
            "Integrity incidents: the open ones (charges refused) and the recent ones.",
            security="adminToken", codes=(*_AUTH_ADMIN, "store_unavailable"),
            responses=_ok(200, "The halt, in full", "IntegrityHalt"))},
        "/v1/admin/halt/clear": {"post": _operation(
            "clearIntegrityHalt", "Operators",
            "Lift one integrity incident, saying why (recorded with it).",
            security="adminToken",
            codes=(*_AUTH_ADMIN, *_JSON_BODY, "invalid_value", "too_long",
                   "incident_not_found", "store_unavailable"),
            body=_body("HaltClear", {"clear": {"incident_id": "inc_5f0c2a9e",
                                               "reason": "restored seq 2 from the archive"}}),
            responses=_ok(200, "The incident, cleared", "IntegrityIncident"))},
    }


def _stripe_paths() -> dict[str, Any]:
    who = _body("CustomerLookup", {"by email": {"email": "ann@example.com"},
                                   "by id": {"customer_id": "cus_42"}})
    lookup = (*_AUTH_SERVICE, *_STRIPE_BODY, "parameter_missing", "email_invalid",
              "customer_id_invalid", "customer_not_found", "stripe_error", "overloaded")
    return {
        "/v1/stripe/webhook": {"post": _operation(
            "stripeWebhook", "Stripe", "Stripe's webhook: recorded durably, processed later.",
            security="stripeSignature",
            codes=("body_too_large", "invalid_signature", "invalid_payload",
                   "stripe_not_configured", "store_unavailable", "overloaded"),
            body={"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/StripeEvent"}}}},
            responses=_ok(200, "Received", "WebhookAck"))},
        "/v1/trials/api-key": {"post": _operation(
            "startTrial", "Web app", "Start a trial for an email and issue its API key.",
            security="serviceToken",
            codes=(*_AUTH_SERVICE, *_STRIPE_BODY, "parameter_missing", "email_invalid",
                   "trial_already_used", "stripe_error", "overloaded"),
            body=_body("TrialRequest", {"trial": {"email": "ann@example.com"}}),
            responses=_ok(201, "Started", "Trial"))},
        "/v1/portal/session": {"post": _operation(
            "portalSession", "Web app", "A Stripe billing portal session.",
            security="serviceToken", codes=lookup, body=who,
            responses=_ok(200, "The portal URL", "BillingLink"))},
        "/v1/stripe/resolve-url": {"post": _operation(
            "resolveUrl", "Web app", "The portal for a subscriber, else a Checkout session.",
            security="serviceToken", codes=lookup, body=who,
            responses=_ok(200, "Where to send the user", "BillingLink"))},
        "/v1/stats": {"get": _operation(
            "getStats", "Web app", "Customers by status, trials, MRR, receipts per day.",
            security="serviceToken",
            codes=(*_AUTH_SERVICE, "store_unavailable", "overloaded"),
            responses=_ok(200, "The figures", "Stats"))},
    }


# The web app's pages (gateway/web): (method, path, operationId, summary,
# query parameters, media type). HTML for people, with a session cookie and a
# CSRF token on every form; not fuzzed (they answer pages, not API errors).
_WEB_PAGES: Final = (
    ("get", "/", "webHome", "The start page: the dashboard or pricing.", (), "text/html"),
    ("get", "/pricing", "webPricing", "The plans, with Subscribe and a one-hour trial.", (),
     "text/html"),
    ("post", "/pricing/subscribe", "webSubscribe", "Go to Stripe Checkout (or the portal).",
     (), "text/html"),
    ("post", "/pricing/trial", "webTrial", "Start a trial; its API key is shown once.", (),
     "text/html"),
    ("get", "/signin", "webSignIn", "The sign-in page.", ("next",), "text/html"),
    ("get", "/signin/oidc", "webSignInOidc", "Start OpenID Connect sign-in (PKCE).", ("next",),
     "text/html"),
    ("get", "/signin/callback", "webSignInCallback", "The identity provider's redirect back.",
     None, "text/html"),
    ("post", "/signin/demo", "webSignInDemo", "Development only: sign in as the demo customer.",
     (), "text/html"),
    ("post", "/signout", "webSignOut", "Sign out.", (), "text/html"),
    ("get", "/dashboard", "webDashboard", "Balance, usage, receipts, keys, share links "
     "(`checkout`: back from Stripe Checkout, the page reloads until the subscription is "
     "active).", ("before", "checkout"), "text/html"),
    ("post", "/dashboard/api-keys", "webCreateApiKey", "Create an API key (shown once).", (),
     "text/html"),
    ("post", "/dashboard/api-keys/{key_id}/revoke", "webRevokeApiKey", "Revoke an API key.",
     (), "text/html"),
    ("post", "/dashboard/billing", "webManageBilling", "Open Stripe's billing portal.", (),
     "text/html"),
    ("get", "/dashboard/export.jsonl", "webExportJsonl", "The whole chain as JSON lines.", (),
     "application/x-ndjson"),
    ("get", "/dashboard/export.csv", "webExportCsv", "The whole chain as CSV.", (), "text/csv"),
    ("get", "/dashboard/receipts/{receipt_id}/document", "webReceiptDocument",
     "The signed-in customer's receipt, with its proof (for the receipt page).", (),
     "application/json"),
    ("post", "/dashboard/receipts/{receipt_id}/share", "webShareReceipt",
     "Make a share link for a receipt (shown once).", (), "text/html"),
    ("post", "/dashboard/shares/{link_id}/revoke", "webRevokeShare", "Revoke a share link.",
     (), "text/html"),
    ("get", "/share/{token}", "webSharedReceipt", "A shared receipt, verified in the browser.",
     (), "text/html"),
    ("get", "/share/{token}/document", "webSharedReceiptDocument",
     "A shared receipt with its proof.", (), "application/json"),
    ("get", "/share/{token}/previous", "webSharedReceiptPrevious",
     "The receipt before a shared one: its seq, hash and inclusion proof only (the page "
     "checks the chain link against the signed log).", (), "application/json"),
    ("get", "/static/{name}", "webStatic", "The web app's CSS and JavaScript.", (), "text/css"),
)


_WEBHOOKS_OFF = ("not_found",)  # a store without webhook tables


def _webhook_paths() -> dict[str, Any]:
    endpoint_id = _path_param("endpoint_id", "The endpoint's id", "we_0123456789abcdef")
    off = _WEBHOOKS_OFF
    return {
        "/v1/webhook_endpoints": {
            "post": _operation(
                "createWebhookEndpoint", "Webhooks", "Register an endpoint for your events.",
                security="apiKey", codes=(*_AUTH_KEY, *_JSON_BODY, *off, "invalid_value",
                                          "too_long", "invalid_url", "webhook_endpoint_limit",
                                          "store_unavailable"),
                body=_body("WebhookEndpointCreate", {"https": {"url": "https://example.com/h"}}),
                responses=_ok(201, "The endpoint, with its signing secret (shown once)",
                              "WebhookEndpoint"),
                description="Every event of yours is POSTed to every endpoint, signed in "
                "`Vexa-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>` "
                "(Stripe's scheme: `stripe.WebhookSignature.verify_header` checks it)."),
            "get": _operation(
                "listWebhookEndpoints", "Webhooks", "Your endpoints (without secrets).",
                security="apiKey", codes=(*_AUTH_KEY, *off, "store_unavailable"),
                responses=_ok(200, "A list object", "WebhookEndpointList")),
        },
        "/v1/webhook_endpoints/{endpoint_id}": {"delete": _operation(
            "deleteWebhookEndpoint", "Webhooks", "Delete an endpoint.", security="apiKey",
            codes=(*_AUTH_KEY, *off, "webhook_endpoint_not_found", "store_unavailable"),
            parameters=[endpoint_id],
            responses=_ok(200, "Deleted", "DeletedWebhookEndpoint"))},
        "/v1/webhook_endpoints/{endpoint_id}/rotate_secret": {"post": _operation(
            "rotateWebhookSecret", "Webhooks", "A new signing secret, with an overlap.",
            security="apiKey",
            codes=(*_AUTH_KEY, *_JSON_BODY, *off, "out_of_range", "webhook_endpoint_not_found",
                   "store_unavailable"),
            parameters=[endpoint_id],
            body={**_body("WebhookSecretRotate", {"a day": {},
                                                  "an hour": {"previous_secret_expires_in_s":
                                                              3600}}), "required": False},
            responses=_ok(200, "The endpoint with its new secret (shown once)",
                          "WebhookEndpoint"),
            description="Until `previous_secret_expires_at` every delivery carries two `v1=` "
            "signatures, the new secret's first, as Stripe does during a secret roll.")},
        **_webhook_event_paths(),
    }


def _webhook_event_paths() -> dict[str, Any]:
    """What was sent to a customer's endpoints, and the thresholds that send it."""
    entitlement_id = _path_param("entitlement_id", "The entitlement's id", "api_calls")
    cursor = {"type": "string", "minLength": 1, "maxLength": 255}
    off = _WEBHOOKS_OFF
    return {
        "/v1/events/outbound": {"get": _operation(
            "listOutboundEvents", "Webhooks", "Events sent to you, newest first.",
            security="apiKey",
            codes=(*_AUTH_KEY, *off, "invalid_type", "out_of_range", "parameter_conflict",
                   "resource_missing", "store_unavailable"),
            parameters=[
                _query_param("limit", "Events per page (default 10).", {
                    "type": "integer", "minimum": 1,
                    "maximum": limits.outbound_events_page_max}),
                _query_param("starting_after", "An event id: the older page after it.", cursor),
                _query_param("ending_before", "An event id: the newer page before it.", cursor),
            ],
            responses=_ok(200, "A list object", "OutboundEventList"),
            description="Each event as it was POSTed, with `delivery`: its status, attempts "
            "and last error. Retries send the same `id`: deduplicate on it.")},
        "/v1/entitlements/{entitlement_id}/alert_thresholds": {
            "get": _operation(
                "getAlertThresholds", "Webhooks", "The entitlement's usage alert thresholds.",
                security="apiKey", codes=(*_AUTH_KEY, *off, "entitlement_not_found",
                                          "store_unavailable"),
                parameters=[entitlement_id],
                responses=_ok(200, "Percent of quota; `default` when not set",
                              "AlertThresholds")),
            "post": _operation(
                "setAlertThresholds", "Webhooks", "Set the entitlement's alert thresholds.",
                security="apiKey",
                codes=(*_AUTH_KEY, *_JSON_BODY, *off, "invalid_value", "entitlement_not_found",
                       "store_unavailable"),
                parameters=[entitlement_id],
                body=_body("AlertThresholdsSet", {"three": {"thresholds_pct": [50, 80, 100]},
                                                  "none": {"thresholds_pct": []}}),
                responses=_ok(200, "The thresholds now", "AlertThresholds"),
                description="Each threshold fires once per billing period, when a charge "
                "takes usage to it (an `entitlement.usage_threshold.reached` event)."),
        },
    }


def _web_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, operation_id, summary, query, media in _WEB_PAGES:
        names = [n.strip("{}") for n in path.split("/") if n.startswith("{")]
        operation = _operation(
            operation_id, "Web app", summary, security=None,
            parameters=[_path_param(n, n, "x") for n in names]
            + [_query_param(q, q, {"type": "string"}) for q in query or ()],
            responses={"200": {"description": "The page", "content": {
                media: {"schema": {"type": "string"}}}}},
        )
        if query is None:  # an identity provider adds its own parameters
            operation["x-query-open"] = True
        paths.setdefault(path, {})[method] = operation
    return paths


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once; treat it as read-only)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Vexa Billing API",
            "version": API_VERSION,
            "description": "Usage billing with signed, hash-chained receipts. Stripe's "
            "conventions: Bearer keys, Stripe-shaped errors with `doc_url`, list objects "
            "with cursors, `Idempotency-Key`, `id` and `object` on every object.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in
                 ("Charges", "Receipts", "Receipt log", "Operators", "Stripe", "Web app",
                  "Webhooks", "Public")],
        "paths": {**_event_paths(), **_receipt_paths(), **_log_paths(), **_admin_paths(),
                  **_stripe_paths(), **_public_paths(), **_web_paths(), **_webhook_paths()},
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": schemas.component_schemas(tuple(ERROR_CODES)),
            "headers": {"RetryAfter": {"description": "Seconds to wait before a retry.",
                                       "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                        "IdempotentReplayed": {
                            "description": "Present on an answer given before under the "
                            "same idempotency key (a receipt, or a kept refusal).",
                            "schema": {"type": "string", "enum": ["true"]}}},
        },
        "x-error-codes": {
            code: {"statuses": list(entry.statuses), "meaning": entry.meaning}
            for code, entry in ERROR_CODES.items()
        },
    }


@functools.cache
def query_parameters() -> dict[tuple[str, str], frozenset[str]]:
    """(METHOD, path template) -> the query parameters it takes (all others
    are `parameter_unknown`); HEAD takes what GET takes."""
    allowed: dict[tuple[str, str], frozenset[str]] = {}
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if operation.get("x-query-open"):
                continue
            names = frozenset(p["name"] for p in operation["parameters"] if p["in"] == "query")
            allowed[(method.upper(), path)] = names
            if method == "get":
                allowed[("HEAD", path)] = names
    return allowed
