"""Dispute evidence: one self-contained bundle per receipt, checked offline.

A bundle holds the receipt with its proof (its own signature, or an
inclusion path to its commit's signed checkpoint), a consistency proof from
that checkpoint to the latest one, the customer's chain from the previous
checkpoint up to the receipt, the public keys, the request record, and the
verdict the service computed. It is written as canonical JSON (RFC 8785)
and sealed with a detached JWS over the canonical form of everything but
the seal, so any altered byte fails the check: a broken JSON, a changed
value (the seal), or a non-canonical encoding (refused as such).

Pure: bytes and keys in, a report out; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from crypto._b64 import b64url_encode
from crypto._canonical import canonical_json
from crypto._check import check_receipt
from crypto._checkpoint import verify_checkpoint
from crypto._errors import (
    CanonicalizationError,
    CheckpointError,
    JWKSError,
    ProofError,
    ReceiptFieldError,
)
from crypto._jws import check_compact
from crypto._merkle import verify_consistency
from crypto._receipt_log import LogBlockError, check_log_block
from crypto._signer import Signer
from crypto._trusted import TrustedKeys
from crypto.receipt import core_bytes, hash_of_core_bytes

EVIDENCE_OBJECT: Final = "dispute_evidence"
EVIDENCE_VERSION: Final = 1
REQUEST_FIELDS: Final = ("api_key_id", "client_address", "user_agent", "received_at", "request_id")


@dataclass(frozen=True, slots=True)
class EvidenceCheck:
    name: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class EvidenceReport:
    """`valid` only when every check holds (seal and stated verdict included)."""

    checks: tuple[EvidenceCheck, ...]

    @property
    def valid(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def first_failure(self) -> EvidenceCheck | None:
        return next((check for check in self.checks if not check.ok), None)


def evidence_verdict(bundle: Mapping[str, Any], keys: TrustedKeys) -> dict[str, Any]:
    """The verdict on the evidence (receipt, consistency, chain, request), as
    the service states it in the bundle and the checker recomputes it."""
    checks = [
        _check_receipt_and_log(bundle, keys),
        _check_chain(bundle),
        _check_request(bundle),
    ]
    return {
        "valid": all(check.ok for check in checks),
        "checks": [check.to_json() for check in checks],
    }


def seal_bundle(bundle: Mapping[str, Any], key: Signer) -> bytes:
    """The bundle as written: canonical JSON with `seal` over all the rest."""
    body = {name: value for name, value in bundle.items() if name != "seal"}
    sealed = {**body, "seal": key.sign_detached(canonical_json(body))}
    return canonical_json(sealed)


def check_evidence(
    data: bytes, trusted_jwks: Mapping[str, object] | None = None
) -> EvidenceReport:
    """Check a bundle as written. With `trusted_jwks` (the keys the service
    publishes, obtained elsewhere), the bundle's own keys are not trusted."""
    try:
        bundle = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        return _report(EvidenceCheck("format", False, f"not JSON: {error}"))
    if not isinstance(bundle, dict) or bundle.get("object") != EVIDENCE_OBJECT:
        return _report(EvidenceCheck("format", False, "not a dispute evidence bundle"))
    if bundle.get("version") != EVIDENCE_VERSION:
        return _report(EvidenceCheck("format", False, f"unknown version {bundle.get('version')!r}"))
    try:
        if canonical_json(bundle) != data:
            return _report(EvidenceCheck("format", False, "not in canonical JSON (RFC 8785)"))
        keys = TrustedKeys(trusted_jwks if trusted_jwks is not None else bundle.get("jwks", {}))
    except (CanonicalizationError, JWKSError, TypeError, ValueError) as error:
        return _report(EvidenceCheck("format", False, str(error)))
    checks = [_check_seal(bundle, keys)]
    recomputed = evidence_verdict(bundle, keys)
    checks += [EvidenceCheck(c["check"], c["ok"], c["detail"]) for c in recomputed["checks"]]
    stated = bundle.get("verdict")
    checks.append(
        EvidenceCheck("verdict", stated == recomputed, "" if stated == recomputed else
                      "the stated verdict is not what the evidence gives")
    )
    return EvidenceReport(tuple(checks))


def _report(*checks: EvidenceCheck) -> EvidenceReport:
    return EvidenceReport(tuple(checks))


