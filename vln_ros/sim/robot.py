"""The simulated quadruped base: body-velocity commands in, motion out, with the lag, limits and wall contacts
of a real one, and the odometry it would report. No ROS.

A quadruped's gait controller tracks the commanded body velocity with a short lag (first order here) under
acceleration limits, and stops by itself when commands stop coming. The body is a circle; walls, doors and
landmark boxes are hard: a step that would overlap one is refused (the base stays where it was and its
velocity drops to zero), and the contact is counted once, when it starts. Odometry integrates the base's
true velocity with the errors of real odometry in a frame of its own, which starts where the robot stood
when the simulator started and knows nothing of the teleports between episodes. Both take sim_node's own
parameters (vln_ros/sim/params.py: BaseParams, OdomParams), the one home of their defaults and ranges.
"""
from __future__ import annotations

import math

import numpy as np

from vln_ros.core.control import ZERO, Pose2D, Twist2D, wrap_angle
from vln_ros.sim.params import BaseParams, OdomParams
from vln_ros.sim.scene import Scene

# Longer steps are split into steps of at most this: the lag and the contact check are per step.
MAX_STEP_S = 0.02
# A contact ends once the body is this much further from the obstacles than when it touched; until then,
# pushing on (and creeping closer by the lag's small steps) is the same contact, not new ones.
CONTACT_RELEASE_M = 0.05
# Asked to stand, the base stands once this slow (the lag alone would creep towards zero for ever).
STANDSTILL_LINEAR, STANDSTILL_ANGULAR = 1e-3, 1e-3


# The gait controller's own acceleration limits: a property of the simulated robot, not a sim_node parameter.
MAX_ACCEL_LINEAR = 2.0      # [m/s^2] of the (vx, vy) vector
MAX_ACCEL_ANGULAR = 4.0     # [rad/s^2]


def body_motion(twist: Twist2D, dt_s: float) -> Pose2D:
    """Where a constant body twist takes the body in dt_s, in its own frame at the start (the exact arc)."""
    turn = twist.wz * dt_s
    if abs(turn) < 1e-9:
        along, across = dt_s, 0.5 * turn * dt_s
    else:
        along, across = math.sin(turn) / twist.wz, (1.0 - math.cos(turn)) / twist.wz
    return Pose2D(twist.vx * along - twist.vy * across, twist.vx * across + twist.vy * along, turn)


def _clamp(value: float, limit: float) -> float:
    return max(-limit, min(limit, value))


class _Obstacles:
    """A scene's walls, doors (closed: they block whether or not a wall is drawn behind them) and landmark
    boxes, as arrays, for the distance from a point to the nearest of them."""

    def __init__(self, scene: Scene) -> None:
        segments = [(w.x0, w.y0, w.x1, w.y1) for w in scene.walls]
        for door in scene.doors:  # along the wall line, i.e. across its facing direction
            half_x, half_y = -math.sin(door.facing) * door.width / 2, math.cos(door.facing) * door.width / 2
            segments.append((door.x - half_x, door.y - half_y, door.x + half_x, door.y + half_y))
        array = np.array(segments, dtype=float).reshape(-1, 4)
        self._starts = array[:, :2].copy()
        self._spans = array[:, 2:] - array[:, :2]
        length2 = np.einsum('ij,ij->i', self._spans, self._spans)
        self._inverse_length2 = np.divide(1.0, length2, out=np.zeros_like(length2), where=length2 > 0.0)
        boxes = np.array([(m.x, m.y, m.size_x / 2, m.size_y / 2) for m in scene.landmarks],
                         dtype=float).reshape(-1, 4)
        self._centres, self._half_sizes = boxes[:, :2].copy(), boxes[:, 2:].copy()

    def distance(self, x: float, y: float) -> float:
        """Distance from (x, y) to the nearest obstacle (negative inside a box); inf in an empty scene."""
        point = np.array((x, y))
        nearest = math.inf
        if len(self._starts):
            offsets = point - self._starts
            along = np.clip(np.einsum('ij,ij->i', offsets, self._spans) * self._inverse_length2, 0.0, 1.0)
            gaps = offsets - along[:, None] * self._spans
            nearest = math.sqrt(float(np.einsum('ij,ij->i', gaps, gaps).min()))
        if len(self._centres):
            # Signed distance to an axis-aligned box: outside, to its nearest point; inside, minus the depth.
            excess = np.abs(point - self._centres) - self._half_sizes
            outside = np.hypot(np.maximum(excess[:, 0], 0.0), np.maximum(excess[:, 1], 0.0))
            inside = np.minimum(excess.max(axis=1), 0.0)
            nearest = min(nearest, float((outside + inside).min()))
        return nearest


