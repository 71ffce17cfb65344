"""The geodesic shortest path from a scene's start to its goal for a round robot of radius r: the shortest polyline
whose every point keeps at least r from every wall and landmark box. No ROS.

Why: SPL (success weighted by path length, Anderson et al. 2018) divides by the shortest path's length. The scene's
route is the corridors' centre line, which does not cut corners, so it is longer than the shortest path and a robot
that cuts corners scores SPL 1.0 without earning it; this length is the denominator instead.

How: a visibility graph. Obstacles are the walls (segments) and the landmark boxes' four edges. Nodes are the start,
the goal and, around every wall end and box corner, the n = corner_points points at distance
r / cos(pi / n) * (1 + 1e-3) in the directions pi / 4 + 2 pi k / n: the vertices of a regular n-gon circumscribing
the circle of radius r around the corner, so each keeps more than r from that corner. With n = 4 they are the
diagonal points r * (+-1, +-1) * (1 + 1e-3). Those that keep r from every obstacle stay; two nodes are joined when
the straight segment between them keeps r from every obstacle (exact segment-to-segment distances, in numpy);
Dijkstra (heapq) finds the shortest path. Deterministic: no randomness, nodes in the scene's order.

How long: the true geodesic wraps each corner it turns around on an arc of radius r; this path goes round the n-gon
instead, so it is never shorter than the true geodesic (up to the 1e-6 m tolerance) and a little longer: about
(tan(pi / n) / (pi / n) - 1) * r * theta per corner turned through theta, plus the 1e-3 margin. Around a 90-degree
corner hugged on both sides, the diagonal point (n = 4) makes 2 r of the arc's pi r / 2: (2 - pi / 2) r = 0.43 r,
129 mm longer at r = 0.3 m, which is NOT a few mm. Measured against the exact arc geodesic for that turn at
r = 0.3 m: n = 4 129 mm, n = 8 26 mm, n = 16 6.6 mm, n = 32 2.0 mm (less when the path only grazes the corner).
The default n = 16 keeps a right-angle turn within about 7 mm at a similar cost to n = 4 (most of the points are
closer than r to a wall and dropped); corner_points=4 gives the square offsets alone.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np

from vln_ros.sim.scene import Scene

RADIUS_M = 0.3
CORNER_POINTS = 16      # n: points around each corner (see the docstring)
_MARGIN = 1e-3          # corner points sit this fraction further out than needed
_TOLERANCE_M = 1e-6     # clearance counts as kept down to radius - this
_CHUNK = 200_000        # (edges x obstacles) entries per numpy batch


def shortest_path(scene: Scene, radius_m: float = RADIUS_M,
                  corner_points: int = CORNER_POINTS) -> list[tuple[float, float]]:
    """The shortest polyline from the scene's start to its goal keeping radius_m from every wall and landmark box
    (within the corner approximation in the module docstring; corner_points = n there, at least 3).
    Raises ValueError when the start or goal is closer than radius_m to an obstacle or no path exists."""
    if radius_m <= 0:
        raise ValueError(f'radius_m must be positive, got {radius_m}')
    if corner_points < 3:
        raise ValueError(f'corner_points must be at least 3, got {corner_points}')
    segments = obstacle_segments(scene)
    start = (float(scene.start.x), float(scene.start.y))
    goal = (float(scene.goal.x), float(scene.goal.y))
    need = radius_m - _TOLERANCE_M
    ends = np.array([start, goal])
    ends_clearance = _point_segment_distance(ends, segments).min(axis=1) if len(segments) else np.full(2, np.inf)
    for name, point, clearance in zip(('start', 'goal'), (start, goal), ends_clearance, strict=True):
        if clearance < need:
            raise ValueError(f'seed {scene.seed}: the {name} {point} is {clearance:.3f} m from an obstacle, '
                             f'closer than the robot radius {radius_m} m')
    if start == goal:
        return [start, goal]

    nodes = np.concatenate([ends, _corner_candidates(segments, radius_m, corner_points)])
    if len(segments):
        keep = _point_segment_distance(nodes, segments).min(axis=1) >= need
        keep[:2] = True
        nodes = nodes[keep]
    n = len(nodes)
    i, j = np.triu_indices(n, k=1)
    visible = _segments_clear(nodes[i], nodes[j], segments, need)
    i, j = i[visible], j[visible]
    lengths = np.hypot(*(nodes[j] - nodes[i]).T)
    neighbours: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    for a, b, w in zip(i.tolist(), j.tolist(), lengths.tolist(), strict=True):
        neighbours[a].append((w, b))
        neighbours[b].append((w, a))

    previous = _dijkstra(neighbours, source=0, target=1)
    if previous is None:
        raise ValueError(f'seed {scene.seed}: no path from the start {start} to the goal {goal} keeps '
                         f'{radius_m} m from every wall and landmark')
    path = [1]
    while path[-1] != 0:
        path.append(previous[path[-1]])
    points = [(float(nodes[k, 0]), float(nodes[k, 1])) for k in reversed(path)]
    points[0], points[-1] = start, goal
    return points


def path_length(points: Sequence[tuple[float, float]]) -> float:
    """The length of a polyline (0 for fewer than two points)."""
    return sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(points[:-1], points[1:], strict=True))


def obstacle_segments(scene: Scene) -> np.ndarray:
    """Every wall and every landmark box's four edges as rows (x0, y0, x1, y1)."""
    rows = [(w.x0, w.y0, w.x1, w.y1) for w in scene.walls]
    for m in scene.landmarks:
        x0, x1 = m.x - m.size_x / 2, m.x + m.size_x / 2
        y0, y1 = m.y - m.size_y / 2, m.y + m.size_y / 2
        rows += [(x0, y0, x1, y0), (x1, y0, x1, y1), (x1, y1, x0, y1), (x0, y1, x0, y0)]
    return np.array(rows, dtype=float).reshape(-1, 4)


