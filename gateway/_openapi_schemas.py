"""The OpenAPI document's component schemas (JSON Schema 2020-12): the
request bodies the gateway parses and the objects it answers with."""

from __future__ import annotations

from typing import Any, Final

from gateway.errors import ERROR_TYPES
from gateway.validation import EVENT_FIELDS
from ledger import limits

_AMOUNT_TEXT: Final = "^(0|[1-9][0-9]*)(\\.[0-9]+)?$"
_SIGNED_AMOUNT_TEXT: Final = "^-?(0|[1-9][0-9]*)(\\.[0-9]+)?$"
_HASH: Final = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
_STRING: Final = {"type": "string"}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
_BOOL: Final = {"type": "boolean"}
_INT: Final = {"type": "integer"}
_CURRENCY: Final = {"type": "string", "pattern": "^[A-Z]{3}$", "example": "USD"}
_AMOUNT: Final = {"type": "string", "pattern": _AMOUNT_TEXT,
                  "description": "A decimal string with the currency's decimals.",
                  "example": "0.25"}
_SIGNED_AMOUNT: Final = {**_AMOUNT, "pattern": _SIGNED_AMOUNT_TEXT}
_TIMESTAMP: Final = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: tuple[str, ...] | None = None,
            *, closed: bool = False, description: str = "") -> dict[str, Any]:
    """An object schema; `closed` objects refuse unknown properties (requests:
    the gateway answers `parameter_unknown`)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
    }
    if closed:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def _const(value: str) -> dict[str, Any]:
    return {"type": "string", "const": value}


def _error(codes: tuple[str, ...]) -> dict[str, Any]:
    detail = _object({
        "type": {"type": "string", "enum": sorted(ERROR_TYPES)},
        "code": {"type": "string", "enum": list(codes)},
        "message": _STRING,
        "param": _NULLABLE_STRING,
        "doc_url": {"type": "string", "format": "uri-reference",
                    "description": "The docs page's anchor for this code."},
    })
    return {
        "Error": _object({"error": _ref("ErrorDetail")},
                         description="Stripe's error shape, plus doc_url."),
        "ErrorDetail": detail,
    }


def _request_schemas() -> dict[str, Any]:
    amount_input = {
        "description": "A decimal string (\"150.00\"), an integer of major units, or a JSON "
        "number read as its decimal text (150.00; never a binary float). More decimals "
        "than the currency has is `amount_precision`.",
        "oneOf": [{"type": "string", "minLength": 1, "maxLength": 64},
                  {"type": "number", "exclusiveMinimum": 0}],
    }
    key = {"type": "string", "minLength": 1, "maxLength": limits.idempotency_key_chars_max}
    event_properties = {
        "idempotent_key": {**key, "description": "Required unless the Idempotency-Key "
                           "header carries it."},
        "customer_id": {"type": "string", "minLength": 1,
                        "maxLength": limits.customer_id_chars_max},
        "entitlement_id": {"type": "string", "minLength": 1,
                           "maxLength": limits.entitlement_id_chars_max},
        "amount": amount_input,
        "currency": _CURRENCY,
        "usage_description": {"type": "string",
                              "maxLength": limits.usage_description_chars_max},
        "timestamp": {**_TIMESTAMP, "description": "RFC 3339 with an offset; at most 5 "
                      "minutes ahead and 35 days old."},
    }
    if set(event_properties) != EVENT_FIELDS:  # the document lists what the parser reads
        raise RuntimeError(f"EventRequest schema drifted from {sorted(EVENT_FIELDS)}")
    required = tuple(name for name in event_properties if name != "idempotent_key")
    return {
        "EventRequest": _object(event_properties, required, closed=True),
        "BatchRequest": _object({"events": {
            "type": "array", "minItems": 1, "maxItems": limits.batch_events_max,
            "items": _ref("EventRequest")}}, closed=True),
        "CustomerCreate": _object({
            "customer_id": {"type": "string", "pattern": "^[A-Za-z0-9_\\-.:]+$",
                            "maxLength": limits.customer_id_chars_max},
            "email": {"type": "string", "format": "email", "maxLength": limits.email_chars_max},
            "currency": _CURRENCY,
        }, ("email", "currency"), closed=True),
        "EntitlementPut": _object({
            "quota": {"oneOf": [amount_input, {"type": "null"}],
                      "description": "null: unlimited."},
            "policy": {"type": "string", "enum": ["hard", "soft"], "default": "hard"},
            "status": {"type": "string", "default": "active", "enum": [
                "active", "trialing", "past_due", "canceled", "unpaid", "inactive"]},
            "plan": {"type": ["string", "null"], "maxLength": 64},
        }, ("quota",), closed=True),
        "ReversalRequest": _object({
            "amount": {**_AMOUNT, "description": "How much to reverse (default: all that is "
                       "left), in the receipt's currency."},
            "reason": {"type": "string", "minLength": 1,
                       "maxLength": limits.reversal_reason_chars_max},
        }, ("reason",), closed=True),
        "TrialRequest": _object({"email": {"type": "string", "format": "email"}}),
        "CustomerLookup": _object({"customer_id": _STRING, "email": _STRING}, (),
                                  description="customer_id or email (one is required)."),
        "StripeEvent": _object({"id": _STRING, "type": _STRING}),
    }


def _receipt_schemas() -> dict[str, Any]:
    summary = _object({
        "id": _STRING, "object": _const("receipt"), "receipt_id": _STRING,
        "status": {**_const("processed"), "description": "Was `committed` before; see the "
                   "boolean `committed`."},
        "committed": _BOOL, "seq": _INT, "amount": _SIGNED_AMOUNT, "currency": _CURRENCY,
        "balance_after": _AMOUNT, "quota_remaining": {"type": ["string", "null"]},
        "receipt_hash": _HASH, "receipt_url": _STRING, "log": _ref("LogProof"),
    }, ("id", "object", "receipt_id", "status", "committed", "seq", "amount", "currency",
        "balance_after", "quota_remaining", "receipt_hash", "receipt_url"))
    receipt = _object({
        "id": _STRING, "object": _const("receipt"), "receipt_id": _STRING,
        "customer_id": _STRING, "seq": _INT, "idempotency_key": _STRING,
        "entitlement_id": _STRING, "amount_minor": _INT, "currency": _CURRENCY,
        "usage_description": _STRING, "event_timestamp": _TIMESTAMP, "recorded_at": _TIMESTAMP,
        "balance_after_minor": _INT, "quota_remaining_minor": {"type": ["integer", "null"]},
        "previous_receipt_hash": _STRING, "receipt_hash": _HASH,
        "signature": {"type": "string", "description": "JWS, detached payload (receipt "
                      "signing mode only)."},
        "log": _ref("LogProof"),
        "amount": _SIGNED_AMOUNT, "timestamp": _TIMESTAMP, "status": _const("processed"),
        "committed": _BOOL,
    }, ("id", "object", "receipt_id", "customer_id", "seq", "idempotency_key",
        "entitlement_id", "amount_minor", "currency", "usage_description", "event_timestamp",
        "recorded_at", "balance_after_minor", "quota_remaining_minor", "previous_receipt_hash",
        "receipt_hash"),
       description="Signed fields plus the unsigned conveniences id, object, amount, "
       "timestamp, status and committed. Proved by `log` (an inclusion proof against a "
       "signed checkpoint) and, in receipt signing mode, also by its own `signature`.")
    batch_item = {"oneOf": [
        _object({"status": {"const": 202}, "replayed": _BOOL,
                 "receipt": _ref("ReceiptSummary")}),
        _object({"status": {"type": "integer", "minimum": 400}, "error": _ref("ErrorDetail"),
                 "replayed": {"const": True, "description": "A refusal kept under this "
                              "key, sent again (absent otherwise)."}},
                required=("status", "error")),
    ]}
    return {
        "ReceiptSummary": summary,
        "Receipt": receipt,
        "ReceiptList": _object({
            "object": _const("list"), "data": {"type": "array", "items": _ref("Receipt")},
            "has_more": _BOOL, "url": _STRING,
            "next_after_seq": {**_INT, "description": "The older cursor (kept)."},
        }),
        "BatchResult": _object({
            "object": _const("list"), "data": {"type": "array", "items": batch_item},
            "results": {"type": "array", "items": batch_item,
                        "description": "The same as data (kept for older clients)."},
            "has_more": {"const": False}, "url": _STRING,
        }),
    }


def _account_schemas() -> dict[str, Any]:
    entitlement_line = _object({
        "id": _STRING, "object": _const("entitlement"), "entitlement_id": _STRING,
        "status": _STRING, "policy": _STRING, "plan": _NULLABLE_STRING,
        "quota": {"type": ["string", "null"]}, "used": _AMOUNT,
        "quota_remaining": {"type": ["string", "null"], "pattern": _SIGNED_AMOUNT_TEXT},
    })
    return {
        "Balance": _object({
            "id": {**_STRING, "description": "The customer's id (one balance each)."},
            "object": _const("balance"), "customer_id": _STRING, "currency": _CURRENCY,
            "balance": _SIGNED_AMOUNT, "balance_minor": _INT, "seq": _INT,
            "last_receipt_hash": _STRING,
            "entitlements": {"type": "array", "items": entitlement_line},
        }),
        "Customer": _object({
            "id": _STRING, "object": _const("customer"), "customer_id": _STRING,
            "email": _STRING, "currency": _CURRENCY, "created_at": _TIMESTAMP,
            "stripe_customer_id": _NULLABLE_STRING,
        }),
        "ApiKey": _object({
            "id": _STRING, "object": _const("api_key"),
            "api_key": {**_STRING, "description": "The secret, shown this once."},
            "key_id": _STRING, "customer_id": _STRING,
        }),
        "CustomerList": _object({
            "object": _const("list"), "data": {"type": "array", "items": _ref("Customer")},
            "has_more": _BOOL, "url": _STRING,
        }),
        "ApiKeyListed": _object({
            "id": _STRING, "object": _const("api_key"), "key_id": _STRING,
            "customer_id": _STRING, "created_at": _TIMESTAMP,
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
            "status": {"type": "string", "enum": ["active", "revoked"]},
        }, description="A key as listed: its secret is shown once, when issued, and "
           "never again; its hash is never shown."),
        "ApiKeyList": _object({
            "object": _const("list"), "data": {"type": "array", "items": _ref("ApiKeyListed")},
            "has_more": _BOOL, "url": _STRING,
        }),
        "DeletedApiKey": _object({
            "id": _STRING, "object": _const("api_key"), "key_id": _STRING,
            "revoked": {"const": True}, "deleted": {"const": True},
        }),
        "Entitlement": _object({
            "id": _STRING, "object": _const("entitlement"), "customer_id": _STRING,
            "entitlement_id": _STRING, "quota": {"type": ["string", "null"]},
            "policy": _STRING, "status": _STRING, "plan": _NULLABLE_STRING, "used": _AMOUNT,
            "updated_at": _TIMESTAMP,
        }),
    }


def _service_schemas() -> dict[str, Any]:
    any_object: dict[str, Any] = {"type": "object"}
    return {
        "AnyObject": any_object,
        "Jwks": _object({"keys": {"type": "array", "items": any_object}}),
        "Health": _object({"status": _const("ok")}),
        "Readiness": _object({"status": {"type": "string", "enum": ["ready", "unavailable"]},
                              "reason": _STRING,
                              "incident_id": {**_STRING, "description": "The open integrity "
                                              "incident, when charges are halted."}},
                             ("status",)),
        **_halt_schemas(),
        "FaultResult": _object({"customer_id": _STRING, "crashed": _BOOL}),
        "ReconcileSummary": _object({"customers": _INT, "audits_ok": _INT,
                                     "audits_failed": _INT, "errors": _INT},
                                    description="What one full pass found (and more counters)."),
        "WebhookAck": _object({"received": {"const": True}, "ignored": _BOOL,
                               "duplicate": _BOOL}, ("received",)),
        "Trial": _object({
            "customer_id": _STRING, "stripe_customer_id": _STRING,
            "subscription_id": _NULLABLE_STRING, "status": _STRING,
            "trial_end": _NULLABLE_STRING, "api_key_id": _STRING,
            "api_key": {**_STRING, "description": "The secret, shown this once."},
        }),
        "BillingLink": _object({"kind": {"type": "string", "enum": ["portal", "checkout"]},
                                "url": _STRING, "stripe_customer_id": _NULLABLE_STRING},
                               ("kind", "url")),
        "Stats": _object({"customers_by_status": {"type": "object",
                                                  "additionalProperties": _INT},
                          "active_trials": _INT,
                          "mrr_minor": {"type": ["object", "null"]},
                          "receipts_by_currency_day": {"type": ["array", "null"]}},
                         ("customers_by_status", "active_trials")),
    }


def _halt_schemas() -> dict[str, Any]:
    incident = _object({
        "id": _STRING, "object": _const("integrity_incident"), "incident_id": _STRING,
        "status": {"type": "string", "enum": ["open", "cleared"]},
        "opened_at": _TIMESTAMP, "reason": _STRING, "detail": _STRING, "source": _STRING,
        "customer_id": _NULLABLE_STRING, "receipt_id": _NULLABLE_STRING,
        "cleared_at": {"type": ["string", "null"], "format": "date-time"},
        "clear_reason": _NULLABLE_STRING, "halted": _BOOL,
    }, ("id", "object", "incident_id", "status", "opened_at", "reason", "detail", "source"),
        description="An integrity failure recorded in the ledger; while open, every "
        "gateway of the store refuses charges. `halted` (after a clearing): whether "
        "another incident still holds charges.")
    return {
        "IntegrityIncident": incident,
        "IntegrityHalt": _object({
            "object": _const("integrity_halt"), "halted": _BOOL,
            "open": {"type": "array", "items": _ref("IntegrityIncident")},
            "recent": {"type": "array", "items": _ref("IntegrityIncident")},
        }),
        "HaltClear": _object({
            "incident_id": {**_STRING, "maxLength": 64},
            "reason": {**_STRING, "minLength": 1,
                       "maxLength": limits.halt_clear_reason_chars_max},
        }, closed=True),
    }


def _log_schemas() -> dict[str, Any]:
    node = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    size = {"type": "integer", "minimum": 0}
    checkpoint = _object({
        "object": _const("checkpoint"), "origin": _STRING, "tree_size": size,
        "root_hash": _HASH, "timestamp": _TIMESTAMP,
        "checkpoint": {"type": "string", "description": "Compact JWS of the checkpoint "
                       "{origin, tree_size, root_hash, timestamp} (typ vexa-checkpoint+jwt)."},
        "note": {"type": "string", "description": "The same, as a C2SP signed note."},
        "note_verifier_key": _STRING,
    }, ("object", "origin", "tree_size", "root_hash", "timestamp", "checkpoint"))
    return {
        "LogProof": _object({
            "index": size, "tree_size": size, "inclusion": {"type": "array", "items": node},
            "checkpoint": _STRING,
        }, description="The receipt's leaf index, its RFC 9162 inclusion path (hex) and the "
           "signed checkpoint whose root it leads to."),
        "Checkpoint": checkpoint,
        "CheckpointList": _object({
            "object": _const("list"), "data": {"type": "array", "items": _ref("Checkpoint")},
            "has_more": _BOOL, "url": _STRING,
        }),
        "ConsistencyProof": _object({
            "object": _const("consistency_proof"), "first": _ref("Checkpoint"),
            "second": _ref("Checkpoint"), "proof": {"type": "array", "items": node},
        }),
        "Evidence": _object({
            "object": _const("dispute_evidence"), "version": _INT, "generated_at": _TIMESTAMP,
            "receipt_id": _STRING, "customer_id": _STRING,
            "receipt": {"type": "object", "description": "The receipt with its proof: "
                        "`log` against its commit's checkpoint, or its own `signature`."},
            "consistency": {"type": ["object", "null"], "description": "{tree_size, "
                            "checkpoint, proof}: from the receipt's checkpoint to the latest."},
            "chain": {"type": "array", "items": {"type": "object"}},
            "jwks": {"type": "object"}, "request": {"type": ["object", "null"]},
            "verdict": {"type": "object"}, "seal": _STRING,
        }, description="Dispute evidence for one receipt (see crypto/README.md)."),
        "InclusionProof": _object({
            "object": _const("inclusion_proof"), "receipt_id": _STRING, "index": size,
            "tree_size": size, "inclusion": {"type": "array", "items": node},
            "checkpoint": _STRING,
        }),
    }


def _webhook_schemas() -> dict[str, Any]:
    endpoint = _object({
        "id": _STRING, "object": _const("webhook_endpoint"),
        "url": {"type": "string", "format": "uri", "maxLength": limits.webhook_url_chars_max},
        "status": _const("enabled"), "created": _INT,
        "previous_secret_expires_at": {**_NULLABLE_STRING, "description": "Until then the "
                                       "rotated-out secret signs too (a second `v1=`)."},
        "secret": {"type": "string", "pattern": "^whsec_", "description": "Only when "
                   "created or rotated: keep it, it is not shown again."},
    }, ("id", "object", "url", "status", "created", "previous_secret_expires_at"))
    delivery = _object({
        "status": {"type": "string", "enum": ["pending", "delivered", "no_endpoint"]},
        "attempts": _INT, "last_attempt_at": _NULLABLE_STRING,
        "last_error": _NULLABLE_STRING, "delivered_at": _NULLABLE_STRING,
    })
    threshold = _object({
        "object": _const("usage_threshold"), "customer_id": _STRING, "entitlement_id": _STRING,
        "threshold_pct": _INT, "quota": _AMOUNT, "quota_minor": _INT, "used": _AMOUNT,
        "used_minor": _INT, "currency": _CURRENCY, "period_start": _NULLABLE_STRING,
        "period_end": _NULLABLE_STRING, "receipt_id": _STRING,
    })
    event = _object({
        "id": {"type": "string", "pattern": "^evt_"}, "object": _const("event"),
        "type": _const("entitlement.usage_threshold.reached"), "created": _INT,
        "data": _object({"object": threshold}), "delivery": delivery,
    }, description="As POSTed to the endpoints (without `delivery`), signed in the "
       "`Vexa-Signature` header the way Stripe signs its webhooks.")
    pct = {"type": "integer", "minimum": 1, "maximum": limits.alert_threshold_pct_max}
    pcts = {"type": "array", "items": pct, "maxItems": limits.alert_thresholds_max,
            "uniqueItems": True}
    return {
        "WebhookEndpointCreate": _object({"url": {
            "type": "string", "minLength": 1, "maxLength": limits.webhook_url_chars_max,
            "description": "https:// (http:// only to a loopback host in development)."}},
            closed=True),
        "WebhookSecretRotate": _object({"previous_secret_expires_in_s": {
            "type": "integer", "minimum": 0, "maximum": limits.webhook_secret_overlap_s_max,
            "description": "How long the old secret keeps signing (default 86400)."}}, (),
            closed=True),
        "WebhookEndpoint": endpoint,
        "WebhookEndpointList": _object({"object": _const("list"), "data": {
            "type": "array", "items": _ref("WebhookEndpoint")}, "has_more": _BOOL,
            "url": _STRING}),
        "DeletedWebhookEndpoint": _object({"id": _STRING, "object": _const("webhook_endpoint"),
                                           "deleted": {"const": True}}),
        "OutboundEvent": event,
        "OutboundEventList": _object({"object": _const("list"), "data": {
            "type": "array", "items": _ref("OutboundEvent")}, "has_more": _BOOL,
            "url": _STRING}),
        "AlertThresholdsSet": _object({"thresholds_pct": pcts}, closed=True),
        "AlertThresholds": _object({"object": _const("alert_thresholds"),
                                    "entitlement_id": _STRING, "thresholds_pct": pcts,
                                    "default": _BOOL}),
    }


def component_schemas(error_codes: tuple[str, ...]) -> dict[str, Any]:
    """Every schema the operations refer to, by name."""
    return {
        **_error(error_codes),
        **_request_schemas(),
        **_receipt_schemas(),
        **_log_schemas(),
        **_account_schemas(),
        **_service_schemas(),
        **_webhook_schemas(),
    }