class Base:
    """The robot base in one scene (a new scene gets a new Base). Times are simulation seconds."""

    def __init__(self, scene: Scene, params: BaseParams | None = None) -> None:
        self.params = params or BaseParams()
        self._obstacles = _Obstacles(scene)
        # The other robots' centres (K, 2), bodies of the same radius: the world sets them before each step.
        self.neighbours: np.ndarray = np.zeros((0, 2))
        self.reset(scene.start)

    def reset(self, pose: Pose2D) -> None:
        """Put the robot at pose, standing, with no command (a teleport): contacts, clearance, distance and
        the count of non-finite commands start over. ValueError for a pose that overlaps an obstacle."""
        if not pose.is_finite():
            raise ValueError(f'pose {pose} is not finite')
        clearance = self.clearance_at(pose.x, pose.y)
        if clearance < 0.0:
            raise ValueError(f'pose {pose} overlaps a wall, door or landmark by {-clearance:.3f} m')
        self._pose = Pose2D(pose.x, pose.y, wrap_angle(pose.yaw))
        self._velocity = ZERO
        self._command = ZERO
        self._command_s: float | None = None
        self._clearance = self._min_clearance = clearance
        self._contact_clearance: float | None = None    # the clearance when the current contact began
        self._collisions = 0
        self._robot_gap = math.inf                      # body to the nearest other robot's body
        self._robot_contact_gap: float | None = None    # that gap when the current robot contact began
        self._robot_collisions = 0
        self._distance = 0.0
        self.nonfinite_commands = 0

    def clearance_at(self, x: float, y: float) -> float:
        """Distance from the body circle centred at (x, y) to the nearest obstacle (negative: overlapping)."""
        return self._obstacles.distance(x, y) - self.params.radius_m

    def robot_gap_at(self, x: float, y: float) -> float:
        """Distance from the body circle centred at (x, y) to the nearest other robot's (negative: overlapping)."""
        if not len(self.neighbours):
            return math.inf
        return float(np.hypot(self.neighbours[:, 0] - x, self.neighbours[:, 1] - y).min()) - 2 * self.params.radius_m

    def command(self, vx: float, vy: float, wz: float, t_s: float) -> None:
        """The newest velocity command (body frame), received at t_s. Clamped to the hardware limits; a
        non-finite component becomes zero (and is counted), as a base driver would sanitise it."""
        values = (vx, vy, wz)
        if not all(math.isfinite(v) for v in values):
            self.nonfinite_commands += 1
            vx, vy, wz = (v if math.isfinite(v) else 0.0 for v in values)
        s = self.params
        self._command = Twist2D(_clamp(vx, s.max_linear_x), _clamp(vy, s.max_linear_y), _clamp(wz, s.max_angular_z))
        self._command_s = t_s

    def step(self, dt_s: float, t_s: float) -> None:
        """Advance dt_s seconds, ending at t_s. The velocity changes at the start of each step and stays
        constant during it (so odometry integrating `velocity` with the same dt reproduces the motion)."""
        if not (math.isfinite(dt_s) and dt_s >= 0.0):
            raise ValueError(f'dt_s must be finite and >= 0, not {dt_s}')
        count = max(1, math.ceil(dt_s / MAX_STEP_S - 1e-9))
        for i in range(count):
            self._advance(dt_s / count, t_s - dt_s + (i + 1) * dt_s / count)

    def _advance(self, dt_s: float, t_s: float) -> None:
        s = self.params
        fresh = self._command_s is not None and t_s - self._command_s <= s.cmd_timeout_s
        target = self._command if fresh else ZERO
        # First-order lag, discretised exactly, then the acceleration limits.
        follow = 1.0 - math.exp(-dt_s / s.lag_s) if s.lag_s > 0.0 else 1.0
        v = self._velocity
        dvx, dvy = (target.vx - v.vx) * follow, (target.vy - v.vy) * follow
        linear, max_linear = math.hypot(dvx, dvy), MAX_ACCEL_LINEAR * dt_s
        if linear > max_linear:
            dvx, dvy = dvx * max_linear / linear, dvy * max_linear / linear
        dwz = _clamp((target.wz - v.wz) * follow, MAX_ACCEL_ANGULAR * dt_s)
        velocity = Twist2D(v.vx + dvx, v.vy + dvy, v.wz + dwz)
        if (target.is_zero() and math.hypot(velocity.vx, velocity.vy) < STANDSTILL_LINEAR
                and abs(velocity.wz) < STANDSTILL_ANGULAR):
            velocity = ZERO

        pose = self._pose.compose(body_motion(velocity, dt_s))
        clearance = self.clearance_at(pose.x, pose.y)
        if clearance < 0.0:  # would penetrate: refused, and it stops
            if self._contact_clearance is None:
                self._collisions += 1
                self._contact_clearance = self._clearance
            self._velocity = ZERO
            return
        gap = self.robot_gap_at(pose.x, pose.y)
        if gap < 0.0 and gap < self._robot_gap:   # into another robot: refused, counted apart; moving apart is not
            if self._robot_contact_gap is None:
                self._robot_collisions += 1
                self._robot_contact_gap = min(self._robot_gap, 0.0)
            self._velocity = ZERO
            return
        self._robot_gap = gap
        if self._robot_contact_gap is not None and gap > self._robot_contact_gap + CONTACT_RELEASE_M:
            self._robot_contact_gap = None
        self._distance += math.hypot(pose.x - self._pose.x, pose.y - self._pose.y)
        self._pose, self._velocity, self._clearance = pose, velocity, clearance
        self._min_clearance = min(self._min_clearance, clearance)
        if self._contact_clearance is not None and clearance > self._contact_clearance + CONTACT_RELEASE_M:
            self._contact_clearance = None

    @property
    def pose(self) -> Pose2D:
        """Ground truth, world frame."""
        return self._pose

    @property
    def velocity(self) -> Twist2D:
        """The actual body velocity (not the command)."""
        return self._velocity

    @property
    def collisions(self) -> int:
        """Contact events since reset (counted when a contact begins)."""
        return self._collisions

    @property
    def robot_collisions(self) -> int:
        """Contacts with other robots since reset, counted apart from walls' (counted when a contact begins)."""
        return self._robot_collisions

    @property
    def in_contact(self) -> bool:
        return self._contact_clearance is not None

    @property
    def min_clearance_m(self) -> float:
        """Smallest distance from the body to any obstacle since reset (never negative)."""
        return self._min_clearance

    @property
    def distance_travelled_m(self) -> float:
        return self._distance


