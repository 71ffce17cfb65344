"""Plane geometry over a scene's plain data: points along a polyline, its length and bends, where along it a point
lies, and distances from points to wall segments and landmark boxes. No ROS.

One home for the queries that the scene generator (clearances, route lengths), describe() and the renderer's map
share. The tests keep geometry of their own, so a bug here cannot hide behind itself.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vln_ros.sim.scene import Landmark, Wall

Polyline = Sequence[tuple[float, float]]


def sample_polyline(points: Polyline, step_m: float) -> np.ndarray:
    """Points along the polyline no more than step_m apart, both ends included (N x 2)."""
    out = [np.asarray(points[:1], float)]
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:], strict=True):
        n = max(1, math.ceil(math.hypot(bx - ax, by - ay) / step_m))
        t = np.arange(1, n + 1) / n
        out.append(np.stack([ax + t * (bx - ax), ay + t * (by - ay)], axis=1))
    return np.concatenate(out)


def polyline_length_m(points: Polyline) -> float:
    """The polyline's length (0 for fewer than two points)."""
    return sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(points[:-1], points[1:], strict=True))


def arc_position_m(route: Polyline, x: float, y: float) -> float:
    """How far along the route the point nearest (x, y) lies."""
    best, best_arc, arc = math.inf, 0.0, 0.0
    for (ax, ay), (bx, by) in zip(route[:-1], route[1:], strict=True):
        length = math.hypot(bx - ax, by - ay)
        t = min(1.0, max(0.0, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / max(length * length, 1e-12)))
        d = math.hypot(ax + t * (bx - ax) - x, ay + t * (by - ay) - y)
        if d < best:
            best, best_arc = d, arc + t * length
        arc += length
    return best_arc


def route_turns(route: Polyline) -> str:
    """'L'/'R' for each bend of the route sharper than 45 degrees, in order."""
    out = []
    for a, b, c in zip(route[:-2], route[1:-1], route[2:], strict=True):
        h0 = math.atan2(b[1] - a[1], b[0] - a[0])
        h1 = math.atan2(c[1] - b[1], c[0] - b[0])
        bend = math.atan2(math.sin(h1 - h0), math.cos(h1 - h0))
        if abs(bend) > math.radians(45):
            out.append('L' if bend > 0 else 'R')
    return ''.join(out)


def distance_to_walls(points: np.ndarray, walls: Sequence[Wall]) -> np.ndarray:
    """Each point's distance to the nearest wall segment."""
    seg = np.array([(w.x0, w.y0, w.x1, w.y1) for w in walls], float)
    p = points[:, None, :]
    a, d = seg[None, :, :2], (seg[:, 2:] - seg[:, :2])[None]
    t = np.clip(((p - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * d), axis=-1).min(axis=1)


def distance_to_landmarks(points: np.ndarray, landmarks: Sequence[Landmark]) -> np.ndarray:
    """Each point's distance to the nearest landmark box (inf without landmarks)."""
    if not landmarks:
        return np.full(len(points), np.inf)
    box = np.array([(m.x, m.y, m.size_x / 2, m.size_y / 2) for m in landmarks], float)
    gx = np.maximum(np.abs(points[:, None, 0] - box[None, :, 0]) - box[None, :, 2], 0.0)
    gy = np.maximum(np.abs(points[:, None, 1] - box[None, :, 1]) - box[None, :, 3], 0.0)
    return np.hypot(gx, gy).min(axis=1)
