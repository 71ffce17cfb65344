"""The collision guard: the last stage between any velocity command and the motors. No ROS.

What it does with a command (vx forward, vy left, wz CCW; REP 103) at each control step, given the newest
obstacle points of each sensor (guard_sources.py turns messages into base-frame points once per message):
- stop: an obstacle within `stop_margin_m` of the footprint (or inside it) -> zero, whatever the command
  (moving away included: the guard does not guess which way out is free).
- slowdown: an obstacle within `slowdown_margin_m` of the footprint -> the command times `slowdown_ratio`.
- approach: the robot is moved forward in time on the commanded twist (a constant twist drives a circular
  arc, a straight line without yaw rate) and the earliest time its footprint would touch an obstacle point
  is found, exactly (ray/arc against the footprint's edges or circle, no time steps, so nothing thin is
  stepped over). When that time is below `time_before_collision_s` the whole twist is scaled by
  time / time_before_collision_s; a scaled twist drives the same path, so the time before collision
  becomes exactly the bound (Nav2 collision_monitor's approach action, computed in closed form).
  Sideways, backward and turning motion count alike. Points closer together than `resolution_m` are merged
  when a message arrives (each cell keeps its point nearest the footprint, so the zones stay exact; the
  time before collision may be off by up to that distance over the obstacle's relative speed).
- The most restrictive of slowdown and approach wins. The output is always the input times a factor in
  [0, 1]: never faster on any axis, never a sign change, so never more speed towards an obstacle.
- Fail-safe: an enabled, non-optional sensor that was never heard, is silent past its timeout_s or whose
  last message was rejected stops the robot, with the reason. An optional one is used while fresh and
  ignored otherwise. A non-finite command is a stop. step() never raises: an internal error is a stop.

What it cannot see is what its sensors cannot: glass, thin legs below a laser's plane, drops (stairs,
kerbs). Obstacles that move (`moving_obstacles`): per sensor and per 10 deg sector around the base, the
nearest gap of each message is compared with the previous points moved into the robot's present frame by its
own motion since, over at least _BASELINE_S: the measured twist integrated (odometry, on_odometry(), while it
is fresh), else the guard's own output commands integrated (they run ahead of a lagging gait, so turning or
braking beside a wall would read as the wall closing in); what the robot's motion
does not explain is the obstacle's closing speed, kept as the median of the last _ESTIMATES estimates (a
sector that empties or jumps faster than `max_obstacle_speed_mps` adds a zero, so an estimate decays within a
few messages; where something closed in, its speed is held for _HOLD_S after it stops, so that the robot keeps
still while a person who stopped for it steps round it). In the approach check the time before collision
towards a sector becomes gap / (robot's closing speed + the obstacle's): when the obstacle alone would reach
the footprint within time_before_collision_s, the command towards it goes to zero, so the robot stands still
and a person can yield to it. So does a command away from it slower than it closes in, when it would reach
the robot within that time anyway (a person who stopped behind the robot walks on when it moves).

Modules: guard_sources.py (sensor parameters, messages -> points),
guard_footprint.py (the outline, gaps, exact times to collision), this one (GuardParams and the guard).
GuardParams (`guard.*`) lives here beside its code, as the backends' models do (core/schema.py says why), so
core/config.py can nest it into a node's model without an import cycle; for the same reason commands are plain
(vx, vy, wz) tuples, not core/control's Twist2D (control imports config).
"""
from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import model_validator

from vln_ros.core.guard_footprint import STRAIGHT_WZ, Cmd, Footprint, FootprintParams, circle_collision_times
from vln_ros.core.guard_sources import (
    CameraInfoLike,
    CameraModel,
    DepthParams,
    ImageLike,
    LaserParams,
    LaserScanLike,
    PointCloud2Like,
    PointCloudParams,
    RejectReason,
    SensorRejected,
    SourceParams,
    check_frame,
    cloud_to_points,
    depth_to_points,
    scan_to_points,
)
from vln_ros.core.schema import StrictModel, param

