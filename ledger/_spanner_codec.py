"""Values to and from the Spanner client, shared by the Spanner modules."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any, Final

from google.cloud.spanner_v1.keyset import KeySet as _UntypedKeySet

__all__ = ["KeySet", "decode_bytes", "encode_bytes", "read_key", "request_timeout_s"]

request_timeout_s: Final = 30.0
# The client's KeySet is unannotated; this typed alias keeps mypy strict honest.
KeySet: Final[Callable[..., Any]] = _UntypedKeySet


def encode_bytes(row: Sequence[Any]) -> tuple[Any, ...]:
    """The client sends BYTES values as they are, and Spanner wants base64."""
    return tuple(base64.b64encode(v) if isinstance(v, bytes) else v for v in row)


def decode_bytes(row: Sequence[Any]) -> list[Any]:
    """...and reads hand back the base64 text, as bytes: decode it."""
    return [base64.b64decode(v, validate=True) if isinstance(v, bytes) else v for v in row]


def read_key(
    reader: Any, table: str, columns: Sequence[str], *key: Any, index: str = ""
) -> list[Any]:
    """The rows at one key of `table` (or of its `index`), drained, with the
    request timeout: a transaction's next read waits until this one is done."""
    keyset = KeySet(keys=[list(key)])
    return list(reader.read(table, columns, keyset, index=index, timeout=request_timeout_s))
