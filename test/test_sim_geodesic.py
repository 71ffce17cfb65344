"""sim/geodesic: the shortest path a 0.3 m robot can take from start to goal (SPL's denominator), no ROS. On hand-built
corridors: a straight one gives the straight line, an L cuts its corner (shorter than the centre line, never closer
than the radius to a wall), a box in the way forces a detour no longer than the exact one with arcs plus a few mm, a
right-angle turn round a wall corner stays within 1 cm of the exact arc geodesic; over generated scenes the path is
between the straight line and the centre-line route and keeps its clearance; no path raises ValueError.

Clearances are measured with the test's own geometry (not the module's), so a bug there cannot hide behind itself."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vln_ros.core.control import Pose2D
from vln_ros.sim import scenes
from vln_ros.sim.geodesic import path_length, shortest_path
from vln_ros.sim.scene import Landmark, Scene, Wall

RADIUS_M = 0.3
GREY = (128, 128, 128)
SEEDS = range(100)


def _scene(outline: list[tuple[float, float]], start: tuple[float, float], goal: tuple[float, float],
           route: tuple[tuple[float, float], ...] | None = None, landmarks: tuple[Landmark, ...] = (),
           extra_walls: tuple[Wall, ...] = ()) -> Scene:
    """A closed polygon of walls (plus extra walls and landmarks), start and goal as given."""
    walls = tuple(Wall(*a, *b, GREY) for a, b in zip(outline, outline[1:] + outline[:1], strict=True)) + extra_walls
    return Scene(seed=-1, walls=walls, doors=(), landmarks=landmarks, start=Pose2D(*start, 0.0),
                 goal=Pose2D(*goal, 0.0), route=route or (start, goal), instruction='test', language='en', kind='test')


def _along(points: list[tuple[float, float]], step_m: float) -> np.ndarray:
    """The polyline sampled at least every step_m, both ends and every vertex included."""
    out = [np.array(points[0], float)]
    for a, b in zip(points[:-1], points[1:], strict=True):
        a_, b_ = np.array(a, float), np.array(b, float)
        n = max(1, int(np.ceil(np.linalg.norm(b_ - a_) / step_m)))
        out += [a_ + (b_ - a_) * k / n for k in range(1, n + 1)]
    return np.array(out)


def _clearance(points: np.ndarray, scene: Scene) -> float:
    """The least distance from any point to any wall segment or landmark box (boxes as solid rectangles)."""
    best = np.inf
    for w in scene.walls:
        a, b = np.array([w.x0, w.y0]), np.array([w.x1, w.y1])
        t = np.clip((points - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        best = min(best, float(np.linalg.norm(points - (a + t[:, None] * (b - a)), axis=1).min()))
    for m in scene.landmarks:
        gap_x = np.maximum(np.abs(points[:, 0] - m.x) - m.size_x / 2, 0)
        gap_y = np.maximum(np.abs(points[:, 1] - m.y) - m.size_y / 2, 0)
        best = min(best, float(np.hypot(gap_x, gap_y).min()))
    return best


def _start_goal(scene: Scene) -> tuple[tuple[float, float], tuple[float, float]]:
    return (scene.start.x, scene.start.y), (scene.goal.x, scene.goal.y)


def _wrapped(p: tuple[float, float], q: tuple[float, float], centre: tuple[float, float], r: float,
             clockwise: bool) -> float:
    """The exact length from p round a disc (centre, r) to q: two tangents and the arc between them, going
    clockwise or counter-clockwise round the centre (p and q outside the disc, the arc positive)."""
    p_ = (p[0] - centre[0], p[1] - centre[1])
    q_ = (q[0] - centre[0], q[1] - centre[1])
    dp, dq = math.hypot(*p_), math.hypot(*q_)
    swept = (math.atan2(*p_[::-1]) - math.atan2(*q_[::-1])) * (1 if clockwise else -1) % (2 * math.pi)
    arc = swept - math.acos(r / dp) - math.acos(r / dq)
    assert arc > 0
    return math.sqrt(dp * dp - r * r) + math.sqrt(dq * dq - r * r) + r * arc


# -- hand-built corridors ---------------------------------------------------------------------------------------

# A straight corridor 2 m wide, x from -1 to 10.
STRAIGHT = [(-1.0, -1.0), (10.0, -1.0), (10.0, 1.0), (-1.0, 1.0)]
# An L: 2 m wide along +x from x = -1 to 9, turning left into one along +y up to y = 9 (as in test_sim_oracle).
L_OUTLINE = [(-1.0, -1.0), (9.0, -1.0), (9.0, 9.0), (7.0, 9.0), (7.0, 1.0), (-1.0, 1.0)]
L_SCENE = _scene(L_OUTLINE, (0.0, 0.0), (8.0, 7.0), route=((0.0, 0.0), (8.0, 0.0), (8.0, 7.0)))


def test_an_empty_straight_corridor_gives_the_straight_line():
    scene = _scene(STRAIGHT, (0.0, 0.0), (8.0, 0.0))
    path = shortest_path(scene)
    assert path == [(0.0, 0.0), (8.0, 0.0)]
    assert path_length(path) == 8.0


def test_an_l_corridor_cuts_its_corner_and_keeps_clear_of_the_walls():
    path = shortest_path(L_SCENE, RADIUS_M)
    start, goal = _start_goal(L_SCENE)
    assert path[0] == start and path[-1] == goal
    length = path_length(path)
    assert math.dist(start, goal) + 0.1 < length < L_SCENE.route_length_m - 1.0, length
    assert _clearance(_along(path, 0.02), L_SCENE) >= RADIUS_M - 1e-3
    # The inner corner (7, 1) is the one it hugs: the exact geodesic wraps it on an arc of radius 0.3.
    exact = _wrapped(start, goal, (7.0, 1.0), RADIUS_M, clockwise=False)
    assert exact - 1e-6 <= length <= exact + 0.01, (length, exact)


def test_a_larger_radius_gives_a_longer_path_and_keeps_its_clearance():
    short, long = shortest_path(L_SCENE, 0.3), shortest_path(L_SCENE, 0.6)
    assert path_length(long) > path_length(short) + 0.1
    assert _clearance(_along(long, 0.02), L_SCENE) >= 0.6 - 1e-3


def test_a_box_in_the_middle_forces_a_detour_round_it():
    box = Landmark(5.0, 0.0, 1.0, 1.0, 1.0, 'cabinet', GREY)
    scene = _scene([(-1.0, -2.0), (11.0, -2.0), (11.0, 2.0), (-1.0, 2.0)], (0.0, 0.0), (10.0, 0.0), landmarks=(box,))
    path = shortest_path(scene)
    length = path_length(path)
    assert length > 10.0 + 0.01, length
    assert _clearance(_along(path, 0.02), scene) >= RADIUS_M - 1e-3
    # Exact: tangent to the arc round (4.5, 0.5), along the top face 0.3 m above it, round (5.5, 0.5), tangent down
    # (or the mirror image below).
    exact = 2 * _wrapped((0.0, 0.0), (5.0, 0.8), (4.5, 0.5), RADIUS_M, clockwise=True)
    assert exact - 1e-6 <= length <= exact + 0.01, (length, exact)


def test_a_right_angle_turn_round_a_wall_corner_is_within_a_cm_of_the_arc():
    """Two walls meeting at (0, 0); start just above one, goal just beside the other: a 90-degree wrap."""
    walls = (Wall(-10.0, 0.0, 0.0, 0.0, GREY), Wall(0.0, 0.0, 0.0, -10.0, GREY))
    scene = Scene(-1, walls, (), (), Pose2D(-5.0, 0.31, 0.0), Pose2D(0.31, -5.0, 0.0),
                  ((-5.0, 0.31), (0.31, 0.31), (0.31, -5.0)), 'test', 'en', 'test')
    length = path_length(shortest_path(scene))
    exact = _wrapped((-5.0, 0.31), (0.31, -5.0), (0.0, 0.0), RADIUS_M, clockwise=True)
    assert exact - 1e-6 <= length <= exact + 0.01, (length, exact)
    # The square offsets alone are much longer there: (2 - pi / 2) r.
    square = path_length(shortest_path(scene, corner_points=4))
    assert square - exact == pytest.approx((2 - math.pi / 2) * RADIUS_M, abs=0.005)


def test_the_path_is_deterministic():
    scene = scenes.generate(7)
    assert shortest_path(scene) == shortest_path(scene)


# -- generated scenes -------------------------------------------------------------------------------------------

def test_generated_scenes_paths_lie_between_the_straight_line_and_the_route_and_keep_clear():
    ratios = []
    for seed in SEEDS:
        scene = scenes.generate(seed)
        start, goal = _start_goal(scene)
        path = shortest_path(scene, RADIUS_M)
        length = path_length(path)
        assert path[0] == start and path[-1] == goal, seed
        assert math.dist(start, goal) - 1e-9 <= length <= scene.route_length_m + 1e-6, (seed, length)
        clearance = _clearance(_along(path, 0.02), scene)
        assert clearance >= RADIUS_M - 1e-3, f'seed {seed}: the path comes {clearance:.4f} m from an obstacle'
        ratios.append(length / scene.route_length_m)
    assert min(ratios) < 0.95      # some routes turn corners, and the geodesic cuts them


# -- no path ------------------------------------------------------------------------------------------------------

def test_a_gap_narrower_than_the_robot_has_no_path():
    # The straight corridor with a wall across it at x = 4, leaving a 0.5 m gap (a 0.6 m robot cannot pass).
    across = (Wall(4.0, -1.0, 4.0, 0.5, GREY),)
    scene = _scene(STRAIGHT, (0.0, 0.0), (8.0, 0.0), extra_walls=across)
    with pytest.raises(ValueError, match='no path'):
        shortest_path(scene)
    assert path_length(shortest_path(scene, 0.2)) > 8.0          # a thinner robot gets through


def test_a_closed_wall_has_no_path_and_a_start_in_a_wall_is_refused():
    across = (Wall(4.0, -1.0, 4.0, 1.0, GREY),)
    with pytest.raises(ValueError, match='no path'):
        shortest_path(_scene(STRAIGHT, (0.0, 0.0), (8.0, 0.0), extra_walls=across))
    with pytest.raises(ValueError, match='start'):
        shortest_path(_scene(STRAIGHT, (0.0, 0.9), (8.0, 0.0)))