_ZERO: Cmd = (0.0, 0.0, 0.0)
# Moving obstacles: sectors around the base origin, the shortest interval a closing speed is measured over (the
# laser's noise divided by a 1/15 s interval would read as walking speed), how many estimates the median
# takes, and the closing speed below which an obstacle counts as standing (noise and the robot's lag).
_SECTORS = 36
_BASELINE_S = 0.18
_HISTORY_S = 0.6
_ESTIMATES = 3
_MIN_CLOSING_MPS = 0.25
# A sector where something closed in keeps that closing speed this long after it stops: a person who stopped
# for the robot at rest walks on as soon as it moves (sim/people.py; people do), so it keeps still until they
# have stepped round it (they wait 3 s, then step aside).
_HOLD_S = 4.0
# An integration interval longer than this is a pause in the control loop, not motion at the last command.
_MAX_DT_S = 0.5
# A measured twist (odometry) older than this is not the robot's motion any more: the commands are used again.
_ODOM_FRESH_S = 0.25
# Points solved exactly per round of the approach check (time_to_collision is vectorized over them).
_SOLVE_BATCH = 256


# --------------------------------------------------------------------------------------------------
# Parameters


class GuardParams(StrictModel):
    """The collision guard (core/guard.py): footprint, zones, approach and its sensors.

    Dynamic: footprint, margins, ratio, the approach horizon and each source's height band, timeout,
    max_points and stride (new values apply from the next step or message). Fixed while running: whether
    the guard and each source are on, which are optional, topics, frame ids and mounts."""

    enabled: bool = param(False, 'Pass every velocity command through the collision guard')
    footprint: FootprintParams = FootprintParams()
    stop_margin_m: float = param(0.05, 'An obstacle this close to the footprint (or inside it) stops the robot',
                                 'm', ge=0.0, le=2.0, dynamic=True)
    slowdown_margin_m: float = param(0.3, 'An obstacle this close to the footprint scales the command by '
                                     'slowdown_ratio (equal to stop_margin_m: no slowdown zone)', 'm',
                                     ge=0.0, le=5.0, dynamic=True)
    slowdown_ratio: float = param(0.5, 'Speed factor inside the slowdown zone', ge=0.0, le=1.0, dynamic=True)
    time_before_collision_s: float = param(1.5, 'Commands that would bring the footprint onto an obstacle '
                                           'sooner than this are scaled down until they would not; 0 = off',
                                           's', ge=0.0, le=10.0, dynamic=True)
    resolution_m: float = param(0.02, 'Obstacle points in one cell of this size are merged into the one nearest '
                                'the footprint when a message arrives (the stop and slowdown zones stay exact; '
                                'the time before collision may be off by this distance over the speed); 0 = '
                                'keep every point', 'm', ge=0.0, le=0.2, dynamic=True)
    moving_obstacles: bool = param(True, 'Estimate how fast obstacles close in (beyond what the robot\'s own '
                                   'motion explains) and count it in the time before collision: a command '
                                   'towards an obstacle that would reach the footprint within '
                                   'time_before_collision_s by itself goes to zero', dynamic=True)
    max_obstacle_speed_mps: float = param(2.0, 'Closing speeds above this between messages are taken as noise '
                                          'or a new obstacle, not motion (counted as standing)', 'm/s',
                                          gt=0.0, le=10.0, dynamic=True)
    laser: LaserParams = LaserParams()
    pointcloud: PointCloudParams = PointCloudParams()
    depth: DepthParams = DepthParams()

    @model_validator(mode='after')
    def _consistent(self) -> GuardParams:
        if self.slowdown_margin_m < self.stop_margin_m:
            raise ValueError(f'guard.slowdown_margin_m ({self.slowdown_margin_m}) must not be smaller than '
                             f'guard.stop_margin_m ({self.stop_margin_m})')
        if self.enabled and not any(s.enabled for s in self.sources().values()):
            raise ValueError('guard.enabled is true but no source is: enable guard.laser, guard.pointcloud '
                             'or guard.depth')
        for name, src in self.sources().items():
            where = f'guard.{name}'
            if src.min_height_m >= src.max_height_m:
                raise ValueError(f'{where}.min_height_m ({src.min_height_m}) must be smaller than '
                                 f'{where}.max_height_m ({src.max_height_m})')
            if src.enabled and not src.frame_id.strip('/'):
                raise ValueError(f'{where}.frame_id must be set when {where}.enabled (the mount is for it)')
            if src.enabled and not src.topic:
                raise ValueError(f'{where}.topic must be set when {where}.enabled')
        # A level laser mounted outside its band would have every beam dropped: a guard blind by
        # configuration, with no rejection to show for it.
        laser = self.laser
        if laser.enabled and laser.mount.is_level() and not laser.min_height_m <= laser.mount.z_m <= laser.max_height_m:
            raise ValueError(f'guard.laser.mount.z_m ({laser.mount.z_m}) of a level laser lies outside its height '
                             f'band [guard.laser.min_height_m {laser.min_height_m}, guard.laser.max_height_m '
                             f'{laser.max_height_m}]: every beam would be ignored')
        return self

    def sources(self) -> dict[str, SourceParams]:
        return {'laser': self.laser, 'pointcloud': self.pointcloud, 'depth': self.depth}


