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


class _ReasonError(Exception):
    """An error with a stable machine-readable `reason` and a `detail` for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LogError(_ReasonError):
    """The log's stored hashes cannot answer: a node outside the tree, a missing or short tile."""


class ProofError(LogError):
    """An inclusion or consistency proof does not verify, or asks for impossible sizes."""


class CheckpointError(_ReasonError, ValueError):
    """A checkpoint JWS is malformed, signed by an unknown key, or does not verify."""


class NoteError(_ReasonError, ValueError):
    """A signed note (or note verifier key) is malformed or its signature does not verify."""


class KmsError(RuntimeError):
    """Cloud KMS did not sign: unreachable, refused, or an answer that does not
    check out. Nothing was signed, so whatever waited on it may be retried."""