def _corner_candidates(segments: np.ndarray, radius_m: float, corner_points: int) -> np.ndarray:
    """The points around every distinct segment end (first occurrence order, so deterministic)."""
    corners = dict.fromkeys((round(x, 9), round(y, 9)) for x, y in segments.reshape(-1, 2).tolist())
    if not corners:
        return np.empty((0, 2))
    angles = math.pi / 4 + 2 * math.pi * np.arange(corner_points) / corner_points
    reach = radius_m / math.cos(math.pi / corner_points) * (1 + _MARGIN)
    offsets = reach * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if corner_points == 4:
        offsets = radius_m * (1 + _MARGIN) * np.sign(offsets)     # exactly r * (+-1, +-1) * (1 + 1e-3)
    return (np.array(list(corners))[:, None, :] + offsets[None]).reshape(-1, 2)


def _point_segment_distance(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(points, segments) distances from each point (N, 2) to each segment (M, 4)."""
    a, b = segments[None, :, :2], segments[None, :, 2:]
    p = points[:, None, :]
    ab = b - a
    dot = (ab * ab).sum(axis=-1)
    t = np.clip(((p - a) * ab).sum(axis=-1) / np.where(dot > 0, dot, 1.0), 0.0, 1.0)
    return np.hypot(*np.moveaxis(p - (a + t[..., None] * ab), -1, 0))


def _segments_clear(p0: np.ndarray, p1: np.ndarray, segments: np.ndarray, need: float) -> np.ndarray:
    """For each segment p0[k] -> p1[k]: whether it keeps at least `need` from every obstacle segment."""
    clear = np.ones(len(p0), dtype=bool)
    if not len(segments) or not len(p0):
        return clear
    step = max(1, _CHUNK // len(segments))
    for lo in range(0, len(p0), step):
        d = segment_segment_distance(p0[lo:lo + step], p1[lo:lo + step], segments)
        clear[lo:lo + step] = d.min(axis=1) >= need
    return clear


def segment_segment_distance(p0: np.ndarray, p1: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(E, M) distances between the segments p0[k] -> p1[k] (E, 2 each) and the segments (M, 4): 0 where they
    cross, else the least of the four endpoint-to-segment distances."""
    a, b = segments[:, :2], segments[:, 2:]
    d = np.minimum(
        np.minimum(_point_segment_distance(p0, segments), _point_segment_distance(p1, segments)),
        np.minimum(_point_segment_distance(a, np.concatenate([p0, p1], axis=1)).T,
                   _point_segment_distance(b, np.concatenate([p0, p1], axis=1)).T))
    e = (p1 - p0)[:, None, :]            # (E, 1, 2)
    f = (b - a)[None]                    # (1, M, 2)
    ap0 = a[None] - p0[:, None, :]       # (E, M, 2)
    bp0 = b[None] - p0[:, None, :]
    pa = -ap0                            # p0 - a
    p1a = p1[:, None, :] - a[None]
    side_a = _cross(e, ap0) * _cross(e, bp0)       # the obstacle's ends on opposite sides of the edge's line
    side_p = _cross(f, pa) * _cross(f, p1a)        # the edge's ends on opposite sides of the obstacle's line
    return np.where((side_a < 0) & (side_p < 0), 0.0, d)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _dijkstra(neighbours: list[list[tuple[float, int]]], source: int, target: int) -> list[int] | None:
    """Each node's predecessor on a shortest path from source, or None when target is unreachable."""
    best = [math.inf] * len(neighbours)
    previous = [-1] * len(neighbours)
    best[source] = 0.0
    queue = [(0.0, source)]
    while queue:
        d, u = heapq.heappop(queue)
        if u == target:
            return previous
        if d > best[u]:
            continue
        for w, v in neighbours[u]:
            if d + w < best[v]:
                best[v] = d + w
                previous[v] = u
                heapq.heappush(queue, (d + w, v))
    return None