class Odometry:
    """Dead reckoning from the base's true velocity, with configurable errors, in the odom frame.

    Call update() after every Base.step with the same dt and Base.velocity: with no errors it then
    reproduces the base's motion exactly (both integrate the same piecewise-constant velocity). Of `params`, the
    errors (scale_error, yaw_drift_rad_per_m, noise_m) matter here; the rate and frames are the node's."""

    def __init__(self, params: OdomParams, rng: np.random.Generator) -> None:
        self.params = params
        self._rng = rng
        self.reset()

    def reset(self) -> None:
        """A fresh odometry (a fresh simulator): the odom frame is wherever the robot is now. Not for
        teleports between episodes: a real robot's odometry does not jump when it is carried elsewhere."""
        self._pose = Pose2D()

    def update(self, dt_s: float, true_body_twist: Twist2D) -> tuple[Pose2D, Twist2D]:
        """Integrate dt_s of the true body velocity; returns the odom-frame pose and the measured twist."""
        s, v = self.params, true_body_twist
        measured = Twist2D(v.vx * (1.0 + s.scale_error), v.vy * (1.0 + s.scale_error),
                           v.wz + s.yaw_drift_rad_per_m * math.hypot(v.vx, v.vy))
        self._pose = self._pose.compose(body_motion(measured, dt_s))
        if s.noise_m <= 0.0:
            return self._pose, measured
        noise_x, noise_y = self._rng.normal(0.0, s.noise_m, 2)
        return Pose2D(self._pose.x + float(noise_x), self._pose.y + float(noise_y), self._pose.yaw), measured
