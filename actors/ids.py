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
