"""One receipt checked on its own: fields, hash, signature by a known key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from crypto._b64 import b64url_encode
from crypto._errors import CanonicalizationError, ReceiptFieldError
from crypto._jws import OK, VerificationResult, check_compact
from crypto._jws import fail as _fail
from crypto._receipt_log import LogBlockError, LogPosition, check_log_block
from crypto._trusted import TrustedKeys, trusted_keys
from crypto.receipt import RECEIPT_CORE_FIELDS, core_bytes, hash_of_core_bytes

_RECEIPT_FIELDS = (*RECEIPT_CORE_FIELDS, "receipt_hash")
_RECEIPT_FIELD_SET = frozenset(_RECEIPT_FIELDS)


class Link(NamedTuple):
    """What the chain check needs from a receipt that verified on its own."""

    receipt_id: str
    customer_id: str
    seq: int
    previous_receipt_hash: str
    receipt_hash: str
    # Where its `log` block proved it (None: no log block): what a check
    # against a checkpoint the verifier holds needs (crypto._anchor).
    log: LogPosition | None = None


# For a holder of the log itself (the service's own audit): checks that a
# receipt with neither signature nor log block is the stored leaf it claims.
LeafCheck = Callable[[Mapping[str, object], str], VerificationResult]


def check_receipt(
    receipt: object, keys: TrustedKeys, leaf_check: LeafCheck | None = None
) -> VerificationResult:
    """Hash, then proof, of one receipt; the first problem found wins.

    A receipt proves itself with its own `signature` (receipt mode), or with
    `log` (checkpoint mode): an inclusion path to the root of a signed
    checkpoint. When it carries both, both must hold."""
    return check_receipt_logged(receipt, keys, leaf_check)[0]


def check_receipt_logged(
    receipt: object, keys: TrustedKeys, leaf_check: LeafCheck | None = None
) -> tuple[VerificationResult, LogPosition | None]:
    """check_receipt, and where its `log` block proved it (None without one)."""
    # A dict first: the ABC check alone costs ~0.2 us per receipt verified.
    if type(receipt) is not dict and not isinstance(receipt, Mapping):
        return _fail("missing_field", "a receipt must be a JSON object"), None
    if not receipt.keys() >= _RECEIPT_FIELD_SET:  # one C loop; names only when some are missing
        missing = [name for name in _RECEIPT_FIELDS if name not in receipt]
        return _fail("missing_field", f"missing {', '.join(missing)}"), None
    try:
        payload = core_bytes(receipt)
    except (ReceiptFieldError, CanonicalizationError) as error:
        return _fail("invalid_field", str(error)), None
    claimed_hash = receipt["receipt_hash"]
    computed_hash = hash_of_core_bytes(payload)
    if claimed_hash != computed_hash:
        detail = f"receipt_hash is {claimed_hash!r} but the core fields hash to {computed_hash}"
        return _fail("hash_mismatch", detail), None
    if "signature" not in receipt and "log" not in receipt:
        if leaf_check is not None:
            return leaf_check(receipt, computed_hash), None
        return _fail("missing_field", "missing signature (or log proof)"), None
    if "signature" in receipt:
        result = _check_signature(receipt["signature"], payload, keys)
        if not result.ok:
            return result, None
    if "log" not in receipt:
        return OK, None
    try:
        return OK, check_log_block(
            computed_hash, receipt["log"], keys, keys.checkpoints, keys.proven
        )
    except LogBlockError as error:
        return _fail(error.reason, error.detail), None


def _check_signature(signature: object, payload: bytes, keys: TrustedKeys) -> VerificationResult:
    if not isinstance(signature, str):
        return _fail("malformed_signature", "signature is not a string")
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "":
        return _fail("malformed_signature", "signature is not compact JWS with a detached payload")
    return check_compact(parts[0], b64url_encode(payload), parts[2], keys)


def link_of(receipt: Mapping[str, object], log: LogPosition | None = None) -> Link:
    """The chain fields of a receipt that passed check_receipt (types already checked)."""
    return Link(
        str(receipt["receipt_id"]),
        str(receipt["customer_id"]),
        int(receipt["seq"]),  # type: ignore[call-overload]
        str(receipt["previous_receipt_hash"]),
        str(receipt["receipt_hash"]),
        log,
    )


def receipt_id_of(receipt: object) -> str | None:
    if isinstance(receipt, Mapping):
        receipt_id = receipt.get("receipt_id")
        if isinstance(receipt_id, str):
            return receipt_id
    return None


def verify_receipt(
    receipt: Mapping[str, object], jwks: Mapping[str, object] | TrustedKeys
) -> VerificationResult:
    """Verify one receipt: every field present, hash recomputed, signature by a known key.

    Extra fields (amount, timestamp, status...) are ignored: the hash covers
    exactly RECEIPT_CORE_FIELDS. A malformed JWKS raises JWKSError.
    """
    return check_receipt(receipt, trusted_keys(jwks))
