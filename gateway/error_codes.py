"""Every error code the API answers with: its HTTP status and what it means.

The OpenAPI document lists these (the `code` enum of the error schema, and
per operation the codes it may answer), the docs page gives each an anchor
that the errors' `doc_url` points at, and a test checks that every code the
code can raise is here.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class ErrorCode(NamedTuple):
    """One documented error code.

    Fields:
        statuses: the HTTP statuses it comes with (most one; a few two).
        meaning: what happened and what the client should do.
    """

    statuses: tuple[int, ...]
    meaning: str


ERROR_CODES: Final[dict[str, ErrorCode]] = {
    # Authentication
    "missing_api_key": ErrorCode((401,), "No `Authorization: Bearer <key>` header was sent."),
    "invalid_api_key": ErrorCode((401,), "The API key is unknown."),
    "api_key_revoked": ErrorCode((401,), "The API key was revoked; ask for a new one."),
    "invalid_token": ErrorCode((401,), "The admin token is not valid."),
    "metrics_token_not_configured": ErrorCode(
        (401,), "GET /metrics on a public listener needs BILLING_METRICS_TOKEN on the server."
    ),
    "invalid_service_token": ErrorCode((401,), "The service token is missing or not valid."),
    # The request itself
    "unsupported_media_type": ErrorCode((415,), "The body must be sent as application/json."),
    "body_too_large": ErrorCode((413,), "The body is larger than the route accepts."),
    "batch_too_large": ErrorCode((413,), "A batch holds more events than allowed (100)."),
    "invalid_json": ErrorCode((400,), "The body is not valid JSON (or not a JSON object)."),
    "json_too_deep": ErrorCode((400,), "The JSON nests deeper than allowed."),
    "invalid_type": ErrorCode((400,), "A parameter has the wrong JSON type; see `param`."),
    "invalid_value": ErrorCode((400,), "A parameter's value is not one of the allowed ones."),
    "parameter_missing": ErrorCode((400,), "A required parameter is missing; see `param`."),
    "parameter_unknown": ErrorCode(
        (400,), "A parameter the route does not take was sent (a typo is never ignored)."
    ),
    "parameter_conflict": ErrorCode(
        (400,), "Parameters that exclude each other were sent together (e.g. two cursors)."
    ),
    "too_long": ErrorCode((400,), "A string parameter is longer than allowed."),
    "out_of_range": ErrorCode((400,), "A number is outside the allowed range."),
    "resource_missing": ErrorCode(
        (400, 404),
        "No such route (404), or a list cursor names no receipt (or event) of yours (400).",
    ),
    "method_not_allowed": ErrorCode((405,), "The route does not take this HTTP method."),
    "http_error": ErrorCode((400,), "The HTTP request itself was malformed."),
    # Money and events
    "invalid_amount": ErrorCode(
        (400,),
        'The amount is not a positive decimal: a string such as "12.50", an integer, '
        "or a JSON number such as 12.50.",
    ),
    "amount_precision": ErrorCode(
        (400,), "The amount has more decimals than the currency (USD: 2, JPY: 0, KWD: 3)."
    ),
    "amount_too_large": ErrorCode((400,), "The amount is larger than one charge may be."),
    "unknown_currency": ErrorCode((400,), "The currency is not an ISO 4217 code we know."),
    "invalid_timestamp": ErrorCode(
        (400,), "The timestamp is not RFC 3339 with a time zone offset."
    ),
    "timestamp_in_future": ErrorCode((400,), "The timestamp is more than 5 minutes ahead."),
    "timestamp_too_old": ErrorCode((400,), "The timestamp is more than 35 days old."),
    "idempotency_key_mismatch": ErrorCode(
        (400,), "The `Idempotency-Key` header and the body's `idempotent_key` differ."
    ),
    "idempotency_key_reuse": ErrorCode(
        (409,), "The idempotency key was already used with a different request."
    ),
    "entitlement_not_found": ErrorCode(
        (400, 404), "The customer has no such entitlement (404 when it is in the path)."
    ),
    "currency_mismatch": ErrorCode((400,), "The currency is not the customer's currency."),
    "quota_exceeded": ErrorCode((402,), "The charge would exceed the entitlement's hard quota."),
    "entitlement_inactive": ErrorCode(
        (402,), "The entitlement is not active (canceled, unpaid, past due...)."
    ),
    "balance_limit_reached": ErrorCode((402,), "The account balance limit is reached."),
    "payment_required": ErrorCode(
        (402,),
        "The subscription's payment failed and its grace period is over: pay the open "
        "invoice and charges are accepted again.",
    ),
    "reversal_exceeds_receipt": ErrorCode(
        (400,), "The reversal is larger than what is left of the receipt to reverse."
    ),
    "reversal_not_allowed": ErrorCode(
        (400,), "This receipt cannot be reversed (it is a reversal, or has too many)."
    ),
    # Not found
    "customer_not_found": ErrorCode(
        (404,), "No such customer (or it is not the API key's customer)."
    ),
    "receipt_not_found": ErrorCode((404,), "No such receipt (or it is another customer's)."),
    "log_empty": ErrorCode((404,), "The receipt log has no checkpoint yet: charge first."),
    "checkpoint_not_found": ErrorCode(
        (404,), "No checkpoint for a log of that size (one exists per commit)."
    ),
    "not_in_checkpoint": ErrorCode(
        (404,), "The receipt was logged after that checkpoint; ask for a later one."
    ),
    "tile_not_found": ErrorCode((404,), "No such tile in the log (yet)."),
    "api_key_not_found": ErrorCode((404,), "This customer has no API key with that id."),
    "incident_not_found": ErrorCode((404,), "No integrity incident with that id."),
    "not_found": ErrorCode((404,), "The route is switched off on this server."),
    "webhook_endpoint_not_found": ErrorCode(
        (404,), "No such webhook endpoint (or it is another customer's)."
    ),
    # Customer webhooks
    "invalid_url": ErrorCode(
        (400,), "The endpoint URL must be https:// (http:// only to a loopback host in "
        "development)."
    ),
    "webhook_endpoint_limit": ErrorCode(
        (400,), "The customer already has as many webhook endpoints as allowed (16)."
    ),
    # Operators
    "invalid_email": ErrorCode((400,), "The email is not an email address."),
    "customer_exists": ErrorCode((409,), "A customer with this id already exists."),
    # The web app's Stripe routes
    "email_invalid": ErrorCode((400,), "The email is not a valid address."),
    "customer_id_invalid": ErrorCode((400,), "The customer_id is not valid."),
    "trial_already_used": ErrorCode((409,), "This email already had a trial or a subscription."),
    "invalid_signature": ErrorCode(
        (400,), "The webhook's `Stripe-Signature` does not verify (or is too old)."
    ),
    "invalid_payload": ErrorCode((400,), "The webhook body is not a Stripe event."),
    "stripe_error": ErrorCode((502,), "Stripe refused the request; see the server logs."),
    "stripe_unavailable": ErrorCode((503,), "Stripe could not be reached; retry later."),
    "stripe_not_configured": ErrorCode((503,), "Stripe (or a part of it) is not configured."),
    "service_token_not_configured": ErrorCode((503,), "The service token is not configured."),
    # Load and availability (Retry-After says when to retry; nothing was charged)
    "overloaded": ErrorCode((429, 503), "Too many requests in flight; retry after the delay."),
    "customer_overloaded": ErrorCode(
        (429,), "Too many charges in flight for this customer; retry after the delay."
    ),
    "service_unavailable": ErrorCode(
        (503,), "The service is starting, draining or halted on an integrity failure "
        "(the message names the incident id)."
    ),
    "account_unavailable": ErrorCode((503,), "The account is restarting; retry."),
    "store_unavailable": ErrorCode((503,), "The ledger is unavailable; retry."),
    "reconciler_unavailable": ErrorCode((503,), "The reconciler is restarting; retry."),
    "not_supported": ErrorCode(
        (501,), "This deployment's ledger store cannot answer this yet (SQLite can)."
    ),
    "internal_error": ErrorCode((500,), "A bug on our side; nothing leaks, the log has it."),
}
