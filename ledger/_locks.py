"""Lock acquisition with a timeout, shared by the embedded adapters."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Final

from ledger.errors import StoreUnavailable

# How long a caller waits for a lock before the store reports itself busy.
lock_timeout_s: Final = 10.0


@contextlib.contextmanager
def locked(lock: threading.Lock, what: str) -> Iterator[None]:
    """Hold `lock`, or raise StoreUnavailable (retry-safe) after lock_timeout_s."""
    if not lock.acquire(timeout=lock_timeout_s):
        raise StoreUnavailable(f"{what} busy for more than {lock_timeout_s}s")
    try:
        yield
    finally:
        lock.release()
