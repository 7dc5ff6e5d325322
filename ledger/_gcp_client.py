"""What the Google Cloud adapters share: which client errors are transient
(answered retry-safe), and close-once bookkeeping."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

import structlog
from google.api_core import exceptions as gexc

from ledger.errors import StoreUnavailable

log = structlog.get_logger(__name__)

# Errors after which the same call may succeed later: mapped to StoreUnavailable.
TRANSIENT_ERRORS: Final = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.RetryError,
    gexc.InternalServerError,
    gexc.Unknown,
    gexc.TooManyRequests,
    gexc.Aborted,
)


def release_quietly(release: Callable[[], None], failure_event: str) -> None:
    try:
        release()
    except Exception as error:
        log.warning(failure_event, error=str(error))


class Lifecycle:
    """Work after `close()` is a retry-safe StoreUnavailable; the client is
    released once, and a failed release is only logged (it leaks a channel or
    a session, nothing more)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._closed = False
        self._lock = threading.Lock()

    def check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"the {self._what} is closed")

    def close(self, release: Callable[[], None], failure_event: str) -> bool:
        """Mark closed and run `release`; False (and nothing run) if already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        release_quietly(release, failure_event)
        return True
