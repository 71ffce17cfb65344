"""The simulated robot's 2D laser: one level fan of beams cast against a scene's walls, landmark boxes and people
(vertical cylinders, vln_ros/sim/people.py). No ROS.

Each beam is a ray in the laser's plane from its mount on the robot (mount.x_m forward of the base origin, on the
centre line, level, at mount.z_m above the floor); every beam is intersected with every segment at once (numpy,
beams x segments), the nearest hit wins; other robots of the same simulator are cylinders, like people. Walls go
from floor to ceiling and landmark boxes (4 segments each) are seen when they are taller than the laser's plane
(every generated box is: they all reach above the camera).
Doors are drawn on walls, so the laser sees the wall. Not seen: the robot itself, the floor and the ceiling.

The ranges follow REP 117: +inf where a beam has no return within range_max_m, -inf where the surface is nearer
than range_min_m (only when the laser is inside a wall: the robot has collided). Each measured range is the true
one plus Gaussian noise (noise_m standard deviation, cut off at NOISE_CUTOFF standard deviations so that an error
is bounded), clipped to [range_min_m, range_max_m]. Angles follow REP 103: the first beam at angle_min (to the
right, negative), each next one angle_increment further counter-clockwise, 0 straight ahead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.sim.params import LaserParams
from vln_ros.sim.people import PERSON_RADIUS_M
from vln_ros.sim.scene import Scene

NOISE_CUTOFF = 3.0       # noise beyond this many standard deviations is cut off (an error is at most 3 noise_m)
_PARALLEL = 1e-12        # |cross(beam, segment)| below this: the beam runs along the segment and does not hit it


@dataclass(frozen=True)
class ScanGeometry:
    """The fan's angles as a sensor_msgs/LaserScan states them (radians, REP 103: CCW, 0 ahead)."""

    angle_min: float
    angle_increment: float
    count: int

    @property
    def angle_max(self) -> float:
        return self.angle_min + (self.count - 1) * self.angle_increment

    @property
    def angles(self) -> np.ndarray:
        return self.angle_min + np.arange(self.count) * self.angle_increment


def scan_geometry(fov_deg: float, step_deg: float) -> ScanGeometry:
    """The largest fan of step_deg steps within fov_deg, symmetric about straight ahead. A full circle leaves
    out its last beam, which would repeat the first."""
    steps = math.floor(fov_deg / step_deg + 1e-9)
    count = steps if fov_deg >= 360.0 - 1e-9 else steps + 1
    increment = math.radians(step_deg)
    return ScanGeometry(-steps * increment / 2, increment, count)


def scene_segments(scene: Scene, plane_z_m: float) -> np.ndarray:
    """The scene's walls and the sides of its landmark boxes taller than plane_z_m, as (S, 4) x0, y0, x1, y1."""
    rows = [(w.x0, w.y0, w.x1, w.y1) for w in scene.walls]
    for m in scene.landmarks:
        if m.height <= plane_z_m:   # the beams pass over it
            continue
        x0, x1, y0, y1 = m.x - m.size_x / 2, m.x + m.size_x / 2, m.y - m.size_y / 2, m.y + m.size_y / 2
        rows += [(x0, y0, x1, y0), (x1, y0, x1, y1), (x1, y1, x0, y1), (x0, y1, x0, y0)]
    return np.asarray(rows, float).reshape(-1, 4)


