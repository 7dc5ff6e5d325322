"""Erlang/OTP supervision on pykka: child specs, restart strategies and intensity,
ordered shutdown, escalation. Knows nothing about billing."""

from supervisor._actor import SupervisedActor
from supervisor._dynamic import DynamicSupervisor
from supervisor._errors import ChildStartError, SupervisorError, SupervisorSpecError
from supervisor._handle import SupervisorHandle
from supervisor._link import ChildExited, Link
from supervisor._scheduled import ActorScheduler, ScheduledActor
from supervisor._spec import ChildInfo, ChildSpec, SupervisorFlags
from supervisor._static import Supervisor

__all__ = [
    "ActorScheduler",
    "ChildExited",
    "ChildInfo",
    "ChildSpec",
    "ChildStartError",
    "DynamicSupervisor",
    "Link",
    "ScheduledActor",
    "SupervisedActor",
    "Supervisor",
    "SupervisorError",
    "SupervisorFlags",
    "SupervisorHandle",
    "SupervisorSpecError",
]
