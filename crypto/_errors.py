"""Exception types of the crypto package."""

from __future__ import annotations


class CanonicalizationError(ValueError):
    """A value has no exact RFC 8785 form (integer beyond 2**53, NaN, lone surrogate...)."""


class ReceiptFieldError(ValueError):
    """A receipt core field has the wrong type or format."""


class KeyLoadError(ValueError):
    """A private key file cannot be read, parsed, or is of an unsupported type."""


class JWKSError(ValueError):
    """A JWKS document (or one of its keys) is malformed."""
