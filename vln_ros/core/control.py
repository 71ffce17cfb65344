"""The control law and the safety layer: newest plan + time + odometry -> velocity command. No ROS.

A plan's waypoints are relative steps (REP-103: x forward, y left, yaw CCW) from the robot's pose when its
keyframe was captured. By the time the plan arrives the robot has moved, so the path is re-expressed from
that pose to the current one using the pose history (odometry, or without it the integral of the commands
already sent). The robot then follows the path by pure pursuit: heading towards a look-ahead point, a
little strafing, turning on the spot when the point is far off the nose, slowing near the end and
turning to the final heading. Speed scales with the waypoint's confidence. Every command is clamped and
acceleration-limited; anything wrong (no plan, stop plan, stale or future plan, silent inference node,
e-stop, dead-man, non-finite input, stale odometry) ends in a deceleration to zero at max decel, or for
the e-stop, zero at once.
"""
from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from dataclasses import dataclass, field

from vln_ros.core.config import ControllerParams
from vln_ros.core.guard import CollisionGuard, GuardState

# A plan is local: more waypoints or longer steps than this are not a plan but a broken answer, and an
# unbounded count would let one message stall the control loop.
MAX_WAYPOINTS = 256
MAX_STEP_M = 50.0
# A control step never covers more time than this: a stalled loop must not turn into one huge
# acceleration step.
MAX_STEP_DT_S = 0.2
# Odometry further than this from its origin is corrupt, not a pose (and would overflow the geometry).
MAX_ODOM_M = 1.0e6


def wrap_angle(a: float) -> float:
    """a in (-pi, pi]; NaN for a non-finite angle (math.sin would raise on an infinity)."""
    if not math.isfinite(a):
        return math.nan
    return math.atan2(math.sin(a), math.cos(a))


@dataclass(frozen=True, slots=True)
class Pose2D:
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0

    def compose(self, other: Pose2D) -> Pose2D:
        """self ⊕ other: `other` expressed in self's frame, returned in self's parent frame."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return Pose2D(self.x + c * other.x - s * other.y, self.y + s * other.x + c * other.y,
                      wrap_angle(self.yaw + other.yaw))

    def inverse(self) -> Pose2D:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return Pose2D(-c * self.x - s * self.y, s * self.x - c * self.y, -self.yaw)

    def is_finite(self) -> bool:
        return math.isfinite(self.x) and math.isfinite(self.y) and math.isfinite(self.yaw)


@dataclass(frozen=True, slots=True)
class Twist2D:
    vx: float = 0.0  # forward [m/s]
    vy: float = 0.0  # left [m/s]
    wz: float = 0.0  # yaw rate, CCW [rad/s]

    def is_zero(self) -> bool:
        return self.vx == 0.0 and self.vy == 0.0 and self.wz == 0.0

    def is_finite(self) -> bool:
        return math.isfinite(self.vx) and math.isfinite(self.vy) and math.isfinite(self.wz)


ZERO = Twist2D()


@dataclass(frozen=True, slots=True)
class Waypoint:
    dx: float
    dy: float
    dtheta: float
    confidence: float


@dataclass(frozen=True)
class Plan:
    stamp_s: float                     # capture time of the keyframe it was made from
    waypoints: tuple[Waypoint, ...]
    stop: bool = False
    task_id: str = ''
    frame_id: str | None = None        # the frame its steps are in; None: the caller has none to check


class PlanRejected(ValueError):
    """A plan that must not be followed; `reason` is the counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f'{reason}: {detail}')
        self.reason = reason


# release_estop's refusal while the last vln/estop message said true (the console asks again on it).
ESTOP_STILL_ASSERTED = 'e-stop is still asserted (last vln/estop message was true)'


