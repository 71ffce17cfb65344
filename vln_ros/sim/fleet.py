"""Several robots in one scene: where each starts and where it must stop. No ROS.

A generated scene has one instruction, one goal and one route, true by construction (vln_ros/sim/scenes.py), and
a second true instruction in the same scene cannot be had without generating it. So the robots share the route,
staggered into a queue: the leader starts `spacing` (a straight line) ahead of the next one, and so on, and each
stops `spacing` behind the one ahead of it, so every robot walks about the same distance (the route less (N - 1)
spacings; around corners a little more) to a goal of its own, and no two bodies overlap at their starts or goals.
The instruction is the scene's for every robot: the followers stop short of its target, behind the robot in
front, as a queue would.

Every robot's scene is the generated one with its own start, goal and route (dataclasses.replace), so the
oracle (vln_ros/sim/oracle.py) and the reference route need nothing new. With one robot it is the scene itself.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.sim import scenes
from vln_ros.sim.scene import Scene

SPACING_M = 1.2            # between neighbours in the queue, start and goal: two bodies and a margin of 0.6 m
MIN_SPACING_M = 0.9        # closer would leave a hand's breadth between 0.3 m bodies at their goals
MIN_WALK_M = 2.0           # every robot walks at least this far (a shorter route gets a shorter spacing)
SEARCH_STEP_M = 0.05       # around a corner, the next place in the queue is searched for in steps of this
SEED_SEARCH = 1000         # seeds_that_fit looks this far past first_seed (8 robots fit in 29 of seeds 0-99)


def point_at(route: tuple[tuple[float, float], ...], s_m: float) -> Pose2D:
    """The point s_m along the route (clamped to it), facing along the route there."""
    points = np.asarray(route, float)
    spans = points[1:] - points[:-1]
    lengths = np.hypot(spans[:, 0], spans[:, 1])
    arclengths = np.concatenate(([0.0], np.cumsum(lengths)))
    s = min(max(s_m, 0.0), float(arclengths[-1]))
    i = int(np.clip(np.searchsorted(arclengths, s, side='right') - 1, 0, len(spans) - 1))
    while lengths[i] <= 1e-12 and i > 0:
        i -= 1
    share = (s - arclengths[i]) / lengths[i] if lengths[i] > 1e-12 else 0.0
    x, y = points[i] + share * spans[i]
    return Pose2D(float(x), float(y), math.atan2(float(spans[i][1]), float(spans[i][0])))


def cut(route: tuple[tuple[float, float], ...], from_m: float, to_m: float) -> tuple[tuple[float, float], ...]:
    """The part of the route between from_m and to_m along it (from_m < to_m), as a polyline."""
    points = np.asarray(route, float)
    arclengths = np.concatenate(([0.0], np.cumsum(np.hypot(*(points[1:] - points[:-1]).T))))
    inner = [(float(x), float(y)) for (x, y), s in zip(points.tolist(), arclengths.tolist(), strict=True)
             if from_m < s < to_m]
    a, b = point_at(route, from_m), point_at(route, to_m)
    return ((a.x, a.y), *inner, (b.x, b.y))


def spacing_for(scene: Scene, count: int) -> float:
    """The queue's spacing for count robots on scene's route. ValueError when the route is too short for them."""
    if count < 1:
        raise ValueError(f'a fleet has at least one robot, not {count}')
    if count == 1:
        return 0.0
    spacing = min(SPACING_M, (scene.route_length_m - MIN_WALK_M) / (count - 1))
    if spacing < MIN_SPACING_M:
        raise ValueError(f'seed {scene.seed}: its {scene.route_length_m:.1f} m route has no room for {count} robots '
                         f'{MIN_SPACING_M} m apart that each walk {MIN_WALK_M} m')
    return spacing


def _next_apart(route: tuple[tuple[float, float], ...], from_m: float, spacing_m: float, direction: int) -> float:
    """The first point along the route from from_m (forwards: direction 1, back: -1) at least spacing_m from it in a
    straight line: around a corner the route is longer than the gap between two bodies on it."""
    here = point_at(route, from_m)
    s = from_m + direction * spacing_m
    while 0.0 < s < polyline_end(route) and math.hypot(*_offset(route, s, here)) < spacing_m:
        s += direction * SEARCH_STEP_M
    return s


def _offset(route: tuple[tuple[float, float], ...], s_m: float, here: Pose2D) -> tuple[float, float]:
    p = point_at(route, s_m)
    return p.x - here.x, p.y - here.y


def polyline_end(route: tuple[tuple[float, float], ...]) -> float:
    points = np.asarray(route, float)
    return float(np.hypot(*(points[1:] - points[:-1]).T).sum())


def queue_arcs(scene: Scene, count: int) -> list[tuple[float, float]]:
    """Where each robot starts and stops along the scene's route (metres from its start), the leader first.
    ValueError when a robot would walk less than MIN_WALK_M."""
    spacing = spacing_for(scene, count)
    if count == 1:
        return [(0.0, scene.route_length_m)]
    starts, goals = [0.0], [scene.route_length_m]        # the last robot's start, the leader's goal
    for _ in range(count - 1):
        starts.append(_next_apart(scene.route, starts[-1], spacing, 1))
        goals.append(_next_apart(scene.route, goals[-1], spacing, -1))
    starts.reverse()                                     # the leader's first
    for i, (start_m, goal_m) in enumerate(zip(starts, goals, strict=True)):
        if goal_m - start_m < MIN_WALK_M:
            raise ValueError(f'seed {scene.seed}: robot {i + 1} of {count} would walk {goal_m - start_m:.1f} m, '
                             f'less than {MIN_WALK_M} m, on its {scene.route_length_m:.1f} m route')
    return list(zip(starts, goals, strict=True))


def staggered(scene: Scene, count: int) -> list[Scene]:
    """Each robot's scene, the leader first: the same walls and instruction, its own start, goal and route.
    ValueError when a robot would walk less than MIN_WALK_M."""
    arcs = queue_arcs(scene, count)
    if count == 1:
        return [scene]
    return [replace(scene, start=point_at(scene.route, start_m), goal=scene.goal if i == 0 else
                    point_at(scene.route, goal_m), route=cut(scene.route, start_m, goal_m))
            for i, (start_m, goal_m) in enumerate(arcs)]


def seeds_that_fit(count: int, first_seed: int, n: int) -> tuple[list[int], list[int]]:
    """The first n seeds from first_seed whose route holds count robots in a queue (staggered), and the seeds
    passed over on the way (routes too short: seed 0's 6.2 m holds 4). ValueError when SEED_SEARCH seeds hold
    fewer than n."""
    fit: list[int] = []
    passed: list[int] = []
    for seed in range(first_seed, first_seed + SEED_SEARCH):
        if len(fit) == n:
            break
        try:
            staggered(scenes.generate(seed), count)
        except ValueError:
            passed.append(seed)
            continue
        fit.append(seed)
    if len(fit) < n:
        raise ValueError(f'only {len(fit)} of seeds {first_seed}-{first_seed + SEED_SEARCH - 1} have a route that '
                         f'holds {count} robots, not {n}')
    return fit, passed
