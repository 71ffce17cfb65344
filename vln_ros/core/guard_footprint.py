"""The collision guard's footprint: its parameters, gaps to it, and exact times to collision. No ROS.

A footprint is a circle about the base origin or a simple polygon containing it. For a constant twist
(vx, vy, wz) the robot drives a circular arc (a straight line when wz = 0); seen from the robot, a still
obstacle point then moves on a line with velocity -v, or on a circle about the instantaneous centre of
rotation c = (-vy/wz, vx/wz) at angular rate -wz. The time at which it first reaches the footprint's
boundary is solved in closed form (line or circle against each edge, or against the circle): no time
steps, so nothing is stepped over and the result does not depend on a step size.
"""
from __future__ import annotations

import math
import re

import numpy as np
from pydantic import field_validator

from vln_ros.core.schema import StrictModel, param

Cmd = tuple[float, float, float]   # (vx [m/s], vy [m/s], wz [rad/s])
# Below this yaw rate a twist drives a straight line: the arc's centre would be too far away to compute with.
STRAIGHT_WZ = 1e-6
_TWO_PI = 2.0 * math.pi


def parse_polygon(text: str) -> np.ndarray:
    """'x0, y0, x1, y1, ...' (Nav2's '[[x0, y0], [x1, y1], ...]' reads the same: brackets are ignored)
    -> (N, 2) vertices; raises ValueError saying what is wrong with it."""
    tokens = [t for t in re.split(r'[\s,\[\]]+', text) if t]
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f'{text!r} is not a list of numbers x0, y0, x1, y1, ...') from None
    if len(values) % 2:
        raise ValueError(f'{text!r} has {len(values)} numbers; x, y pairs need an even count')
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f'{text!r} has a non-finite number')
    vertices = np.array(values, np.float64).reshape(-1, 2)
    if len(vertices) < 3:
        raise ValueError(f'{text!r} has {len(vertices)} points; a polygon needs at least 3')
    if np.any(np.all(vertices == np.roll(vertices, -1, axis=0), axis=1)):
        raise ValueError(f'{text!r} repeats a corner (an edge of length 0)')
    if _self_intersects(vertices):
        raise ValueError(f'{text!r} crosses itself (give the corners in order around the robot)')
    x, y = vertices[:, 0], vertices[:, 1]
    if abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) < 1e-6:
        raise ValueError(f'{text!r} encloses no area')
    if not _inside(np.zeros((1, 2)), vertices)[0]:
        raise ValueError(f'{text!r} does not contain the base origin (0, 0)')
    return vertices


def _self_intersects(v: np.ndarray) -> bool:
    """Whether two edges that are not neighbours cross or touch (a handful of edges: loops are fine here)."""
    n = len(v)
    edges = [(v[i], v[(i + 1) % n]) for i in range(n)]

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue
            (a, b), (c, d) = edges[i], edges[j]
            d1, d2, d3, d4 = orient(c, d, a), orient(c, d, b), orient(a, b, c), orient(a, b, d)
            if d1 * d2 <= 0 and d3 * d4 <= 0 and (d1, d2, d3, d4) != (0, 0, 0, 0):
                return True
            if (d1, d2, d3, d4) == (0, 0, 0, 0):   # collinear: overlapping when their spans meet
                lo1, hi1 = sorted((float(a @ (b - a)), float(b @ (b - a))))
                lo2, hi2 = sorted((float(c @ (b - a)), float(d @ (b - a))))
                if lo1 <= hi2 and lo2 <= hi1:
                    return True
    return False


class FootprintParams(StrictModel):
    """guard.footprint: the robot's outline in the base frame."""

    radius_m: float = param(0.3, 'Radius of a circular footprint around the base origin (used when polygon is '
                            'empty)', 'm', gt=0.0, le=5.0, dynamic=True)
    polygon: str = param('', "Polygon footprint instead of the circle: corners in order, 'x0, y0, x1, y1, ...' "
                         "(Nav2's '[[x0, y0], [x1, y1], ...]' is read too), containing the base origin; "
                         'empty = the circle', 'm', dynamic=True)

    @field_validator('polygon')
    @classmethod
    def _polygon_parses(cls, value: str) -> str:
        if value.strip():
            parse_polygon(value)
        return value


