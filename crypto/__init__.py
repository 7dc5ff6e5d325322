"""Signed, hash-chained receipts that anyone can verify with the public JWKS.

See README.md in this folder for the receipt format and how customers verify.
"""

from crypto._canonical import canonical_json
from crypto._chain import ChainFailure, ChainReport, verify_chain
from crypto._check import VerificationResult, verify_receipt
from crypto._errors import CanonicalizationError, JWKSError, KeyLoadError, ReceiptFieldError
from crypto._jsonl import verify_jsonl
from crypto._keyring import KeyRing
from crypto._keys import SigningKey, load_or_create_dev_key, load_private_key_pem
from crypto._seal import seal_receipt
from crypto._sign_process import SigningProcess, SigningProcessError, sign_reply_timeout_ms
from crypto._trusted import TrustedKeys
from crypto.receipt import GENESIS_HASH, RECEIPT_CORE_FIELDS, receipt_hash

__all__ = [
    "GENESIS_HASH",
    "RECEIPT_CORE_FIELDS",
    "CanonicalizationError",
    "ChainFailure",
    "ChainReport",
    "JWKSError",
    "KeyLoadError",
    "KeyRing",
    "ReceiptFieldError",
    "SigningKey",
    "SigningProcess",
    "SigningProcessError",
    "TrustedKeys",
    "VerificationResult",
    "canonical_json",
    "load_or_create_dev_key",
    "load_private_key_pem",
    "receipt_hash",
    "seal_receipt",
    "sign_reply_timeout_ms",
    "verify_chain",
    "verify_jsonl",
    "verify_receipt",
]
