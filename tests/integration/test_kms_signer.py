"""The real service with its signing key in Cloud KMS (a local fake speaking
KMS's REST wire format): charges are answered with checkpoints that PyJWT
verifies with the JWKS the service publishes, whose key is the KMS key's;
a KMS outage is a retry-safe 503, never a receipt without its signature."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from crypto import verify_receipt
from crypto._jwk import public_jwk
from crypto._kms import kms_attempts_max
from tests.fakes.kms_server import FakeKeyVersion, FakeKms
from tests.integration.conftest import Service
from tests.integration.test_receipt_log import _charge, _verify_independently


@pytest.fixture
def fake_kms() -> Iterator[FakeKms]:
    fake = FakeKms(delay_ms=5.0).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(params=["RS256", "ES256"])
def kms_version(request: pytest.FixtureRequest, fake_kms: FakeKms) -> FakeKeyVersion:
    return fake_kms.add_key(request.param)


@pytest.fixture
def receipt_signing() -> str:
    return "checkpoint"


@pytest.fixture
def settings_overrides(
    fake_kms: FakeKms, kms_version: FakeKeyVersion, receipt_signing: str
) -> dict[str, Any]:
    return {
        "signing_key_path": None,
        "signing_key_uri": kms_version.uri,
        "kms_endpoint": fake_kms.url,
        "receipt_signing": receipt_signing,
    }


async def test_checkpoints_are_signed_by_the_kms_key_the_jwks_publishes(
    service: Service, fake_kms: FakeKms, kms_version: FakeKeyVersion
) -> None:
    customers = [await service.create_customer() for _ in range(3)]
    answers = await asyncio.gather(
        *(_charge(service, customer) for customer in customers for _ in range(10))
    )
    jwks = await service.jwks()
    kms_jwk = public_jwk(kms_version.private_key.public_key())
    assert jwks["keys"][0]["kid"] == kms_jwk["kid"]  # the active key: the KMS one
    by_id = {answer["receipt_id"]: answer for answer in answers}
    for customer in customers:
        for receipt in await service.receipts(customer):
            _verify_independently(receipt, jwks)  # PyJWT + hashlib, against the head
            answered = {**receipt, "log": by_id[receipt["receipt_id"]]["log"]}
            claims = _verify_independently(answered, jwks)  # against its commit's checkpoint
            assert claims["tree_size"] == answered["log"]["tree_size"]
    # One KMS signature per commit, not per charge.
    checkpoints = {answer["log"]["checkpoint"] for answer in answers}
    assert fake_kms.sign_calls == len(checkpoints) <= len(answers)


async def test_a_kms_outage_is_a_retry_safe_503_and_the_retry_is_signed(
    service: Service, fake_kms: FakeKms
) -> None:
    customer = await service.create_customer()
    await _charge(service, customer)
    fake_kms.fail_next(*["503"] * kms_attempts_max)
    event = service.event(customer)
    status, body, _ = await service.post_event(customer, event)
    assert status == 503, body
    assert body["error"]["code"] == "store_unavailable"  # retry-safe: nothing was charged
    for _ in range(50):  # the writer restarts after the failed commit
        status, body, _ = await service.post_event(customer, event)
        if status == 202:
            break
        await asyncio.sleep(0.1)
    assert status == 202, body
    chain = await service.receipts(customer)
    assert [receipt["seq"] for receipt in chain] == [1, 2]  # nothing lost, nothing doubled
    assert _verify_independently(chain[1], await service.jwks())


@pytest.mark.parametrize("receipt_signing", ["receipt"])
@pytest.mark.parametrize("kms_version", ["ES256"], indirect=True)
async def test_receipt_mode_signs_every_receipt_in_kms_from_threads(
    service: Service, fake_kms: FakeKms
) -> None:
    customer = await service.create_customer()
    answers = await asyncio.gather(*(_charge(service, customer) for _ in range(12)))
    jwks = await service.jwks()
    for receipt in await service.receipts(customer):
        assert verify_receipt(receipt, jwks).ok
        assert receipt["signature"].split(".")[0]  # its own detached JWS
    assert fake_kms.sign_calls >= len(answers) + 1  # each receipt, and the checkpoints