def _check_seal(bundle: Mapping[str, Any], keys: TrustedKeys) -> EvidenceCheck:
    seal = bundle.get("seal")
    body = {name: value for name, value in bundle.items() if name != "seal"}
    parts = seal.split(".") if isinstance(seal, str) else []
    if len(parts) != 3 or parts[1]:
        return EvidenceCheck("seal", False, "no detached JWS seal")
    result = check_compact(parts[0], b64url_encode(canonical_json(body)), parts[2], keys)
    detail = "" if result.ok else f"{result.reason}: {result.detail}"
    return EvidenceCheck("seal", result.ok, detail)


def _guard(name: str, work: Callable[[], str]) -> EvidenceCheck:
    """Run one check; a malformed part of the bundle fails that check."""
    try:
        return EvidenceCheck(name, True, work())
    except _Failed as failed:
        return EvidenceCheck(name, False, str(failed))
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        ReceiptFieldError,
        CanonicalizationError,
    ) as error:
        return EvidenceCheck(name, False, f"malformed: {error!r}")


class _Failed(Exception):
    pass


def _check_receipt_and_log(bundle: Mapping[str, Any], keys: TrustedKeys) -> EvidenceCheck:
    def work() -> str:
        receipt = bundle["receipt"]
        result = check_receipt(receipt, keys)
        if not result.ok:
            raise _Failed(f"receipt: {result.reason}: {result.detail}")
        if "log" not in receipt:
            return "signed by a published key"
        return "in the log; " + _consistency(receipt, bundle["consistency"], keys)

    return _guard("receipt", work)


def _consistency(receipt: Mapping[str, Any], block: Mapping[str, Any], keys: TrustedKeys) -> str:
    try:
        own = check_log_block(receipt["receipt_hash"], receipt["log"], keys)
        latest = verify_checkpoint(block["checkpoint"], keys)
        proof = [bytes.fromhex(node) for node in block["proof"]]
        verify_consistency(own.tree_size, latest.tree_size, own.root_hash, latest.root_hash, proof)
    except (LogBlockError, CheckpointError, ProofError) as error:
        raise _Failed(f"log: {error}") from None
    return (
        f"its checkpoint ({own.tree_size} leaves) is a prefix of the latest "
        f"({latest.tree_size} leaves, {latest.timestamp})"
    )


def _check_chain(bundle: Mapping[str, Any]) -> EvidenceCheck:
    def work() -> str:
        chain: Sequence[Mapping[str, Any]] = bundle["chain"]
        receipt = bundle["receipt"]
        if not chain or chain[-1]["receipt_hash"] != receipt["receipt_hash"]:
            raise _Failed("the chain does not end at the receipt")
        previous: Mapping[str, Any] | None = None
        for link in chain:
            if hash_of_core_bytes(core_bytes(link)) != link["receipt_hash"]:
                raise _Failed(f"seq {link.get('seq')}: does not hash to its receipt_hash")
            if link["customer_id"] != receipt["customer_id"]:
                raise _Failed(f"seq {link.get('seq')}: another customer's receipt")
            if previous is not None:
                _check_link(previous, link)
            previous = link
        return f"seq {chain[0]['seq']} to {chain[-1]['seq']}: linked, balances add up"

    return _guard("chain", work)


def _check_link(previous: Mapping[str, Any], link: Mapping[str, Any]) -> None:
    where = f"seq {link['seq']}"
    if link["seq"] != previous["seq"] + 1:
        raise _Failed(f"{where}: follows seq {previous['seq']}")
    if link["previous_receipt_hash"] != previous["receipt_hash"]:
        raise _Failed(f"{where}: does not link to the receipt before it")
    if link["balance_after_minor"] != previous["balance_after_minor"] + link["amount_minor"]:
        raise _Failed(f"{where}: the balance does not add up")


def _check_request(bundle: Mapping[str, Any]) -> EvidenceCheck:
    def work() -> str:
        request = bundle["request"]
        if request is None:  # not a flaw of the receipt: say so, do not fail
            return "no request record (a charge from before records were kept)"
        missing = [name for name in REQUEST_FIELDS if not isinstance(request.get(name), str)]
        if missing:
            raise _Failed(f"request record lacks {', '.join(missing)}")
        return f"API key {request['api_key_id']} at {request['received_at']}"

    return _guard("request", work)
