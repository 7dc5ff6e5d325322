"""Child specs and supervisor flags: frozen data, validated when a supervisor starts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from supervisor._errors import SupervisorSpecError

if TYPE_CHECKING:
    from supervisor._link import Link

__all__ = [
    "CHILD_TYPES",
    "RESTART_TYPES",
    "STRATEGIES",
    "ChildInfo",
    "ChildSpec",
    "SupervisorFlags",
    "is_normal_exit",
    "validate_children",
    "validate_name",
]

RESTART_TYPES = ("permanent", "transient", "temporary")
CHILD_TYPES = ("worker", "supervisor")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")

# Exits that a transient child is not restarted after (OTP: normal, shutdown).
_NORMAL_EXIT_REASONS = frozenset({"normal", "shutdown"})

# Limits: a typo of a few zeros should fail at start, not hang a shutdown for a day.
shutdown_timeout_ms_max = 3_600_000
intensity_max = 1_000_000
period_s_max = 86_400.0
child_id_chars_max = 255

StartFunc = Callable[["Link"], Any]
"""A child's start factory: gets the child's `Link`, returns a `pykka.ActorRef` of a
`SupervisedActor` or a `Supervisor`/`DynamicSupervisor` handle."""


def is_normal_exit(reason: str) -> bool:
    """Whether `reason` is a normal exit, after which a transient child stays down."""
    return reason in _NORMAL_EXIT_REASONS


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_name(kind: str, value: object, *, supervisor: str | None = None) -> None:
    """Reject a child id or supervisor name that is not a short, non-empty string."""
    if not isinstance(value, str) or not value or len(value) > child_id_chars_max:
        raise SupervisorSpecError(
            f"invalid_{kind}",
            f"{value!r} must be a non-empty string of at most {child_id_chars_max} chars",
            supervisor=supervisor,
            value=value,
        )


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child.

    Fields:
        id: unique among the supervisor's children.
        start: factory called with the child's `Link` for every incarnation.
        restart: `permanent` (always restarted), `transient` (restarted only after
            an abnormal exit) or `temporary` (never restarted).
        shutdown_timeout_ms: how long a stop waits before the child is abandoned.
        type: `worker` or `supervisor` (informational: counts and the tree).
    """

    id: str
    start: StartFunc
    restart: str = "permanent"
    shutdown_timeout_ms: int = 5000
    type: str = "worker"

    def validate(self, supervisor: str) -> None:
        """Raise `SupervisorSpecError` naming the first invalid field."""
        validate_name("child_id", self.id, supervisor=supervisor)

        def fail(reason: str, message: str, value: object) -> SupervisorSpecError:
            return SupervisorSpecError(
                reason, message, supervisor=supervisor, child_id=self.id, value=value
            )

        if not callable(self.start):
            raise fail("invalid_start", f"{self.start!r} is not callable", self.start)
        if self.restart not in RESTART_TYPES:
            raise fail(
                "invalid_restart_type",
                f"{self.restart!r} (expected one of {', '.join(RESTART_TYPES)})",
                self.restart,
            )
        timeout = self.shutdown_timeout_ms
        if not _is_int(timeout) or not 0 <= timeout <= shutdown_timeout_ms_max:
            raise fail(
                "invalid_shutdown_timeout",
                f"{timeout!r} (expected an int in 0..{shutdown_timeout_ms_max} ms)",
                timeout,
            )
        if self.type not in CHILD_TYPES:
            raise fail(
                "invalid_child_type",
                f"{self.type!r} (expected one of {', '.join(CHILD_TYPES)})",
                self.type,
            )


@dataclass(frozen=True, slots=True)
class SupervisorFlags:
    """Restart strategy and intensity: more than `intensity` restarts within
    `period_s` seconds make the supervisor stop its children and fail upward."""

    strategy: str = "one_for_one"
    intensity: int = 1
    period_s: float = 5.0

    def validate(self, supervisor: str) -> None:
        """Raise `SupervisorSpecError` naming the first invalid flag."""
        if self.strategy not in STRATEGIES:
            raise SupervisorSpecError(
                "invalid_strategy",
                f"{self.strategy!r} (expected one of {', '.join(STRATEGIES)})",
                supervisor=supervisor,
                value=self.strategy,
            )
        validate_intensity(supervisor, self.intensity, self.period_s)


def validate_intensity(supervisor: str, intensity: object, period_s: object) -> None:
    """Check restart intensity and period (shared by both supervisor kinds)."""
    if not _is_int(intensity) or not 0 <= intensity <= intensity_max:  # type: ignore[operator]
        raise SupervisorSpecError(
            "invalid_intensity",
            f"{intensity!r} (expected an int in 0..{intensity_max})",
            supervisor=supervisor,
            value=intensity,
        )
    if (
        not isinstance(period_s, int | float)
        or isinstance(period_s, bool)
        or not math.isfinite(period_s)
        or not 0 < period_s <= period_s_max
    ):
        raise SupervisorSpecError(
            "invalid_period",
            f"{period_s!r} (expected seconds, > 0 and <= {period_s_max})",
            supervisor=supervisor,
            value=period_s,
        )


def validate_children(supervisor: str, children: Iterable[object]) -> tuple[ChildSpec, ...]:
    """Validate every spec and their ids' uniqueness; return them as a tuple, in order."""
    specs: list[ChildSpec] = []
    seen: set[str] = set()
    for spec in children:
        if not isinstance(spec, ChildSpec):
            raise SupervisorSpecError(
                "invalid_child_spec",
                f"{spec!r} is not a ChildSpec",
                supervisor=supervisor,
                value=spec,
            )
        spec.validate(supervisor)
        if spec.id in seen:
            raise SupervisorSpecError(
                "duplicate_child_id",
                f"{spec.id!r} is used by more than one child",
                supervisor=supervisor,
                child_id=spec.id,
                value=spec.id,
            )
        seen.add(spec.id)
        specs.append(spec)
    return tuple(specs)


class ChildInfo(NamedTuple):
    """One child as `which_children()` reports it."""

    id: str
    """The child's id."""
    type: str
    """`worker` or `supervisor`."""
    state: str
    """`running`, `restarting` (waiting to be started again), `stopped`, or `dead`
    (abandoned after its shutdown timeout; its thread may still be running)."""
    restart_count: int
    """How many times this child has been restarted by its supervisor."""
