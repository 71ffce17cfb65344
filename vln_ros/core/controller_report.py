"""What controller_node reports of its state on vln/controller_status (msg/ControllerStatus.msg): the fields,
built from the controller, and when a change is worth a message. No ROS.

The console shows the e-stop from it and eval reads the controller's state and clock from it, so neither parses
/diagnostics strings. Its plan age changes every control step; a latched status topic should carry changes of
what the controller does and why, not 50 messages a second. So a report is due when anything but the plan age
changes (mode, e-stop, stop reason, limits in force), and at least every `period_s` (a reader sees the age move
and the stamp advance, and knows the node is alive), as core/guard_report.py does for the guard.
"""
from __future__ import annotations

import enum
import math
from dataclasses import astuple, dataclass, replace

from vln_ros.core.control import Controller, StopReason
from vln_ros.core.limits import VelocityLimits


class Mode(enum.Enum):
    """ControllerStatus.mode (the MODE_* constants of the message)."""
    FOLLOWING = 'following'   # following a plan: commanding motion
    STOPPED = 'stopped'       # no motion, as planned: no plan yet, a stop plan, the plan done
    FAULT = 'fault'           # no motion because something is wrong (stop_reason says what)
    ESTOP = 'estop'           # an e-stop is latched (estop_reason says which)


@dataclass(frozen=True, slots=True)
class ControllerReport:
    """The fields of one ControllerStatus message (names and units as in msg/ControllerStatus.msg)."""
    mode: Mode
    estop_engaged: bool
    estop_reason: str         # '' (none latched), 'estop' or 'estop_deadman' (StopReason values)
    estop_asserted: bool      # the last vln/estop message said true
    stop_reason: str          # StopReason value
    plan_age_s: float         # nan: no plan accepted yet
    max_linear_x: float       # [m/s]
    max_linear_y: float       # [m/s]
    max_angular_z: float      # [rad/s]
    estop_timeout_s: float    # [s], 0: the dead-man is off

    def key(self) -> tuple[object, ...]:
        """Everything but the plan age: what makes a report worth a message at once."""
        return astuple(replace(self, plan_age_s=0.0))


def mode_of(reason: StopReason, estop: StopReason | None) -> Mode:
    if estop is not None:
        return Mode.ESTOP
    if reason is StopReason.NONE:
        return Mode.FOLLOWING
    return Mode.FAULT if reason.is_fault else Mode.STOPPED


def report(controller: Controller, reason: StopReason, now_s: float, plan_stamp_s: float | None) -> ControllerReport:
    """The controller's state at now_s. reason: the stop reason of its last step; an e-stop latched since that
    step (a vln/estop message between two steps) is the reason already, so the report never says 'following'
    beside an engaged e-stop. plan_stamp_s: the stamp of the last accepted plan (None: none yet)."""
    estop = controller.estop_engaged
    if estop is not None:
        reason = estop
    elif reason in (StopReason.ESTOP, StopReason.ESTOP_DEADMAN):   # released since: the plan was forgotten
        reason = StopReason.NO_PLAN
    limits = VelocityLimits.of(controller.params)
    return ControllerReport(
        mode=mode_of(reason, estop), estop_engaged=estop is not None, estop_reason=estop.value if estop else '',
        estop_asserted=controller.estop_asserted, stop_reason=reason.value,
        plan_age_s=now_s - plan_stamp_s if plan_stamp_s is not None else math.nan,
        max_linear_x=limits.max_linear_x, max_linear_y=limits.max_linear_y, max_angular_z=limits.max_angular_z,
        estop_timeout_s=controller.params.estop_timeout_s)


def stop_counter(previous: StopReason, current: StopReason) -> str | None:
    """The counter of a stop that begins at this step: `stops_<reason>` when the controller starts stopping for
    something wrong (a stale plan, a silent inference node, ...) that it was not stopping for at the step before;
    None otherwise. Stops are counted once each, not per control step: the count says how often the robot was
    stopped, e.g. by a server too slow for plan_timeout_s (issue 25), which the stop reason alone forgets."""
    if current.is_fault and current is not previous:
        return f'stops_{current.value}'
    return None


class ReportGate:
    """Decides which reports are published: on a change of ControllerReport.key(), and every period_s."""

    def __init__(self, period_s: float = 1.0) -> None:
        if not period_s > 0.0:
            raise ValueError(f'period_s must be positive, got {period_s}')
        self.period_s = period_s
        self._key: tuple[object, ...] | None = None
        self._published_s: float | None = None

    def due(self, state: ControllerReport, now_s: float) -> bool:
        """True when this report should be published (and it is then taken as published)."""
        key = state.key()
        if (key == self._key and self._published_s is not None
                and 0.0 <= now_s - self._published_s < self.period_s):   # a clock jump back publishes too
            return False
        self._key, self._published_s = key, now_s
        return True
