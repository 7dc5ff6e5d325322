"""pykka's private actor loop, which supervisor/ copies and overrides, is the
one the copy was taken from.

`ScheduledActor` runs pykka actors on shared scheduler threads, which pykka
has no public hook for: `_handle_envelope` is a copy of the body of
`Actor._actor_loop_running`, `_run_slice`/`_end` replay `_actor_loop`, and
`SupervisedActor` overrides `_handle_failure` and `_actor_loop`. pyproject.toml
pins the exact pykka version; this test fails when pykka's code differs.
"""

from __future__ import annotations

import hashlib
import inspect
from importlib import metadata

from pykka import _actor, _threading

PINNED_VERSION = "4.5.0"

# sha256 (first 16 hex digits) of inspect.getsource() of each private member we depend on.
PINNED_SOURCES = {
    (_actor.Actor, "_actor_loop"): "961c1b2b624061fa",
    (_actor.Actor, "_actor_loop_setup"): "2687bc3726569305",
    (_actor.Actor, "_actor_loop_running"): "4109f316d2be434e",
    (_actor.Actor, "_actor_loop_teardown"): "1b35ca263372af74",
    (_actor.Actor, "_handle_failure"): "e0d63e0c57e4cbca",
    (_actor.Actor, "_handle_receive"): "2851d2852985bbb5",
    (_threading.ThreadingActor, "_create_actor_inbox"): "6d2e6aaed8a889b8",
    (_threading.ThreadingActor, "_start_actor_loop"): "bf43581efaa177af",
}

_HOW_TO_FIX = (
    "pykka's private actor loop changed under supervisor/. Re-read the new "
    "pykka._actor.Actor._actor_loop / _actor_loop_running, re-copy the body into "
    "supervisor/_scheduled.py (ScheduledActor._handle_envelope, _run_slice, _end) "
    "and check supervisor/_actor.py's overrides, then pin the new version in "
    "pyproject.toml and update PINNED_VERSION and PINNED_SOURCES here."
)


def _digest(owner: type, name: str) -> str:
    source = inspect.getsource(getattr(owner, name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_installed_pykka_is_the_pinned_version() -> None:
    assert metadata.version("pykka") == PINNED_VERSION, _HOW_TO_FIX


def test_pykka_private_loop_is_the_one_we_copied() -> None:
    changed = [
        f"{owner.__name__}.{name}"
        for (owner, name), digest in PINNED_SOURCES.items()
        if _digest(owner, name) != digest
    ]
    assert changed == [], f"{changed}: {_HOW_TO_FIX}"
