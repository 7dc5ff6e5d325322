"""BILLING_PUBLIC_URL: validated at start-up, required where the request's
own URL would be wrong (a non-loopback address outside development)."""

from __future__ import annotations

import pytest

from gateway.settings import SettingsError, from_environment


@pytest.mark.parametrize(
    ("environ", "dev", "public_url"),
    [
        ({"BILLING_PUBLIC_URL": "https://billing.example.com/"}, False, "https://billing.example.com"),
        ({"BILLING_HOST": "0.0.0.0", "BILLING_PUBLIC_URL": "https://b.example/api"}, False,
         "https://b.example/api"),
        ({"BILLING_PUBLIC_URL": "http://127.0.0.1:8080"}, False, "http://127.0.0.1:8080"),
        ({"BILLING_PUBLIC_URL": "http://billing.internal"}, True, "http://billing.internal"),
        ({}, False, None),  # loopback: the request's own URL is right
        ({"BILLING_HOST": "0.0.0.0"}, True, None),  # development
    ],
)
def test_accepted_public_urls(environ: dict[str, str], dev: bool, public_url: str | None) -> None:
    assert from_environment(environ, dev=dev).public_url == public_url


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BILLING_HOST": "0.0.0.0"}, "BILLING_PUBLIC_URL is required"),
        ({"BILLING_PUBLIC_URL": "http://billing.example.com"}, "must be https://"),
        ({"BILLING_PUBLIC_URL": "billing.example.com"}, "absolute URL"),
        ({"BILLING_PUBLIC_URL": "ftp://billing.example.com"}, "absolute URL"),
        ({"BILLING_PUBLIC_URL": "https://u:p@billing.example.com"}, "absolute URL"),
        ({"BILLING_PUBLIC_URL": "https://billing.example.com?x=1"}, "absolute URL"),
    ],
)
def test_refused_at_start_up(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_environment(environ)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BILLING_PORT": "80a"}, "BILLING_PORT must be an integer, got '80a'"),
        ({"BILLING_DRAIN_TIMEOUT_S": "ten"}, "BILLING_DRAIN_TIMEOUT_S must be a number, got 'ten'"),
    ],
)
def test_a_malformed_number_names_its_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        from_environment(environ)
    assert str(raised.value) == message


def test_an_empty_number_variable_keeps_the_default() -> None:
    assert from_environment({"BILLING_PORT": "", "BILLING_DRAIN_TIMEOUT_S": ""}) == (
        from_environment({}))
