"""Starting a supervisor actor and wrapping it in a handle (both kinds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import pykka
import structlog

from supervisor._errors import SupervisorError, SupervisorSpecError
from supervisor._handle import Published, SupervisorHandle
from supervisor._link import ChildExited, Link
from supervisor._metrics import metrics_for
from supervisor._spec import is_normal_exit, validate_name

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from supervisor._core import SupervisorCore

__all__ = ["EscalationCallback", "StartChildren", "launch"]

EscalationCallback = Callable[[str], None]
"""Called with the exit reason when a root supervisor exits abnormally (escalation)."""

H = TypeVar("H", bound=SupervisorHandle)

_log = structlog.get_logger("supervisor")


class StartChildren(NamedTuple):
    """Asked of a new supervisor actor: start the initial children, in order."""


def _root_notifier(
    name: str, on_escalation: EscalationCallback | None
) -> Callable[[ChildExited], None]:
    def notify(report: ChildExited) -> None:
        # Runs on the root supervisor's thread as it ends.
        if on_escalation is None or is_normal_exit(report.reason):
            return
        try:
            on_escalation(report.reason)
        except Exception as exc:  # the callback must not hide the escalation itself
            _log.error("supervisor.escalation_callback_failed", supervisor=name, error=repr(exc))

    return notify


def launch(
    actor_cls: type[SupervisorCore],
    handle_cls: type[H],
    *,
    name: str,
    link: Link | None,
    on_escalation: EscalationCallback | None,
    registry: CollectorRegistry | None,
    start_timeout_ms: int,
    **actor_kwargs: Any,
) -> H:
    """Start the actor, have it start its children, return the handle.

    Raises `ChildStartError` (children already started are stopped first) or
    `SupervisorError` if starting takes longer than `start_timeout_ms`.
    """
    validate_name("supervisor_name", name)
    if link is not None and on_escalation is not None:
        raise SupervisorSpecError(
            "invalid_on_escalation",
            "only a root supervisor (link=None) reports escalation through a callback; "
            "a child supervisor escalates to its parent through its link",
            supervisor=name,
        )
    if registry is None and link is not None:
        registry = link.registry
    if link is None:
        link = Link(name, _root_notifier(name, on_escalation), registry=registry)
    published = Published()
    ref = actor_cls.start(
        link,
        name=name,
        metrics=metrics_for(registry),
        registry=registry,
        published=published,
        **actor_kwargs,
    )
    try:
        ref.ask(StartChildren(), timeout=start_timeout_ms / 1000)
    except BaseException as exc:
        ref.stop(block=False)
        link.exited.wait(start_timeout_ms / 1000)
        if isinstance(exc, pykka.Timeout):
            raise SupervisorError(
                f"supervisor {name!r} did not start within {start_timeout_ms} ms"
            ) from exc
        raise
    return handle_cls(name, ref, link, published)