class StopReason(enum.Enum):
    NONE = 'following'                 # not stopping
    NO_PLAN = 'no_plan'
    STOP_PLAN = 'stop_plan'            # the model said stop (goal reached or must stop)
    PLAN_DONE = 'plan_done'            # reached the last waypoint
    PLAN_STALE = 'plan_stale'
    PLAN_FROM_FUTURE = 'plan_from_future'
    PLAN_REJECTED = 'plan_rejected'    # non-finite plan
    LOW_CONFIDENCE = 'low_confidence'
    INFERENCE_SILENT = 'inference_silent'
    ODOM_INVALID = 'odom_invalid'
    ODOM_STALE = 'odom_stale'
    ESTOP = 'estop'
    ESTOP_DEADMAN = 'estop_deadman'
    CLOCK_JUMP = 'clock_jump'          # ROS time went backwards (bag loop, sim reset): plan and poses dropped
    ODOM_RESET = 'odom_reset'          # odometry restarted its clock: plan and poses dropped

    @property
    def is_fault(self) -> bool:
        """Stopped because something is wrong (diagnostics WARN), not as planned or for want of a plan."""
        return self not in (StopReason.NONE, StopReason.NO_PLAN, StopReason.STOP_PLAN, StopReason.PLAN_DONE)


@dataclass(frozen=True)
class Command:
    twist: Twist2D
    reason: StopReason
    publish: bool            # False once stopped for zero_hold_s (quiet, so a twist_mux can take over)
    guard: GuardState | None = None   # what the collision guard did to this command (None: no guard)


class PoseHistory:
    """Timestamped poses in the odometry (or dead-reckoning) frame, interpolated on request."""

    def __init__(self, horizon_s: float = 60.0) -> None:
        self.horizon_s = horizon_s
        self._times: deque[float] = deque()
        self._poses: deque[Pose2D] = deque()

    def add(self, t: float, pose: Pose2D) -> bool:
        """Append a pose; an out-of-order sample is dropped (False). Clock resets are the controller's."""
        if self._times and t < self._times[-1]:
            return False
        self._times.append(t)
        self._poses.append(pose)
        while self._times and self._times[0] < t - self.horizon_s:
            self._times.popleft()
            self._poses.popleft()
        return True

    def clear(self) -> None:
        self._times.clear()
        self._poses.clear()

    def latest(self) -> Pose2D | None:
        return self._poses[-1] if self._poses else None

    def at(self, t: float) -> Pose2D | None:
        """Pose at time t (linear interpolation; the nearest end outside the recorded span)."""
        if not self._times:
            return None
        times = self._times
        i = bisect.bisect_left(times, t)
        if i == 0:
            return self._poses[0]
        if i >= len(times):
            return self._poses[-1]
        t0, t1 = times[i - 1], times[i]
        a = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        p0, p1 = self._poses[i - 1], self._poses[i]
        return Pose2D(p0.x + a * (p1.x - p0.x), p0.y + a * (p1.y - p0.y),
                      wrap_angle(p0.yaw + a * wrap_angle(p1.yaw - p0.yaw)))


def validate_plan(plan: Plan, now_s: float, params: ControllerParams) -> None:
    """Raise PlanRejected for a plan that must not even be looked at (non-finite, from the future)."""
    if not math.isfinite(plan.stamp_s):
        raise PlanRejected('nonfinite_plan', f'stamp {plan.stamp_s}')
    check_waypoint_count(len(plan.waypoints))
    if plan.frame_id is not None and plan.frame_id != params.base_frame:
        # Steps in another frame (a camera's, the map's) would be followed as if they were the base's.
        raise PlanRejected('wrong_frame', f'frame_id {plan.frame_id!r} is not base_frame {params.base_frame!r}')
    for i, w in enumerate(plan.waypoints):
        if not all(math.isfinite(v) for v in (w.dx, w.dy, w.dtheta, w.confidence)):
            raise PlanRejected('nonfinite_plan', f'waypoint {i} = {w}')
        if abs(w.dx) > MAX_STEP_M or abs(w.dy) > MAX_STEP_M or abs(w.dtheta) > 4 * math.pi:
            raise PlanRejected('implausible_plan', f'waypoint {i} = {w} (steps up to {MAX_STEP_M} m, 4 pi rad)')
        if not 0.0 <= w.confidence <= 1.0:  # speed scales with it: 1.5 is no confidence, it is a broken plan
            raise PlanRejected('confidence_out_of_range', f'waypoint {i} = {w} (confidence must be 0-1)')
    if plan.stamp_s - now_s > params.future_tolerance_s:
        raise PlanRejected('future_plan', f'stamped {plan.stamp_s - now_s:.3f} s in the future')


