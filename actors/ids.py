"""Identifiers minted on the hot path without a system call per id.

`time-ordered prefix + per-process nonce + counter`: unique across processes
(the nonce), increasing within one (the counter), and ordered roughly by
time, which keeps inserts into the ledger's receipt_id index local.
"""

from __future__ import annotations

import itertools
import os
import time


class IdMinter:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._nonce = os.urandom(4).hex()
        self._counter = itertools.count()  # next() is atomic under the GIL

    def __call__(self) -> str:
        millis = time.time_ns() // 1_000_000
        return f"{self._prefix}{millis:012x}{self._nonce}{next(self._counter) & 0xFFFFFF:06x}"


class SecretIdMinter:
    """Ids that carry 128 secret random bits after the time-ordered prefix.

    Receipt ids need them: the receipt log shows every customer the hashes of
    other customers' receipts in inclusion proofs, and a receipt core is
    otherwise guessable (amounts, timestamps, sequence numbers). With 128
    unguessable bits in every core, a hash cannot be searched back to its
    contents. Costs one getrandom call (~1 µs) per id."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def __call__(self) -> str:
        millis = time.time_ns() // 1_000_000
        return f"{self._prefix}{millis:012x}{os.urandom(16).hex()}"
