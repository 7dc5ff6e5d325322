"""Stripe integration settings: one frozen object, built once by `load`.

Secrets come from mounted secret files (Cloud Run / Secret Manager mounts one
file per secret) or, failing that, from the environment. Secret values are
kept out of `repr` so they can never reach a log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import stripe

from actors.stripe._plans import PlanSpec
from gateway.environment import DeclaredEnvironment
from ledger.limits import (
    meter_event_name_chars_max,
    payment_grace_s_max,
    stripe_network_retries_max,
)

__all__ = ["STRIPE_VARIABLES", "SettingsError", "StripeSettings", "build_stripe_client", "load"]

DEFAULT_API_BASE = "https://api.stripe.com"
# File uploads (dispute evidence) go to their own host at Stripe.
DEFAULT_FILES_BASE = "https://files.stripe.com"
DEFAULT_ENTITLEMENT_ID = "subscription"
# Stripe's own default; also what the brief asks for.
WEBHOOK_TOLERANCE_S = 300
TRIAL_PERIOD_S = 3600
# Bounded: a Stripe call never blocks a worker for more than
# (retries + 1) * (connect + read) seconds plus the library's backoff.
STRIPE_CONNECT_TIMEOUT_S = 5.0
STRIPE_READ_TIMEOUT_S = 20.0
# Stripe retries a failed renewal payment for days (Smart Retries): three
# days lets the first retries land before charges are refused.
PAYMENT_GRACE_S = 3 * 86_400
USAGE_AUDIT_INTERVAL_S = 3_600.0

# secret file name -> environment variable
_SECRET_SOURCES: Mapping[str, str] = {
    "stripe-secret-key": "STRIPE_SECRET_KEY",
    "stripe-webhook-secret": "STRIPE_WEBHOOK_SECRET",
    "admin-api-url": "ADMIN_API_URL",
    "admin-api-token": "ADMIN_API_TOKEN",
    "portal-return-url": "PORTAL_RETURN_URL",
    "service-token": "BILLING_SERVICE_TOKEN",
}

# Every variable `load` reads (through this table; see gateway/environment.py).
STRIPE_VARIABLES: Final = frozenset({
    *_SECRET_SOURCES.values(), "STRIPE_API_BASE", "STRIPE_TRIAL_PRICE_ID",
    "STRIPE_CHECKOUT_PRICE_ID", "STRIPE_CHECKOUT_SUCCESS_URL", "STRIPE_CHECKOUT_CANCEL_URL",
    "STRIPE_PLANS", "STRIPE_ENTITLEMENT_ID", "STRIPE_PAYMENT_GRACE_S", "STRIPE_FILES_BASE",
})


class SettingsError(ValueError):
    """Configuration is present but unusable. Messages name the variable, never its value."""


@dataclass(frozen=True, slots=True)
class StripeSettings:
    secret_key: str | None = field(default=None, repr=False)
    # Several secrets during a rotation: a delivery is valid if it matches any.
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    admin_api_url: str | None = None
    admin_api_token: str | None = field(default=None, repr=False)
    portal_return_url: str | None = None
    service_token: str | None = field(default=None, repr=False)
    api_base: str = DEFAULT_API_BASE
    # None: Stripe's files host with Stripe's API, else the API base (a proxy
    # or a local fake serves both).
    files_base: str | None = None
    trial_price_id: str | None = None
    checkout_price_id: str | None = None
    checkout_success_url: str | None = None
    checkout_cancel_url: str | None = None
    plans: Mapping[str, PlanSpec] = field(default_factory=lambda: MappingProxyType({}))
    entitlement_id: str = DEFAULT_ENTITLEMENT_ID
    webhook_tolerance_s: int = WEBHOOK_TOLERANCE_S
    trial_period_s: int = TRIAL_PERIOD_S
    connect_timeout_s: float = STRIPE_CONNECT_TIMEOUT_S
    read_timeout_s: float = STRIPE_READ_TIMEOUT_S
    max_network_retries: int = stripe_network_retries_max
    # How long a past_due or unpaid subscription may still be charged,
    # counted from the start of its unpaid period (see ledger.model).
    payment_grace_s: int = PAYMENT_GRACE_S
    # How often usage reported to Stripe is compared with its meter summaries.
    usage_audit_interval_s: float = USAGE_AUDIT_INTERVAL_S

    @property
    def enabled(self) -> bool:
        """Stripe is configured (a secret key is present)."""
        return bool(self.secret_key)

    @property
    def files_address(self) -> str:
        if self.files_base is not None:
            return self.files_base
        return DEFAULT_FILES_BASE if self.api_base == DEFAULT_API_BASE else self.api_base

    @property
    def admin_api_enabled(self) -> bool:
        return bool(self.admin_api_url and self.admin_api_token)


def _read_secret(secrets_dir: Path | None, name: str, environ: Mapping[str, str]) -> str | None:
    if secrets_dir is not None:
        path = secrets_dir / name
        if path.is_file():
            text = path.read_text(encoding="utf-8").strip()
            return text or None
    value = environ.get(_SECRET_SOURCES[name], "").strip()
    return value or None


def _parse_plans(raw: str | None) -> Mapping[str, PlanSpec]:
    if not raw:
        return MappingProxyType({})
    try:
        decoded: Any = json.loads(raw)
    except ValueError as error:
        raise SettingsError("STRIPE_PLANS is not valid JSON") from error
    if not isinstance(decoded, dict):
        raise SettingsError("STRIPE_PLANS must be a JSON object: lookup_key -> plan")
    plans: dict[str, PlanSpec] = {}
    for lookup_key, spec in decoded.items():
        if not isinstance(spec, dict):
            raise SettingsError(f"STRIPE_PLANS[{lookup_key!r}] must be an object")
        max_bots = spec.get("max_bots")
        if max_bots is not None and (
            isinstance(max_bots, bool) or not isinstance(max_bots, int) or max_bots < 0
        ):
            raise SettingsError(f"STRIPE_PLANS[{lookup_key!r}].max_bots must be an integer >= 0")
        quota = spec.get("quota")
        if quota is not None and not isinstance(quota, str):
            # A JSON number would be a binary float: money is a decimal string.
            raise SettingsError(
                f"STRIPE_PLANS[{lookup_key!r}].quota must be a decimal string or null"
            )
        policy = spec.get("policy", "hard")
        if policy not in ("hard", "soft"):
            raise SettingsError(f"STRIPE_PLANS[{lookup_key!r}].policy must be 'hard' or 'soft'")
        meter_event_name = _optional_text(spec, "meter_event_name", lookup_key)
        meter_id = _optional_text(spec, "meter_id", lookup_key)
        plans[str(lookup_key)] = PlanSpec(
            max_bots=max_bots, quota=quota, policy=policy,
            meter_event_name=meter_event_name, meter_id=meter_id,
        )
    return MappingProxyType(plans)


def _optional_text(spec: Mapping[str, Any], name: str, lookup_key: str) -> str | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= meter_event_name_chars_max:
        raise SettingsError(
            f"STRIPE_PLANS[{lookup_key!r}].{name} must be a string of 1 to "
            f"{meter_event_name_chars_max} characters"
        )
    return value


def _grace_s(environ: Mapping[str, str]) -> int:
    raw = _env(environ, "STRIPE_PAYMENT_GRACE_S")
    if raw is None:
        return PAYMENT_GRACE_S
    if not raw.isdigit() or int(raw) > payment_grace_s_max:
        raise SettingsError(
            f"STRIPE_PAYMENT_GRACE_S must be an integer from 0 to {payment_grace_s_max}"
        )
    return int(raw)


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def load(secrets_dir: Path | None, environ: Mapping[str, str]) -> StripeSettings:
    """Build the settings once, in the composition root."""
    environ = DeclaredEnvironment(environ, STRIPE_VARIABLES)
    webhook_raw = _read_secret(secrets_dir, "stripe-webhook-secret", environ) or ""
    webhook_secrets = tuple(
        line.strip() for line in webhook_raw.replace(",", "\n").splitlines() if line.strip()
    )
    api_base = (_env(environ, "STRIPE_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    if not api_base.startswith(("https://", "http://")):
        raise SettingsError("STRIPE_API_BASE must be an http(s) URL")
    files_base = _env(environ, "STRIPE_FILES_BASE")
    if files_base is not None and not files_base.startswith(("https://", "http://")):
        raise SettingsError("STRIPE_FILES_BASE must be an http(s) URL")
    return StripeSettings(
        secret_key=_read_secret(secrets_dir, "stripe-secret-key", environ),
        webhook_secrets=webhook_secrets,
        admin_api_url=_read_secret(secrets_dir, "admin-api-url", environ),
        admin_api_token=_read_secret(secrets_dir, "admin-api-token", environ),
        portal_return_url=_read_secret(secrets_dir, "portal-return-url", environ),
        service_token=_read_secret(secrets_dir, "service-token", environ),
        api_base=api_base,
        files_base=files_base.rstrip("/") if files_base else None,
        trial_price_id=_env(environ, "STRIPE_TRIAL_PRICE_ID"),
        checkout_price_id=_env(environ, "STRIPE_CHECKOUT_PRICE_ID")
        or _env(environ, "STRIPE_TRIAL_PRICE_ID"),
        checkout_success_url=_env(environ, "STRIPE_CHECKOUT_SUCCESS_URL"),
        checkout_cancel_url=_env(environ, "STRIPE_CHECKOUT_CANCEL_URL"),
        plans=_parse_plans(_env(environ, "STRIPE_PLANS")),
        entitlement_id=_env(environ, "STRIPE_ENTITLEMENT_ID") or DEFAULT_ENTITLEMENT_ID,
        payment_grace_s=_grace_s(environ),
    )


def build_stripe_client(settings: StripeSettings) -> stripe.StripeClient | None:
    """The one Stripe client (no global `stripe.api_key`); None when disabled.

    The API base is set per client through `base_addresses["api"]`; the HTTP
    client carries (connect, read) timeouts and the library retries
    connection errors and 5xx/409 answers a bounded number of times, with
    idempotency keys on POSTs so a retry never creates twice.
    """
    if not settings.secret_key:
        return None
    return stripe.StripeClient(
        settings.secret_key,
        base_addresses={"api": settings.api_base, "files": settings.files_address},
        max_network_retries=settings.max_network_retries,
        http_client=stripe.RequestsClient(
            timeout=(settings.connect_timeout_s, settings.read_timeout_s)
        ),
    )