def true_ranges(origin_x: float, origin_y: float, directions: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Distance along each unit direction (N, 2) from the origin to the nearest segment (S, 4); inf where a beam
    hits none. Solves origin + t d = a + u (b - a) for every beam and segment at once."""
    if len(segments) == 0:
        return np.full(len(directions), np.inf)
    ax, ay = segments[:, 0] - origin_x, segments[:, 1] - origin_y          # (S,) segment start, from the origin
    ex, ey = segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]
    dx, dy = directions[:, :1], directions[:, 1:]                          # (N, 1)
    denom = dx * ey - dy * ex                                              # (N, S) cross(d, e)
    parallel = np.abs(denom) < _PARALLEL
    denom = np.where(parallel, 1.0, denom)
    t = (ax * ey - ay * ex) / denom                                        # cross(a, e) / cross(d, e)
    u = (ax * dy - ay * dx) / denom                                        # cross(a, d) / cross(d, e)
    hit = ~parallel & (t >= 0.0) & (u >= 0.0) & (u <= 1.0)
    return np.where(hit, t, np.inf).min(axis=1)


def circle_ranges(origin_x: float, origin_y: float, directions: np.ndarray, centres: np.ndarray,
                  radius_m: float) -> np.ndarray:
    """Distance along each unit direction (N, 2) to the nearest circle of radius_m around centres (P, 2); inf where
    a beam misses them all, 0 from inside one. Solves |origin + t d - c| = r for every beam and circle at once."""
    if len(centres) == 0:
        return np.full(len(directions), np.inf)
    mx, my = origin_x - centres[:, 0], origin_y - centres[:, 1]                    # (P,)
    b = directions[:, :1] * mx + directions[:, 1:] * my                            # (N, P) m . d
    disc = b * b - (mx * mx + my * my - radius_m * radius_m)
    root = np.sqrt(np.maximum(disc, 0.0))
    far = -b + root
    hit = (disc >= 0.0) & (far >= 0.0)
    return np.where(hit, np.maximum(-b - root, 0.0), np.inf).min(axis=1)


class Laser:
    """A laser with its parameters; scan(scene, pose, rng) is one sweep, all beams at one instant (a real laser
    spins through its fan in scan_time; at a walking robot's speeds the difference is a few millimetres)."""

    def __init__(self, params: LaserParams) -> None:
        self.params = params
        self.geometry = scan_geometry(params.fov_deg, params.step_deg)
        self._angles = self.geometry.angles
        self._scene: Scene | None = None
        self._segments = np.empty((0, 4))

    def _segments_of(self, scene: Scene) -> np.ndarray:
        if scene is not self._scene:   # a new episode: its walls and boxes once, not every sweep
            self._scene, self._segments = scene, scene_segments(scene, self.params.mount.z_m)
        return self._segments

    def origin(self, pose: Pose2D) -> tuple[float, float]:
        """Where the laser is in the world when the robot's base is at pose."""
        x_m = self.params.mount.x_m
        return pose.x + x_m * math.cos(pose.yaw), pose.y + x_m * math.sin(pose.yaw)

    def true_ranges(self, scene: Scene, pose: Pose2D, people_xy: np.ndarray | None = None,
                    robots_xy: np.ndarray | None = None, robot_radius_m: float = 0.0) -> np.ndarray:
        """The exact distances (N,), inf without a hit at any distance; people_xy (P, 2) are people standing
        there (vertical cylinders of PERSON_RADIUS_M, taller than any laser plane); robots_xy (K, 2) other robots
        (cylinders of robot_radius_m: a quadruped's body is as high as the laser's plane)."""
        world = pose.yaw + self._angles
        directions = np.stack([np.cos(world), np.sin(world)], axis=1)
        ox, oy = self.origin(pose)
        ranges = true_ranges(ox, oy, directions, self._segments_of(scene))
        if people_xy is not None and len(people_xy):
            ranges = np.minimum(ranges, circle_ranges(ox, oy, directions, people_xy, PERSON_RADIUS_M))
        if robots_xy is not None and len(robots_xy):
            ranges = np.minimum(ranges, circle_ranges(ox, oy, directions, robots_xy, robot_radius_m))
        return ranges

    def scan(self, scene: Scene, pose: Pose2D, rng: np.random.Generator,
             people_xy: np.ndarray | None = None, robots_xy: np.ndarray | None = None,
             robot_radius_m: float = 0.0) -> np.ndarray:
        """The measured ranges (N,) as float32, REP 117: +inf no return within range_max_m, -inf nearer than
        range_min_m, otherwise the true range with bounded noise, within [range_min_m, range_max_m]."""
        p = self.params
        truth = self.true_ranges(scene, pose, people_xy, robots_xy, robot_radius_m)
        measured = truth
        if p.noise_m > 0.0:
            noise = np.clip(rng.standard_normal(len(truth)), -NOISE_CUTOFF, NOISE_CUTOFF) * p.noise_m
            measured = truth + noise
        out = np.clip(measured, p.range_min_m, p.range_max_m)
        out[truth > p.range_max_m] = np.inf
        out[truth < p.range_min_m] = -np.inf
        return out.astype(np.float32)