def check_waypoint_count(count: int) -> None:
    """Raise PlanRejected for more waypoints than a local plan has; callers that can count the waypoints
    before building a Plan (the node, from the serialized message) check this first."""
    if count > MAX_WAYPOINTS:
        raise PlanRejected('too_many_waypoints', f'{count} waypoints (at most {MAX_WAYPOINTS})')


def plan_path(plan: Plan) -> list[tuple[Pose2D, float]]:
    """The waypoints as poses in the keyframe's body frame, with their confidence (chained steps)."""
    pose, path = Pose2D(), []
    for w in plan.waypoints:
        pose = pose.compose(Pose2D(w.dx, w.dy, w.dtheta))
        path.append((pose, w.confidence))
    return path


def limit_rate(previous: float, target: float, dt: float, accel: float, decel: float) -> float:
    """Move from previous towards target: |v| grows at most accel*dt and shrinks at most decel*dt per step.
    A change of sign first decelerates to zero."""
    if previous != 0.0 and (target == 0.0 or (target > 0) != (previous > 0)):
        return math.copysign(max(0.0, abs(previous) - decel * dt), previous)
    limit = accel * dt if abs(target) > abs(previous) else decel * dt
    return previous + max(-limit, min(limit, target - previous))


def regrow(previous: float, guarded: float, dt: float, accel: float) -> float:
    """The guard's output after `previous` was sent: a smaller magnitude passes at once (a stop or slowdown
    is never delayed), a larger one grows at most accel*dt per step (speed comes back within the acceleration
    limits once the guard lets go, instead of jumping to the control law's command). Never more than
    `guarded`, never its opposite sign."""
    if guarded == 0.0:
        return 0.0
    base = abs(previous) if previous != 0.0 and (previous > 0) == (guarded > 0) else 0.0
    return math.copysign(min(abs(guarded), base + accel * dt), guarded)


def _clamp(v: float, limit: float) -> float:
    """Clamp to [-limit, limit]; NaN becomes 0 (min/max would turn it into +limit)."""
    if math.isnan(v):
        return 0.0
    return max(-limit, min(limit, v))


@dataclass
class _Following:
    plan: Plan
    path: list[tuple[Pose2D, float]]
    received_s: float         # when it arrived (its origin without latency compensation)
    segment: int = 0          # progress: the path segment the robot was last closest to (never goes back)


