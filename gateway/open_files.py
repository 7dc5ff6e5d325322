"""The open-files limit of a serving process.

Every client connection is a file. Many systems start processes with a soft
limit of 1,024 and a much higher hard one; at that soft limit, 3,000 clients
(the bench's overload) made accept fail and SQLite unable to open what it
needs: 2,228 connections refused and 11,745 charges answered 503. A server
may raise its own soft limit up to the hard one, as Go's runtime does for
every program, so `billing serve` does at start-up.
"""

from __future__ import annotations

import resource
from typing import Final

import structlog

log = structlog.get_logger(__name__)

# What `billing serve` asks for: connections for the admission bound many
# times over, far below any kernel's per-process maximum...
SERVE_OPEN_FILES_WANTED: Final = 65_536
# ...and below what it warns: the bench's 3,000-connection overload plus the
# files the service needs anyway.
SERVE_OPEN_FILES_MIN: Final = 4_096


def raise_open_files_limit(needed: int) -> str | None:
    """Raise the soft open-files limit to `needed` as far as the hard limit
    allows (never lower it); children started later inherit it. Returns a
    one-line warning when the hard limit is below `needed`, else None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        return (
            f"open files are limited to {target} by the hard limit, below the {needed}"
            " wanted: expect refused connections under heavy load (raise `ulimit -Hn`)"
        )
    return None


def raise_for_serving() -> None:
    """Call once before serving; logs a warning if the hard limit leaves fewer
    than `SERVE_OPEN_FILES_MIN` files."""
    raise_open_files_limit(SERVE_OPEN_FILES_WANTED)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < SERVE_OPEN_FILES_MIN:
        log.warning(
            "serve.open_files_limited",
            soft_limit=soft,
            wanted=SERVE_OPEN_FILES_MIN,
            detail="expect refused connections under heavy load; raise `ulimit -Hn`",
        )
