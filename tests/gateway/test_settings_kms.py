"""BILLING_SIGNING_KEY (a Cloud KMS key version) and BILLING_KMS_ENDPOINT:
refused at start-up in one line when they cannot work."""

from __future__ import annotations

import pytest

from gateway.settings import SettingsError, from_environment

KEY = "gcpkms://projects/p/locations/europe-west1/keyRings/billing/cryptoKeys/receipts/cryptoKeyVersions/3"


def test_a_kms_key_and_an_endpoint_are_taken() -> None:
    settings = from_environment(
        {"BILLING_SIGNING_KEY": KEY, "BILLING_KMS_ENDPOINT": "http://127.0.0.1:8099/"}
    )
    assert settings.signing_key_uri == KEY
    assert settings.kms_endpoint == "http://127.0.0.1:8099"
    assert from_environment({"BILLING_SIGNING_KEY": KEY}).kms_endpoint is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"BILLING_SIGNING_KEY": "/secrets/key.pem"},
            "BILLING_SIGNING_KEY: a KMS key is gcpkms://",
        ),
        ({"BILLING_SIGNING_KEY": KEY.rsplit("/", 2)[0]}, "cryptoKeyVersions/V"),
        (
            {"BILLING_SIGNING_KEY": KEY, "BILLING_SIGNING_KEY_FILE": "/secrets/key.pem"},
            "not both",
        ),
        ({"BILLING_KMS_ENDPOINT": "https://kms.example"}, "BILLING_SIGNING_KEY is not"),
        # a bearer token would cross the network in clear text
        ({"BILLING_SIGNING_KEY": KEY, "BILLING_KMS_ENDPOINT": "http://kms.example"}, "loopback"),
        ({"BILLING_SIGNING_KEY": KEY, "BILLING_KMS_ENDPOINT": "https://kms.example/v1"}, "host"),
        ({"BILLING_SIGNING_KEY": KEY, "BILLING_KMS_ENDPOINT": "kms.example"}, "https://"),
    ],
)
def test_refused_at_start_up_in_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as error:
        from_environment(environ)
    assert "\n" not in str(error.value)