# --------------------------------------------------------------------------------------------------
# The guard


class GuardAction(enum.Enum):
    FREE = 'free'
    SLOWDOWN = 'slowdown'
    APPROACH = 'approach'
    STOP = 'stop'


@dataclass(frozen=True)
class GuardState:
    """What the guard did at one step and why (the typed state the nodes publish)."""

    action: GuardAction
    scale: float                 # output = scale * input, 0-1
    nearest_m: float             # gap between the footprint and the nearest obstacle (inf: none seen)
    bearing_rad: float           # direction of that obstacle from the base origin (CCW from x; nan: none)
    source: str                  # sensor of the obstacle or fault that decided the action ('' if none)
    reason: str
    time_to_collision_s: float = math.inf   # at the commanded twist


@dataclass
class _SourceData:
    """Newest accepted points of one sensor, sorted by their gap to the footprint (the per-step checks read
    a prefix of them), and what happened to its last message."""

    points: np.ndarray           # (N, 2) float32, base frame
    gaps: np.ndarray             # (N,) float64 ascending
    received_s: float
    last_rejection: RejectReason | None = None
    heard: bool = False
    motion: _Motion | None = None


@dataclass
class _Motion:
    """One sensor's recent messages (time, the robot's integrated pose, points) and the closing speed
    estimates per sector they gave."""

    history: list[tuple[float, tuple[float, float, float], np.ndarray]]
    estimates: list[np.ndarray]
    held_mps: np.ndarray          # (_SECTORS,) closing speed held after an approach, until held_until_s
    held_until_s: np.ndarray      # (_SECTORS,)
    # The sectors where an obstacle closes in faster than _MIN_CLOSING_MPS, as (bearing of the sector's
    # centre [rad], its nearest gap [m], closing speed [m/s]): worked out per message, so that a control
    # step costs nothing when nothing moves.
    closing: list[tuple[float, float, float]]


_EMPTY = np.zeros((0, 2), np.float32)
# Cell indices are clipped to this (cells beyond +-2^20 resolutions, 21 km at 2 cm, merge at the border).
_CELL_LIMIT = 1 << 20