def _inside(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule, (N,) bool. Arrays are (E, N), edges down, points across: numpy reduces over a short
    first axis far faster than over a short last one."""
    x, y = points[:, 0], points[:, 1]
    ax, ay = vertices[:, 0:1], vertices[:, 1:2]
    bx, by = np.roll(ax, -1, axis=0), np.roll(ay, -1, axis=0)
    straddles = (ay > y) != (by > y)
    with np.errstate(divide='ignore', invalid='ignore'):
        x_cross = ax + (y - ay) * ((bx - ax) / (by - ay))
    return np.asarray(np.count_nonzero(straddles & (x < x_cross), axis=0) % 2 == 1)


def _turn_times(x: np.ndarray, y: np.ndarray, qx: np.ndarray, qy: np.ndarray, cx: float, cy: float,
                wz: float) -> np.ndarray:
    """Time [s] for points (x, y), turning about (cx, cy) at -wz, to reach (qx, qy) (arrays broadcast)."""
    px, py = x - cx, y - cy
    # Signed angle (CCW) from p to q about c, from small differences (c may be far away).
    angle = np.arctan2(px * (qy - y) - py * (qx - x), px * (qx - cx) + py * (qy - cy))
    if wz > 0.0:
        angle = -angle
    return np.asarray(np.where(angle < 0.0, angle + _TWO_PI, angle) / abs(wz))   # np.mod is far slower


def circle_collision_times(x: np.ndarray, y: np.ndarray, cmd: Cmd, radius_m: float) -> np.ndarray:
    """(N,) first time [s] at which a circle of radius_m about the base origin, driven by the constant twist
    `cmd`, touches each point (x, y: float64 (N,), base frame at time 0); inf when it never does; 0 inside."""
    vx, vy, wz = cmd
    r2 = radius_m * radius_m
    pp = x * x + y * y
    inside = pp <= r2
    if abs(wz) < STRAIGHT_WZ:
        # |p - v t| = r: the entry root of the quadratic.
        a = vx * vx + vy * vy
        if a == 0.0:
            return np.asarray(np.where(inside, 0.0, np.inf))
        b = -(x * vx + y * vy)
        disc = b * b - a * (pp - r2)
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.asarray(np.where(inside, 0.0, np.where((disc >= 0.0) & (t >= 0.0), t, np.inf)))
    cx, cy = -vy / wz, vx / wz
    dist_c = math.hypot(cx, cy)
    if dist_c == 0.0:   # turning on the spot: a circle about its own centre sweeps nothing
        return np.asarray(np.where(inside, 0.0, np.inf))
    # |q - c| = rho against |q| = r, solved from the footprint's side (small numbers only, however far
    # away c is): q = b u + k u_perp, u = c / |c|. A point enters where it moves inwards, which is the
    # root with k of the sign opposite to wz's (cross(c, q) = k |c| and the inward test is wz cross(c, q) < 0).
    ux, uy = cx / dist_c, cy / dist_c
    # A centre a subnormal distance away overflows b: k2 is then -inf or NaN, which is "no hit" below.
    with np.errstate(over='ignore', invalid='ignore'):
        b = (r2 - pp + 2.0 * (x * cx + y * cy)) / (2.0 * dist_c)
        k2 = r2 - b * b
        k = np.sqrt(np.maximum(k2, 0.0)) * (-1.0 if wz > 0.0 else 1.0)
        t = _turn_times(x, y, b * ux - k * uy, b * uy + k * ux, cx, cy, wz)
    return np.asarray(np.where(inside, 0.0, np.where(k2 >= 0.0, t, np.inf)))


class Footprint:
    """The robot's outline: a circle about the base origin or a simple polygon containing it."""

    def __init__(self, params: FootprintParams) -> None:
        self.radius_m = params.radius_m
        self.vertices: np.ndarray | None = parse_polygon(params.polygon) if params.polygon.strip() else None
        if self.vertices is None:
            self.circumradius_m = self.inradius_m = self.radius_m
        else:
            v = self.vertices
            self._edges = np.roll(v, -1, axis=0) - v
            self._edge_len2 = np.einsum('ij,ij->i', self._edges, self._edges)
            self._inv_edge_len2 = 1.0 / self._edge_len2
            self.circumradius_m = float(np.max(np.hypot(v[:, 0], v[:, 1])))
            # The largest circle about the origin inside the polygon: the origin's distance to its edges.
            self.inradius_m = float(self._edge_distance(np.zeros((1, 2)))[0])

    def _edge_distance(self, p: np.ndarray) -> np.ndarray:
        assert self.vertices is not None
        ex, ey = self._edges[:, 0:1], self._edges[:, 1:2]                  # (E, 1) against (N,)
        wx = p[:, 0] - self.vertices[:, 0:1]                               # (E, N), as in _inside
        wy = p[:, 1] - self.vertices[:, 1:2]
        s = np.clip((wx * ex + wy * ey) * self._inv_edge_len2[:, None], 0.0, 1.0)
        dx, dy = wx - s * ex, wy - s * ey
        return np.asarray(np.sqrt(np.min(dx * dx + dy * dy, axis=0)))

    def distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) distance of each point from the footprint [m], 0 inside it."""
        p = points.astype(np.float64, copy=False)
        if self.vertices is None:
            return np.asarray(np.maximum(np.hypot(p[:, 0], p[:, 1]) - self.radius_m, 0.0))
        return np.asarray(np.where(_inside(p, self.vertices), 0.0, self._edge_distance(p)))

    def collision_times(self, points: np.ndarray, cmd: Cmd) -> np.ndarray:
        """(N,) first time [s] at which the footprint, driven by the constant twist `cmd`, touches each
        point (base frame at time 0); inf when it never does. Points inside are the stop zone's business:
        for them the result is 0 (circle) or the time they would cross an edge (polygon)."""
        x = np.ascontiguousarray(points[:, 0], dtype=np.float64)
        y = np.ascontiguousarray(points[:, 1], dtype=np.float64)
        vx, vy, wz = cmd
        if self.vertices is None:
            return circle_collision_times(x, y, cmd, self.radius_m)
        if vx == 0.0 and vy == 0.0 and wz == 0.0:
            return np.full(len(x), np.inf)
        # (E, N) arrays, edges down and points across, as in _inside.
        ax, ay = self.vertices[:, 0:1], self.vertices[:, 1:2]              # (E, 1)
        ex, ey = self._edges[:, 0:1], self._edges[:, 1:2]
        if abs(wz) < STRAIGHT_WZ:
            # p + d t = a + s e, d = -v: t = cross(a - p, e) / cross(d, e), s = cross(a - p, d) / cross(d, e).
            dx, dy = -vx, -vy
            wx, wy = ax - x, ay - y                                         # (E, N)
            denom = dx * ey - dy * ex                                       # (E, 1)
            with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
                t = (wx * ey - wy * ex) / denom
                s = (wx * dy - wy * dx) / denom
            hit = (denom != 0.0) & (s >= 0.0) & (s <= 1.0) & (t >= 0.0)
            return np.asarray(np.min(np.where(hit, t, np.inf), axis=0))
        # |q - c| = rho against each edge q = a + s e, s in [0, 1]: A s^2 + B s + C = 0, where
        # C = |a - c|^2 - rho^2 = (a - p).(a + p - 2c) (no cancellation however far away c is).
        cx, cy = -vy / wz, vx / wz
        big_a = self._edge_len2[:, None]                                    # (E, 1)
        big_b = 2.0 * ((ax - cx) * ex + (ay - cy) * ey)                     # (E, 1)
        big_c = (ax - x) * (ax + x - 2.0 * cx) + (ay - y) * (ay + y - 2.0 * cy)   # (E, N)
        disc = big_b * big_b - 4.0 * big_a * big_c
        root = np.sqrt(np.maximum(disc, 0.0))
        q = -0.5 * (big_b + np.where(big_b >= 0.0, root, -root))            # the stable quadratic formula
        best = np.full(len(x), np.inf)
        with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
            for s in (q / big_a, big_c / q):
                hit = (disc >= 0.0) & (s >= 0.0) & (s <= 1.0)
                t = _turn_times(x, y, ax + s * ex, ay + s * ey, cx, cy, wz)
                best = np.minimum(best, np.min(np.where(hit, t, np.inf), axis=0))
        return best

    def time_to_collision(self, points: np.ndarray, cmd: Cmd) -> tuple[float, int]:
        """The earliest of collision_times and its point's index; (inf, -1) when none collides."""
        if len(points) == 0:
            return math.inf, -1
        times = self.collision_times(points, cmd)
        i = int(np.argmin(times))
        return float(times[i]), (i if math.isfinite(times[i]) else -1)
