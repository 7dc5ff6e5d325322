"""Settings: secret files win over the environment, several webhook secrets,
validated plans, and secrets never printed."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from actors.stripe._plans import PlanSpec
from gateway.stripe.settings import SettingsError, build_stripe_client, load


def test_secret_files_win_and_webhook_secrets_rotate(tmp_path: Path) -> None:
    key = "sk_test_" + secrets.token_hex(8)
    first, second = "whsec_" + secrets.token_hex(8), "whsec_" + secrets.token_hex(8)
    (tmp_path / "stripe-secret-key").write_text(key + "\n")
    (tmp_path / "stripe-webhook-secret").write_text(f"{first}\n\n{second}\n")
    environ = {"STRIPE_SECRET_KEY": "sk_test_from_env", "BILLING_SERVICE_TOKEN": "svc_env",
               "STRIPE_API_BASE": "http://127.0.0.1:9/",
               "STRIPE_PLANS": '{"pro": {"max_bots": 3, "quota": "10.50", "policy": "soft"}}'}
    settings = load(tmp_path, environ)
    assert settings.secret_key == key
    assert settings.webhook_secrets == (first, second)
    assert settings.service_token == "svc_env"
    assert settings.api_base == "http://127.0.0.1:9"
    assert settings.plans["pro"] == PlanSpec(max_bots=3, quota="10.50", policy="soft")
    assert settings.entitlement_id == "subscription"
    shown = repr(settings)
    assert key not in shown and first not in shown and "svc_env" not in shown


def test_no_secret_key_disables_stripe() -> None:
    settings = load(None, {})
    assert not settings.enabled and build_stripe_client(settings) is None


def test_client_talks_to_the_configured_base() -> None:
    settings = load(None, {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_API_BASE":
                           "http://127.0.0.1:12345"})
    client = build_stripe_client(settings)
    assert client is not None
    assert client._requestor._options.base_addresses["api"] == "http://127.0.0.1:12345"


@pytest.mark.parametrize(
    "plans",
    ['{"pro": {"quota": 10.5}}', '{"pro": {"policy": "maybe"}}', '{"pro": {"max_bots": -1}}',
     "[1]", "{not json"],
)
def test_bad_plans_are_refused_without_echoing_secrets(plans: str) -> None:
    secret = "sk_test_" + secrets.token_hex(8)
    with pytest.raises(SettingsError) as raised:
        load(None, {"STRIPE_SECRET_KEY": secret, "STRIPE_PLANS": plans})
    assert secret not in str(raised.value)