class CollisionGuard:
    """Per-source newest obstacle points and receive times; step() turns a command into a safe one.

    Not thread-safe: the owner calls on_*() and step() from one thread (the node's executor does)."""

    def __init__(self, params: GuardParams) -> None:
        self.params = params
        self.footprint = Footprint(params.footprint)
        self.rejections: Counter[str] = Counter()     # '<source>.<reason>' -> count
        self.accepted: Counter[str] = Counter()       # '<source>' -> messages used
        self._data = {name: _SourceData(_EMPTY, np.zeros(0), -math.inf)
                      for name, src in params.sources().items() if src.enabled}
        self._camera: CameraModel | None = None
        # The robot's pose integrated from the commands the guard let through (x_m, y_m, yaw_rad), in an
        # arbitrary fixed frame: enough to move old points into the present base frame.
        self._pose = (0.0, 0.0, 0.0)
        self._last_out: Cmd = _ZERO
        self._last_step_s: float | None = None
        # The newest measured body twist (odometry) and when it arrived; preferred to _last_out while fresh.
        self._measured: Cmd = _ZERO
        self._measured_s = -math.inf

    def update_params(self, params: GuardParams) -> None:
        """A new snapshot while running (the node has already refused changes to fixed parameters)."""
        old, self.params = self.params, params
        if params.footprint != old.footprint:
            self.footprint = Footprint(params.footprint)
            for data in self._data.values():
                self._store(data, data.points)

    # Messages in. Each returns the reason it was rejected, None when used; none raises.

    def on_scan(self, msg: LaserScanLike, now_s: float, stamp_s: float | None = None) -> RejectReason | None:
        return self._receive('laser', lambda: scan_to_points(msg, self.params.laser), now_s, stamp_s)

    def on_cloud(self, msg: PointCloud2Like, now_s: float, stamp_s: float | None = None) -> RejectReason | None:
        return self._receive('pointcloud', lambda: cloud_to_points(msg, self.params.pointcloud), now_s, stamp_s)

    def on_depth(self, image: ImageLike, now_s: float, stamp_s: float | None = None) -> RejectReason | None:
        return self._receive('depth', lambda: depth_to_points(image, self._camera, self.params.depth),
                             now_s, stamp_s)

    def on_odometry(self, twist: Cmd, now_s: float) -> bool:
        """The robot's measured body twist (vx_mps, vy_mps, wz_radps in the base frame: odometry's twist),
        arriving at now_s. While it is fresh the guard moves old obstacle points by it rather than by its own
        commands. A non-finite one is ignored (False): the commands stand in until a good one arrives."""
        vx, vy, wz = (float(v) for v in twist)
        if not (math.isfinite(vx) and math.isfinite(vy) and math.isfinite(wz) and math.isfinite(now_s)):
            self.rejections['odometry.not_finite'] += 1
            return False
        self._measured, self._measured_s = (vx, vy, wz), now_s
        return True

    def on_camera_info(self, info: CameraInfoLike) -> RejectReason | None:
        """A depth camera's CameraInfo; a bad one is counted and leaves the depth images without a model."""
        try:
            check_frame(info.header.frame_id, self.params.depth)
            self._camera = CameraModel(info)
        except SensorRejected as exc:
            self._camera = None
            self.rejections[f'camera_info.{exc.reason.value}'] += 1
            return exc.reason
        except Exception:  # noqa: BLE001  # not shaped like a CameraInfo: counted, never raised into the node
            self._camera = None
            self.rejections[f'camera_info.{RejectReason.MALFORMED.value}'] += 1
            return RejectReason.MALFORMED
        return None

    def _receive(self, name: str, convert: Callable[[], np.ndarray], now_s: float,
                 stamp_s: float | None) -> RejectReason | None:
        data = self._data.get(name)
        if data is None:
            return None      # a disabled source: the node should not even subscribe
        data.heard = True
        data.received_s = now_s
        src = self.params.sources()[name]
        try:
            if stamp_s is not None and stamp_s > 0.0 and now_s - stamp_s > src.timeout_s:
                raise SensorRejected(RejectReason.STALE, f'stamped {now_s - stamp_s:.3f} s ago (timeout_s '
                                     f'{src.timeout_s})')
            points = convert()
        except SensorRejected as exc:
            reason = exc.reason
        except Exception:  # noqa: BLE001  # not shaped like the message: counted, never raised into the node
            reason = RejectReason.MALFORMED
        else:
            self._store(data, points)
            data.last_rejection = None
            self.accepted[name] += 1
            if self.params.moving_obstacles:
                self._track(data, now_s)
            else:
                data.motion = None
            return None
        self._store(data, _EMPTY)   # the old points are not evidence of free space either
        data.motion = None          # nor are the estimates of a sensor that failed
        data.last_rejection = reason
        self.rejections[f'{name}.{reason.value}'] += 1
        return reason

    def _store(self, data: _SourceData, points: np.ndarray) -> None:
        """Keep `points` sorted by their gap to the footprint, merged per resolution_m cell (a cloud or a
        depth image sees a wall as many points over each other; the approach check needs one)."""
        gaps = self.footprint.distance(points)
        order = np.argsort(gaps, kind='stable')
        res = self.params.resolution_m
        if res > 0.0 and len(order) > 1:
            cells = np.clip(np.floor(points[order] / res), -_CELL_LIMIT, _CELL_LIMIT - 1).astype(np.int64)
            keys = (cells[:, 0] + _CELL_LIMIT) * (2 * _CELL_LIMIT) + (cells[:, 1] + _CELL_LIMIT)
            _, first = np.unique(keys, return_index=True)   # first in gap order: each cell's nearest point
            order = order[np.sort(first)]
        data.points, data.gaps = points[order], gaps[order]

    def _sector_gaps(self, points: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        """Smallest gap per sector of bearing around the base origin (inf where none)."""
        out = np.full(_SECTORS, np.inf)
        if len(points):
            bearing = np.arctan2(points[:, 1], points[:, 0])
            sector = np.floor((bearing + math.pi) * (_SECTORS / (2 * math.pi))).astype(np.int64) % _SECTORS
            np.minimum.at(out, sector, gaps)
        return out

    def _track(self, data: _SourceData, now_s: float) -> None:
        """Update a sensor's closing speed estimates with the message just stored."""
        motion = data.motion
        if motion is None:
            motion = data.motion = _Motion([], [], np.zeros(_SECTORS), np.full(_SECTORS, -math.inf), [])
        # A clock that went back (sim reset, bag loop) leaves nothing to compare with.
        motion.history = [h for h in motion.history if now_s - _HISTORY_S <= h[0] < now_s]
        gaps = self._sector_gaps(data.points, data.gaps)
        # The newest earlier message at least _BASELINE_S old.
        ref = next((h for h in reversed(motion.history) if now_s - h[0] >= _BASELINE_S), None)
        if ref is not None:
            t0, (x0, y0, a0), old = ref
            x1, y1, a1 = self._pose
            # Old base frame -> fixed frame -> present base frame.
            c0, s0, c1, s1 = math.cos(a0), math.sin(a0), math.cos(a1), math.sin(a1)
            wx = x0 + c0 * old[:, 0] - s0 * old[:, 1] - x1
            wy = y0 + s0 * old[:, 0] + c0 * old[:, 1] - y1
            moved = np.stack([c1 * wx + s1 * wy, -s1 * wx + c1 * wy], axis=1)
            before = self._sector_gaps(moved, self.footprint.distance(moved))
            # Each sector against its neighbours too: a wall seen at a grazing angle, or entering the field of
            # view as the robot turns, is sampled by other beams each time; the same surface one sector over
            # is not an obstacle that closed in.
            before = np.minimum(before, np.minimum(np.roll(before, 1), np.roll(before, -1)))
            with np.errstate(invalid='ignore'):
                closing = (before - gaps) / (now_s - t0)
            # Empty on either side, or a jump (a new obstacle in the sector, noise): counted as standing.
            closing[~np.isfinite(closing) | (closing > self.params.max_obstacle_speed_mps)] = 0.0
            motion.estimates = [*motion.estimates[-(_ESTIMATES - 1):], closing]
            speed = np.median(np.stack(motion.estimates), axis=0)
            closing_in = speed > _MIN_CLOSING_MPS
            held = ~closing_in & (motion.held_until_s >= now_s)
            motion.held_mps = np.where(closing_in, speed, np.where(held, motion.held_mps, 0.0))
            motion.held_until_s = np.where(closing_in, now_s + _HOLD_S, motion.held_until_s)
            speed = np.where(held, motion.held_mps, speed)
            motion.closing = [(-math.pi + (i + 0.5) * (2 * math.pi / _SECTORS), float(gaps[i]), float(speed[i]))
                              for i in np.flatnonzero((speed > _MIN_CLOSING_MPS) & np.isfinite(gaps))]
        else:
            motion.closing = []
        motion.history.append((now_s, self._pose, data.points.astype(np.float64)))

    def _integrate(self, now_s: float) -> None:
        """Move the integrated pose on since the last step: by the measured twist while it is fresh, else by
        the last output command."""
        last, self._last_step_s = self._last_step_s, now_s
        if last is None or not 0.0 < now_s - last <= _MAX_DT_S:
            return
        dt = now_s - last
        fresh = 0.0 <= now_s - self._measured_s <= _ODOM_FRESH_S
        vx, vy, wz = self._measured if fresh else self._last_out
        x, y, a = self._pose
        mid = a + 0.5 * wz * dt       # midpoint heading: exact enough for one control period
        self._pose = (x + (vx * math.cos(mid) - vy * math.sin(mid)) * dt,
                      y + (vx * math.sin(mid) + vy * math.cos(mid)) * dt, a + wz * dt)

    def _moving_scale(self, usable: list[tuple[str, _SourceData]], cmd: Cmd,
                      horizon_s: float) -> tuple[float, str, str]:
        """The largest scale of `cmd` that keeps gap / (robot's closing speed + obstacle's) >= horizon_s in
        every sector where an obstacle closes in, the sensor and why (1.0, '', '' when none limits)."""
        vx, vy, _ = cmd
        best, best_source, why = 1.0, '', ''
        for name, data in usable:
            m = data.motion
            if m is None:
                continue
            for centre, gap, v_obs in m.closing:
                v_robot = vx * math.cos(centre) + vy * math.sin(centre)
                if v_robot <= 0.0:
                    # Moving away from it (or across): slower than it closes in, it reaches the robot anyway,
                    # and a robot at rest is what a person yields to (and it meets them slower): stop. Faster
                    # away, or not within the horizon: the static checks govern.
                    if v_obs + v_robot <= 0.0 or gap > (v_obs + v_robot) * horizon_s:
                        continue
                    scale = 0.0
                else:
                    scale = min(1.0, max(0.0, (gap / horizon_s - v_obs) / v_robot))
                if scale < best:
                    best, best_source = scale, name
                    why = (f'approaching obstacle: {gap:.2f} m from the footprint at '
                           f'{math.degrees(centre):.0f} deg closing at {v_obs:.2f} m/s')
        return best, best_source, why

    def closing_obstacles(self) -> list[tuple[str, float, float, float]]:
        """What the guard takes for obstacles closing in, as of the newest message of each source: (source,
        bearing of the sector's centre [rad, CCW from x], its nearest gap [m], closing speed [m/s])."""
        return [(name, *entry) for name, data in self._data.items() if data.motion is not None
                for entry in data.motion.closing]

    # The control step.

    def step(self, now_s: float, cmd: Cmd) -> tuple[Cmd, GuardState]:
        """The command made safe and what the guard did. Never raises (an internal error is a stop)."""
        try:
            if math.isfinite(now_s):
                self._integrate(now_s)
            out, state = self._step(now_s, cmd)
            self._last_out = out
            return out, state
        except Exception as exc:  # noqa: BLE001  # the last stage before the motors must still answer
            self.rejections['guard.internal_error'] += 1
            self._last_out = _ZERO
            return _ZERO, GuardState(GuardAction.STOP, 0.0, math.nan, math.nan, '', f'internal error: {exc!r}')

    def _step(self, now_s: float, cmd: Cmd) -> tuple[Cmd, GuardState]:
        p = self.params
        vx, vy, wz = (float(v) for v in cmd)
        if not p.enabled:
            return (vx, vy, wz), GuardState(GuardAction.FREE, 1.0, math.inf, math.nan, '', 'guard disabled')
        if not (math.isfinite(vx) and math.isfinite(vy) and math.isfinite(wz) and math.isfinite(now_s)):
            return _ZERO, GuardState(GuardAction.STOP, 0.0, math.nan, math.nan, '',
                                     f'command or time not finite: {cmd}, {now_s}')
        # Usable sources; a required one that is not usable stops the robot.
        usable: list[tuple[str, _SourceData]] = []
        for name, data in self._data.items():
            src = p.sources()[name]
            fault = self._fault(data, src, now_s)
            if fault is None:
                usable.append((name, data))
            elif not src.optional:
                return _ZERO, GuardState(GuardAction.STOP, 0.0, math.nan, math.nan, name, f'{name}: {fault}')
        # Nearest obstacle: the first point of each sorted source.
        nearest, bearing, near_source = math.inf, math.nan, ''
        for name, data in usable:
            if len(data.gaps) and data.gaps[0] < nearest:
                nearest, near_source = float(data.gaps[0]), name
                bearing = math.atan2(float(data.points[0, 1]), float(data.points[0, 0]))
        if nearest <= p.stop_margin_m:
            return _ZERO, GuardState(GuardAction.STOP, 0.0, nearest, bearing, near_source,
                                     f'obstacle {nearest:.2f} m from the footprint at {math.degrees(bearing):.0f} '
                                     f'deg: inside the stop zone ({p.stop_margin_m} m)')
        scale, action, source = 1.0, GuardAction.FREE, ''
        reason = 'no obstacle in the zones or in the way'
        if nearest <= p.slowdown_margin_m:
            scale, action, source = p.slowdown_ratio, GuardAction.SLOWDOWN, near_source
            reason = (f'obstacle {nearest:.2f} m from the footprint at {math.degrees(bearing):.0f} deg: inside '
                      f'the slowdown zone ({p.slowdown_margin_m} m)')
        ttc = math.inf
        if p.time_before_collision_s > 0.0 and (vx, vy, wz) != _ZERO:
            ttc, ttc_source = self._time_to_collision(usable, (vx, vy, wz), p.time_before_collision_s)
            ratio = ttc / p.time_before_collision_s
            if ratio < scale:
                scale, action, source = ratio, GuardAction.APPROACH, ttc_source
                reason = (f'collision in {ttc:.2f} s at this command: scaled to keep '
                          f'{p.time_before_collision_s} s')
            if p.moving_obstacles:
                moving, moving_source, why = self._moving_scale(usable, (vx, vy, wz), p.time_before_collision_s)
                if moving < scale:
                    scale, action, source = moving, GuardAction.APPROACH, moving_source
                    reason = f'{why}: scaled to keep {p.time_before_collision_s} s'
        state = GuardState(action, scale, nearest, bearing, source, reason, ttc)
        if scale >= 1.0:
            return (vx, vy, wz), state
        return (vx * scale, vy * scale, wz * scale), state

    @staticmethod
    def _fault(data: _SourceData, src: SourceParams, now_s: float) -> str | None:
        if not data.heard:
            return 'no message received yet'
        if data.last_rejection is not None:
            return f'last message rejected ({data.last_rejection.value})'
        age = now_s - data.received_s
        if age > src.timeout_s:
            return f'silent for {age:.2f} s (timeout_s {src.timeout_s})'
        if age < -src.timeout_s:   # the clock went back (sim reset, bag loop): the data's time is unknown
            return f'received {-age:.2f} s in the future (clock jump)'
        return None

    def _time_to_collision(self, usable: list[tuple[str, _SourceData]], cmd: Cmd,
                           horizon_s: float) -> tuple[float, str]:
        """Earliest collision within the horizon over all usable sources, and its source.

        Exact, solved only for the points that can matter: a point's time to reach the footprint's
        circumscribed circle (and its gap over its speed) is a lower bound on its collision time, its time
        to reach the inscribed circle an upper bound. Points whose lower bound is beyond the horizon or
        beyond the smallest upper bound are never solved for; the rest are solved nearest-bound first, and
        each solution drops the points it beats."""
        vx, vy, wz = cmd
        fp = self.footprint
        # Every colliding point's path passes through the footprint, so it moves at most at
        # |v| + |wz| r_max and travels at least its gap: gaps beyond `reach` cannot collide in time.
        reach = horizon_s * (math.hypot(vx, vy) + abs(wz) * fp.circumradius_m)
        parts, gap_parts, owners = [], [], []
        for index, (_, data) in enumerate(usable):
            k = int(np.searchsorted(data.gaps, reach, side='right'))
            if k:
                parts.append(data.points[:k])
                gap_parts.append(data.gaps[:k])
                owners.append(np.full(k, index))
        if not parts:
            return math.inf, ''
        pts = np.concatenate(parts).astype(np.float64)
        gaps, owner = np.concatenate(gap_parts), np.concatenate(owners)
        x, y = np.ascontiguousarray(pts[:, 0]), np.ascontiguousarray(pts[:, 1])
        # Cheap first cut: a point whose line or circle misses the circumscribed circle never collides, nor
        # one that cannot cover its gap within the horizon at its own speed.
        r_max = fp.circumradius_m
        if abs(wz) < STRAIGHT_WZ:
            speed = math.hypot(vx, vy)
            ux, uy = vx / speed, vy / speed
            crosses = (np.abs(y * ux - x * uy) <= r_max) & (x * ux + y * uy >= -r_max)
        else:
            cx, cy = -vy / wz, vx / wz
            rho = np.hypot(x - cx, y - cy)
            crosses = (np.abs(rho - math.hypot(cx, cy)) <= r_max) & (gaps <= horizon_s * abs(wz) * rho)
        pts, owner, x, y = pts[crosses], owner[crosses], x[crosses], y[crosses]
        bound = circle_collision_times(x, y, cmd, fp.circumradius_m)
        keep = bound <= horizon_s
        if fp.vertices is None:      # the circle itself: the bound is exact
            pts, bound, owner = pts[keep], bound[keep], owner[keep]
            if not len(pts):
                return math.inf, ''
            i = int(np.argmin(bound))
            return float(bound[i]), usable[int(owner[i])][0]
        pts, bound, owner, x, y = pts[keep], bound[keep], owner[keep], x[keep], y[keep]
        if not len(pts):
            return math.inf, ''
        keep = bound <= float(np.min(circle_collision_times(x, y, cmd, fp.inradius_m)))
        pts, bound, owner = pts[keep], bound[keep], owner[keep]
        best, best_owner = math.inf, -1
        while len(pts):
            if len(pts) > _SOLVE_BATCH:
                first = np.argpartition(bound, _SOLVE_BATCH)[:_SOLVE_BATCH]
                rest = np.ones(len(pts), bool)
                rest[first] = False
            else:
                first, rest = np.arange(len(pts)), np.zeros(len(pts), bool)
            t, i = fp.time_to_collision(pts[first], cmd)
            if t < best:
                best, best_owner = t, int(owner[first[i]])
            rest &= bound < best
            pts, bound, owner = pts[rest], bound[rest], owner[rest]
        return best, (usable[best_owner][0] if best_owner >= 0 else '')