@dataclass
class Controller:
    """One robot's controller. Not thread-safe: the node serialises calls."""

    params: ControllerParams
    history: PoseHistory = field(default_factory=PoseHistory)
    _following: _Following | None = None
    _stop: StopReason = StopReason.NO_PLAN
    _last_plan_received_s: float | None = None
    _odometry_mode: bool = False           # odometry has been seen: no more dead reckoning
    _odom_arrived_s: float | None = None   # when the last accepted odometry arrived (liveness)
    _odom_invalid: bool = False
    _estop: StopReason | None = None       # latched ESTOP or ESTOP_DEADMAN
    _estop_active: bool = False            # the last e-stop message said true
    _estop_heard_s: float | None = None
    _started_s: float | None = None
    _output: Twist2D = ZERO                # the control law's command (its acceleration limits' state)
    _sent: Twist2D = ZERO                  # what was sent: _output after the collision guard
    _stopped_since_s: float | None = None
    _last_step_s: float | None = None

    def __post_init__(self) -> None:
        self.set_params(self.params)

    def set_params(self, params: ControllerParams) -> None:
        """New (validated) parameters, in force from the next step."""
        self.params = params
        # The capture pose of any plan young enough to follow must still be in the history.
        self.history.horizon_s = max(self.history.horizon_s, params.plan_timeout_s + 5.0)

    # -- inputs --------------------------------------------------------------------------------------
    def set_plan(self, plan: Plan, now_s: float) -> None:
        """Take a new plan (it replaces the old one at once). Raises PlanRejected; the robot then stops.
        While an e-stop is latched, plans are refused: a release must not start a plan by itself."""
        if self._estop is not None:
            raise PlanRejected('estop_engaged', f'e-stop latched ({self._estop.value}); plan ignored')
        self._last_plan_received_s = now_s
        try:
            validate_plan(plan, now_s, self.params)
        except PlanRejected as exc:
            self.refuse_plan(exc, now_s)
            raise
        if plan.stop or not plan.waypoints:
            self._following, self._stop = None, StopReason.STOP_PLAN
            return
        self._following = _Following(plan, plan_path(plan), now_s)
        self._stop = StopReason.NONE

    def refuse_plan(self, rejection: PlanRejected, now_s: float) -> None:
        """A plan arrived and was refused (here or by the caller before it was even built): stop."""
        self._last_plan_received_s = now_s
        self._following = None
        self._stop = StopReason.PLAN_FROM_FUTURE if rejection.reason == 'future_plan' else StopReason.PLAN_REJECTED

    def set_odometry(self, t_s: float, pose: Pose2D, now_s: float | None = None) -> bool:
        """Record the robot's pose at t_s (its stamp, odometry frame), arriving at now_s (default t_s).
        A non-finite or implausible pose, or one stamped further in the future than future_tolerance_s,
        is rejected (False) and the robot stops until a valid one arrives. An out-of-order one is dropped
        (False), unless nothing was accepted for odom_timeout_s: then the source has restarted its clock,
        and the history starts over from it (a stamp far ahead must not lock out every later message).
        Liveness is judged by arrival, not by stamp."""
        now_s = t_s if now_s is None else now_s
        if (not (pose.is_finite() and math.isfinite(t_s) and math.isfinite(now_s))
                or abs(pose.x) > MAX_ODOM_M or abs(pose.y) > MAX_ODOM_M
                or t_s - now_s > self.params.future_tolerance_s):
            self._odom_invalid = True
            return False
        self._odom_invalid = False
        pose = Pose2D(pose.x, pose.y, wrap_angle(pose.yaw))  # any finite yaw; composing stays finite
        if not self._odometry_mode:
            # Poses so far were dead reckoning in a frame of their own: never mix the two.
            self.history.clear()
            self._odometry_mode = True
        if not self.history.add(t_s, pose):
            if self._odom_arrived_s is not None and now_s - self._odom_arrived_s <= self.params.odom_timeout_s:
                return False
            self.history.clear()
            self.history.add(t_s, pose)
            if self._following is not None:  # its capture pose is in the old history
                self._following, self._stop = None, StopReason.ODOM_RESET
        self._odom_arrived_s = now_s
        return True

    def estop_message(self, engaged: bool, now_s: float) -> None:
        self._estop_heard_s = now_s
        self._estop_active = engaged
        if engaged:
            self._engage(StopReason.ESTOP)

    def _engage(self, reason: StopReason) -> None:
        """Latch an e-stop and forget the plan: after a release the robot waits for a new plan
        (a reset must not restart motion by itself)."""
        self._estop = reason
        self._following, self._stop = None, StopReason.NO_PLAN

    def release_estop(self, now_s: float) -> tuple[bool, str]:
        """Explicit release of a latched e-stop; refused while the cause is still there."""
        if self._estop_active:
            return False, ESTOP_STILL_ASSERTED
        if self._deadman_expired(now_s):
            return False, f'e-stop publisher silent for more than {self.params.estop_timeout_s} s'
        was = self._estop
        self._estop = None
        return True, 'released' if was else 'was not engaged'

    @property
    def estop_engaged(self) -> StopReason | None:
        return self._estop

    @property
    def estop_asserted(self) -> bool:
        """The last vln/estop message said true (a release is refused while it does)."""
        return self._estop_active

    def _deadman_expired(self, now_s: float) -> bool:
        """Silent for estop_timeout_s since the last e-stop message or the first step, whichever is later: a
        heartbeat heard before the first step (on simulated time: stamped 0, before /clock came) counts as heard
        at the start, not as silence since time 0."""
        if self.params.estop_timeout_s <= 0.0:
            return False
        heard = [t for t in (self._estop_heard_s, self._started_s) if t is not None]
        return bool(heard) and now_s - max(heard) > self.params.estop_timeout_s

    # -- the loop --------------------------------------------------------------------------------------
    def step(self, now_s: float, dt_s: float, guard: CollisionGuard | None = None) -> Command:
        """One control period: the command to publish at now_s (ROS time), dt_s after the previous one.

        guard: the collision guard, the last stage: it only ever scales the control law's command down (a
        stop, slowdown or approach), and its hold ends within the acceleration limits (regrow). The stop
        reason, e-stop and zero_hold_s stay the control law's: while it commands motion that the guard
        stops, the zero is published. Without odometry the pose is integrated from what was sent, so a
        plan the guard holds back is not taken as followed."""
        if self._started_s is None:
            self._started_s = now_s
        if self._last_step_s is not None and now_s < self._last_step_s:
            # Time went backwards: every age and timeout would read as fresh. Drop what was known.
            self._following, self._stop = None, StopReason.CLOCK_JUMP
            self._last_plan_received_s = self._estop_heard_s = self._odom_arrived_s = None
            self._started_s = now_s
            self.history.clear()  # odometry (if any) refills it; _odometry_mode keeps dead reckoning off
        self._last_step_s = now_s
        dt_s = min(max(dt_s, 0.0), MAX_STEP_DT_S)
        if self._deadman_expired(now_s) and self._estop is None:
            self._engage(StopReason.ESTOP_DEADMAN)

        if self._estop is not None:
            reason, output = self._estop, ZERO  # emergency: zero at once, no ramp
        else:
            reason, target = self._target(now_s)
            if not target.is_finite():
                reason, target = StopReason.PLAN_REJECTED, ZERO  # e.g. geometry overflow: never forward it
                self._following = None
            p = self.params
            output = Twist2D(
                _clamp(limit_rate(self._output.vx, target.vx, dt_s, p.max_accel_x, p.max_decel_x), p.max_linear_x),
                _clamp(limit_rate(self._output.vy, target.vy, dt_s, p.max_accel_y, p.max_decel_y), p.max_linear_y),
                _clamp(limit_rate(self._output.wz, target.wz, dt_s, p.max_accel_z, p.max_decel_z), p.max_angular_z))
            if not output.is_finite():
                output, reason = ZERO, StopReason.PLAN_REJECTED  # unreachable by construction; never forward NaN
        self._output = output
        sent, guard_state = output, None
        if guard is not None:
            (vx, vy, wz), guard_state = guard.step(now_s, (output.vx, output.vy, output.wz))
            p, last = self.params, self._sent
            sent = Twist2D(regrow(last.vx, vx, dt_s, p.max_accel_x), regrow(last.vy, vy, dt_s, p.max_accel_y),
                           regrow(last.wz, wz, dt_s, p.max_accel_z))
        self._sent = sent
        if not self._odometry_mode:
            self._dead_reckon(now_s, dt_s, sent)

        if not output.is_zero():
            self._stopped_since_s = None
            return Command(sent, reason, True, guard_state)
        if self._stopped_since_s is None:
            self._stopped_since_s = now_s
        # Never quiet while e-stopped: a lower-priority twist_mux input must not take over then.
        quiet = (not self.params.publish_zero_forever and self._estop is None
                 and now_s - self._stopped_since_s >= self.params.zero_hold_s)
        return Command(sent, reason, not quiet, guard_state)

    def _dead_reckon(self, now_s: float, dt_s: float, twist: Twist2D) -> None:
        """Without odometry, the pose history is the integral of the commands sent."""
        last = self.history.latest() or Pose2D()
        self.history.add(now_s, last.compose(Pose2D(twist.vx * dt_s, twist.vy * dt_s, twist.wz * dt_s)))

    def _target(self, now_s: float) -> tuple[StopReason, Twist2D]:
        p = self.params
        if self._odom_invalid:
            return StopReason.ODOM_INVALID, ZERO
        if self._odometry_mode and (self._odom_arrived_s is None
                                              or now_s - self._odom_arrived_s > p.odom_timeout_s):
            return StopReason.ODOM_STALE, ZERO
        f = self._following
        if f is None:
            return self._stop, ZERO
        if self._last_plan_received_s is not None and now_s - self._last_plan_received_s > p.inference_timeout_s:
            return StopReason.INFERENCE_SILENT, ZERO
        if now_s - f.plan.stamp_s > p.plan_timeout_s:
            return StopReason.PLAN_STALE, ZERO
        return self._pursue(f, now_s)

    def _pursue(self, f: _Following, now_s: float) -> tuple[StopReason, Twist2D]:
        p = self.params
        origin_s = f.plan.stamp_s if p.latency_compensation else f.received_s
        pose_then = self.history.at(origin_s) or Pose2D()
        pose_now = self.history.latest() or Pose2D()
        to_now = pose_now.inverse().compose(pose_then)  # keyframe body frame -> current body frame
        # The path starts where the robot stood at capture; the robot itself is at (0, 0) facing +x.
        points = [to_now] + [to_now.compose(pose) for pose, _ in f.path]
        confidences = [c for _, c in f.path]
        if not all(point.is_finite() for point in points):
            # Overflowing geometry (unreachable through the input checks; defence in depth): an angle
            # computed from infinities can look perfectly finite, so check the path itself.
            self._following, self._stop = None, StopReason.PLAN_REJECTED
            return StopReason.PLAN_REJECTED, ZERO

        # Progress: the closest segment from the current one on, so a plan that arrives when the robot
        # is already half way continues from there instead of going back to its start.
        best = (math.inf, f.segment, 0.0)
        for i in range(f.segment, len(points) - 1):
            a, b = points[i], points[i + 1]
            ex, ey = b.x - a.x, b.y - a.y
            length2 = ex * ex + ey * ey
            t = 0.0 if length2 == 0.0 else max(0.0, min(1.0, -(a.x * ex + a.y * ey) / length2))
            d = math.hypot(a.x + t * ex, a.y + t * ey)
            if d < best[0] - 1e-9:
                best = (d, i, t)
        _, f.segment, t = best

        # Look-ahead point: lookahead_m further along the path from the robot's projection on it.
        i = f.segment
        x, y = points[i].x + t * (points[i + 1].x - points[i].x), points[i].y + t * (points[i + 1].y - points[i].y)
        remaining = p.lookahead_m
        while True:
            b = points[i + 1]
            gap = math.hypot(b.x - x, b.y - y)
            if gap >= remaining:
                x, y = x + (b.x - x) * remaining / gap, y + (b.y - y) * remaining / gap
                break
            remaining -= gap
            x, y = b.x, b.y
            if i + 2 >= len(points):
                break
            i += 1
        confidence = confidences[i]
        goal = points[-1]
        goal_distance = math.hypot(goal.x, goal.y)
        if confidence < p.min_confidence:
            return StopReason.LOW_CONFIDENCE, ZERO

        if goal_distance <= p.goal_tolerance_m:
            if abs(goal.yaw) <= p.yaw_tolerance_rad:
                self._following, self._stop = None, StopReason.PLAN_DONE
                return StopReason.PLAN_DONE, ZERO
            return StopReason.NONE, self._deadband(Twist2D(0.0, 0.0, _clamp(p.heading_gain * goal.yaw,
                                                                             p.max_angular_z)))

        speed = p.max_linear_x * confidence
        if p.slowdown_distance_m > 0.0:
            speed *= min(1.0, goal_distance / p.slowdown_distance_m)
        bearing = math.atan2(y, x)
        wz = _clamp(p.heading_gain * bearing, p.max_angular_z)
        if abs(bearing) > p.rotate_in_place_rad:
            return StopReason.NONE, self._deadband(Twist2D(0.0, 0.0, wz))
        return StopReason.NONE, self._deadband(Twist2D(
            _clamp(speed * math.cos(bearing), p.max_linear_x),
            _clamp(p.lateral_gain * speed * math.sin(bearing), p.max_linear_y), wz))

    def _deadband(self, t: Twist2D) -> Twist2D:
        p = self.params
        return Twist2D(0.0 if abs(t.vx) < p.deadband_linear else t.vx,
                       0.0 if abs(t.vy) < p.deadband_linear else t.vy,
                       0.0 if abs(t.wz) < p.deadband_angular else t.wz)
