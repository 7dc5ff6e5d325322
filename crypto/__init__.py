"""Signed, hash-chained receipts that anyone can verify with the public JWKS.

See README.md in this folder for the receipt format and how customers verify.
"""

from crypto._canonical import canonical_json
from crypto._errors import CanonicalizationError, JWKSError, KeyLoadError, ReceiptFieldError
from crypto._keyring import KeyRing
from crypto._keys import SigningKey, load_or_create_dev_key, load_private_key_pem
from crypto.receipt import GENESIS_HASH, RECEIPT_CORE_FIELDS, receipt_hash

__all__ = [
    "GENESIS_HASH",
    "RECEIPT_CORE_FIELDS",
    "CanonicalizationError",
    "JWKSError",
    "KeyLoadError",
    "KeyRing",
    "ReceiptFieldError",
    "SigningKey",
    "canonical_json",
    "load_or_create_dev_key",
    "load_private_key_pem",
    "receipt_hash",
]
