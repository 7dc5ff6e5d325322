"""RFC 8785 (JCS) canonical JSON.

`canonical_json` is the maintained `rfc8785` library, for any value.
`canonical_core_json` is a fast path for the one shape a receipt core has: a
flat object of ASCII keys whose values are str, int (|n| < 2**53) or None.
For that shape JCS is sorted keys + shortest escapes + UTF-8, which orjson
produces byte for byte; tests/crypto/test_canonical.py proves it against
`rfc8785` for every Unicode scalar value in every core field. The verifier
needs it: the library costs ~20-40 us per receipt, orjson ~1 us.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import rfc8785

from crypto._errors import CanonicalizationError


def canonical_json(obj: object) -> bytes:
    """The RFC 8785 bytes of `obj`; raises CanonicalizationError if it has none."""
    try:
        return rfc8785.dumps(obj)  # type: ignore[arg-type]
    except rfc8785.CanonicalizationError as error:
        raise CanonicalizationError(str(error)) from error


def kept_bytes(data: bytes) -> bytes:
    """`data` in a block of its own size, for bytes that are kept.

    orjson (3.13) returns its output in the buffer it wrote into, at least
    4 KiB, never shrunk: a 600-byte receipt kept by a live account actor
    held 4-8 KiB (tracemalloc: 12 KiB of the ~25 KiB kept per live actor).
    """
    return memoryview(data).tobytes()


def canonical_core_json(core: Mapping[str, str | int | None]) -> bytes:
    """JCS of a checked receipt core (see module docstring for why this is exact).

    Callers guarantee the shape (crypto.receipt.check_core): ASCII keys, values
    of exact type str, int within +-(2**53 - 1), or None. Kept in memory
    while the receipt is in flight, hence `kept_bytes`.
    """
    try:
        return kept_bytes(orjson.dumps(core, option=orjson.OPT_SORT_KEYS))
    except orjson.JSONEncodeError as error:  # lone surrogates: no UTF-8, no JCS
        raise CanonicalizationError(f"input contains non-UTF-8 codepoints: {error}") from error
