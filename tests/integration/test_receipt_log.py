"""The receipt log through the real service: every charge is a leaf, every
commit one signed checkpoint, and a receipt verifies alone with a standard
JOSE library (PyJWT), the JWKS and plain hashlib."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
import rfc8785
from aiohttp import web

from crypto import (
    RECEIPT_CORE_FIELDS,
    TrustedKeys,
    open_note,
    parse_checkpoint_note,
    verify_consistency,
    verify_receipt,
)
from gateway.compose import build_runtime
from tests.integration.conftest import Service, base_settings


# -- an independent verifier: RFC 9162 2.1.3.2 with hashlib, JWS with PyJWT ----
def _leaf(receipt: dict[str, Any]) -> bytes:
    core = {name: receipt[name] for name in RECEIPT_CORE_FIELDS}
    digest = hashlib.sha256(rfc8785.dumps(core)).digest()
    assert receipt["receipt_hash"] == "sha256:" + digest.hex()
    return hashlib.sha256(b"\x00" + digest).digest()


def _root_from_path(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2, step by step."""
    assert 0 <= index < size
    fn, sn, r = index, size - 1, leaf
    for p in path:
        assert sn != 0, "proof longer than the tree"
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0, "proof shorter than the tree"
    return r


def _checkpoint_claims(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    decoded = jwt.api_jws.PyJWS().decode_complete(token, key=key, algorithms=[header["alg"]])
    import json

    return dict(json.loads(decoded["payload"]))


def _verify_independently(receipt: dict[str, Any], jwks: dict[str, Any]) -> dict[str, Any]:
    block = receipt["log"]
    claims = _checkpoint_claims(block["checkpoint"], jwks)
    root = _root_from_path(
        _leaf(receipt),
        block["index"],
        block["tree_size"],
        [bytes.fromhex(node) for node in block["inclusion"]],
    )
    assert claims["tree_size"] == block["tree_size"]
    assert claims["root_hash"] == "sha256:" + root.hex()
    return claims


async def _charge(service: Service, customer: Any, **overrides: Any) -> dict[str, Any]:
    status, body, _ = await service.post_event(customer, service.event(customer, **overrides))
    assert status == 202, body
    return body


async def _get(service: Service, path: str, headers: dict[str, str], **params: Any) -> Any:
    async with service.session.get(path, headers=headers, params=params) as response:
        assert response.status == 200, await response.text()
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()


# -- tests -----------------------------------------------------------------------
async def test_a_charge_carries_a_proof_that_pyjwt_and_hashlib_verify(service: Service) -> None:
    customer = await service.create_customer()
    answer = await _charge(service, customer)
    jwks = await service.jwks()
    receipt = await _get(service, f"/v1/receipts/{answer['receipt_id']}", customer.auth)
    assert "signature" not in receipt  # checkpoint mode: one signature per commit
    assert answer["log"]["index"] == receipt["log"]["index"]
    claims = _verify_independently(receipt, jwks)
    assert claims["origin"] == service.runtime.settings.log_origin
    # The 202's own proof is against its commit's checkpoint, and verifies too.
    answered = {**receipt, "log": answer["log"]}
    assert _verify_independently(answered, jwks)["tree_size"] == answer["log"]["tree_size"]
    assert verify_receipt(receipt, jwks).ok


async def test_every_receipt_of_many_customers_is_one_leaf_in_commit_order(
    service: Service,
) -> None:
    customers = [await service.create_customer() for _ in range(3)]
    answers = await asyncio.gather(
        *(_charge(service, customer) for customer in customers for _ in range(20))
    )
    indexes = sorted(answer["log"]["index"] for answer in answers)
    assert indexes == list(range(60))  # each leaf once, no gap
    head = await _get(service, "/v1/log/checkpoint", customers[0].auth)
    assert head["tree_size"] == 60
    jwks = await service.jwks()
    for customer in customers:
        chain = await service.receipts(customer)
        assert [r["seq"] for r in chain] == list(range(1, 21))
        for receipt in chain:  # all proved against the same, newest checkpoint
            assert _verify_independently(receipt, jwks)["tree_size"] == 60


async def test_consistency_proofs_link_old_checkpoints_to_the_head(service: Service) -> None:
    customer = await service.create_customer()
    first = (await _charge(service, customer))["log"]["tree_size"]
    for _ in range(6):
        await _charge(service, customer)
    proof = await _get(service, "/v1/log/consistency", customer.auth, first=first)
    old, new = proof["first"], proof["second"]
    assert (old["tree_size"], new["tree_size"]) == (first, 7)
    verify_consistency(
        old["tree_size"],
        new["tree_size"],
        bytes.fromhex(old["root_hash"].removeprefix("sha256:")),
        bytes.fromhex(new["root_hash"].removeprefix("sha256:")),
        [bytes.fromhex(node) for node in proof["proof"]],
    )
    history = await _get(service, "/v1/log/checkpoints", service.admin, limit=3)
    assert [c["tree_size"] for c in history["data"]] == [1, 2, 3] and history["has_more"]
    rest = await _get(service, "/v1/log/checkpoints", service.admin, after_size=3)
    assert [c["tree_size"] for c in rest["data"]] == [4, 5, 6, 7]


async def test_inclusion_against_an_older_checkpoint_and_not_before_the_leaf(
    service: Service,
) -> None:
    customer = await service.create_customer()
    answers = [await _charge(service, customer) for _ in range(4)]
    second = answers[1]
    proof = await _get(
        service, f"/v1/receipts/{second['receipt_id']}/inclusion", customer.auth, tree_size=3
    )
    receipt = await _get(service, f"/v1/receipts/{second['receipt_id']}", customer.auth)
    receipt["log"] = {k: proof[k] for k in ("index", "tree_size", "inclusion", "checkpoint")}
    assert _verify_independently(receipt, await service.jwks())["tree_size"] == 3
    async with service.session.get(
        f"/v1/receipts/{answers[3]['receipt_id']}/inclusion",
        params={"tree_size": 2},
        headers=customer.auth,
    ) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_in_checkpoint"


async def test_another_customer_cannot_prove_my_receipt(service: Service) -> None:
    mine, theirs = await service.create_customer(), await service.create_customer()
    answer = await _charge(service, mine)
    async with service.session.get(
        f"/v1/receipts/{answer['receipt_id']}/inclusion", headers=theirs.auth
    ) as response:
        assert response.status == 404
    async with service.session.get("/v1/log/checkpoint") as response:
        assert response.status == 401  # the log is for key holders


async def test_a_tampered_receipt_fails_with_its_own_reason(service: Service) -> None:
    customer = await service.create_customer()
    answer = await _charge(service, customer)
    await _charge(service, customer)
    jwks = await service.jwks()
    receipt = await _get(service, f"/v1/receipts/{answer['receipt_id']}", customer.auth)

    changed_amount = {**receipt, "amount_minor": receipt["amount_minor"] + 1}
    assert verify_receipt(changed_amount, jwks).reason == "hash_mismatch"

    wrong_index = {**receipt, "log": {**receipt["log"], "index": 1}}
    assert verify_receipt(wrong_index, jwks).reason == "not_in_log"

    path = receipt["log"]["inclusion"]
    bent = {**receipt, "log": {**receipt["log"], "inclusion": ["00" * 32, *path[1:]]}}
    assert verify_receipt(bent, jwks).reason == "not_in_log"

    header, payload, signature = receipt["log"]["checkpoint"].split(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    broken = {**receipt, "log": {**receipt["log"], "checkpoint": f"{header}.{forged}.{signature}"}}
    assert verify_receipt(broken, jwks).reason in {"bad_signature", "invalid_payload"}

    other_key = {"keys": [dict(TrustedKeys(jwks).document["keys"][0], kid="someone-else")]}  # type: ignore[index]
    assert verify_receipt(receipt, other_key).reason == "unknown_kid"


async def test_the_head_is_a_c2sp_signed_note(service: Service) -> None:
    customer = await service.create_customer()
    await _charge(service, customer)
    head = await _get(service, "/v1/log/checkpoint", customer.auth)
    note = await _get(service, "/v1/log/checkpoint.note", customer.auth)
    async with service.session.get("/.well-known/receipt-log-note-key") as response:
        verifier_key = (await response.text()).strip()
    text = open_note(note, verifier_key)
    origin, size, root = parse_checkpoint_note(text)
    assert (origin, size) == (service.runtime.settings.log_origin, head["tree_size"])
    assert "sha256:" + root.hex() == head["root_hash"]
    assert base64.b64encode(root).decode() in note


@pytest.mark.parametrize("settings_overrides", [{"receipt_signing": "receipt"}])
async def test_receipt_mode_signs_each_receipt_and_still_logs_it(service: Service) -> None:
    customer = await service.create_customer()
    answer = await _charge(service, customer)
    receipt = await _get(service, f"/v1/receipts/{answer['receipt_id']}", customer.auth)
    jwks = await service.jwks()
    assert receipt["signature"].count(".") == 2
    _verify_independently(receipt, jwks)
    assert verify_receipt({k: v for k, v in receipt.items() if k != "log"}, jwks).ok


async def test_a_restart_resumes_the_log_where_it_stopped(
    tmp_path: Path, signing_key_file: Path
) -> None:
    settings = base_settings(tmp_path / "data", signing_key_file)
    loop = asyncio.get_running_loop()
    sizes: list[int] = []
    for mode in ("checkpoint", "receipt", "checkpoint"):
        runtime = await loop.run_in_executor(
            None, build_runtime, replace(settings, receipt_signing=mode)
        )
        runner = web.AppRunner(runtime.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        import aiohttp

        session = aiohttp.ClientSession(base_url=f"http://{host}:{port}")
        service = Service(url="", session=session, runtime=runtime)
        try:
            customer = await service.create_customer()
            for _ in range(3):
                sizes.append((await _charge(service, customer))["log"]["tree_size"])
            jwks = await service.jwks()
            for receipt in await service.receipts(customer):
                assert verify_receipt(receipt, jwks).ok
            if len(sizes) > 3:
                proof = await _get(service, "/v1/log/consistency", service.admin, first=3)
                assert proof["second"]["tree_size"] == len(sizes)
        finally:
            await session.close()
            await runner.cleanup()
            await loop.run_in_executor(None, runtime.stop)
    assert sizes == list(range(1, 10))  # no gap, no reused index across restarts and modes
