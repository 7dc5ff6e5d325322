"""Exceptions and the invariant helper."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

__all__ = [
    "ChildStartError",
    "InvariantError",
    "SupervisorError",
    "SupervisorSpecError",
    "invariant",
    "present",
]


class SupervisorError(Exception):
    """Base class of every error raised by this package."""


class SupervisorSpecError(SupervisorError, ValueError):
    """A child spec or supervisor flag is invalid; raised when a supervisor starts.

    `reason` is a stable, OTP-like code (`duplicate_child_id`,
    `invalid_restart_type`, ...) that callers and tests can match on; the message
    says which supervisor, which child and which value.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        supervisor: str | None = None,
        child_id: str | None = None,
        value: object = None,
    ) -> None:
        where = f"supervisor {supervisor!r}" if supervisor is not None else "supervisor"
        if child_id is not None:
            where += f", child {child_id!r}"
        super().__init__(f"{where}: {reason}: {message}")
        self.reason = reason
        self.supervisor = supervisor
        self.child_id = child_id
        self.value = value


class ChildStartError(SupervisorError):
    """A child's start factory raised or returned something that cannot be supervised."""

    def __init__(self, supervisor: str, child_id: str, cause: BaseException) -> None:
        super().__init__(
            f"supervisor {supervisor!r}: child {child_id!r} failed to start: {cause!r}"
        )
        self.supervisor = supervisor
        self.child_id = child_id
        self.cause = cause


class InvariantError(SupervisorError):
    """An internal invariant does not hold: a bug, never an expected condition."""


def invariant(condition: bool, message: str) -> None:
    """Raise `InvariantError` unless `condition` holds (unlike `assert`, survives `-O`)."""
    if not condition:
        raise InvariantError(message)


def present(value: T | None, message: str) -> T:
    """Return `value`, raising `InvariantError` if it is None."""
    if value is None:
        raise InvariantError(message)
    return value
