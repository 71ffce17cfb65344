"""An episode's score from what the simulator and an observer recorded. No ROS.

The measures of VLN papers (success, SPL, navigation error; Anderson et al. 2018, "On Evaluation of
Embodied Navigation Agents"; oracle success, success within 3 m, geodesic navigation error and nDTW as
VLN-CE reports them, Krantz et al. 2020, nDTW from Ilharco et al. 2019, "General Evaluation for Instruction
Conditioned Navigation using Dynamic Time Warping") and of the robot-side ones that real deployments
report (StreamVLN, LiveVLN: how long the robot stands waiting for the model, how often it stops and goes
again), plus this package's own: plan age when a command used it, keyframe -> plan latency, and every
velocity command within the controller's limits.

All times are simulated seconds. An episode runs from the task's start (set_task answered) to its end
(the task stopped or failed, or the time budget ran out) plus the settling time the robot needs to stand
still.

Distances to the goal are measured along the geodesic (vln_ros/sim/geodesic.py) in the episode's scene,
generated again from its seed: a robot that stopped in the parallel corridor of an S is as far from the goal
as the walk round, not the width of a wall. Every rate comes with its Wilson 95 % score interval.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vln_ros.core.control import Pose2D
from vln_ros.sim import fleet, geodesic, scenes
from vln_ros.sim.instructions import FAMILIES
from vln_ros.sim.scene import SUCCESS_RADIUS_M, Scene

STILL_MPS = 0.02         # slower than this (and turning slower than STILL_RADPS) is standing still
STILL_RADPS = 0.05
STILL_MIN_S = 0.2        # a standstill shorter than this is not a stop (a gait's speed ripple)
LIMIT_EPS = 1e-6
SUCCESS_3M_RADIUS_M = 3.0    # VLN-CE's success radius, beside ours (SUCCESS_RADIUS_M, 1 m: our scenes are corridors)
NDTW_THRESHOLD_M = 3.0       # nDTW's d_th (VLN-CE: the success distance)
NDTW_SPACING_M = 0.25        # both paths resampled at this spacing before DTW, so a standstill weighs nothing
Z_95 = 1.959964              # the normal quantile of a two-sided 95 % interval
_MIN_GEODESIC_RADIUS_M = 1e-3


@dataclass
class Plan:
    received_s: float
    stamp_s: float
    stop: bool
    action: str
    waypoints: int
    task_id: str
    steps: list[list[float]] = field(default_factory=list)   # [dx, dy, dtheta, confidence] (the video draws them)
    model: str = ''                                          # WaypointArray.model: who made the plan


@dataclass
class EpisodeRecord:
    """Everything one episode left behind (results.json keeps it with the metrics)."""

    seed: int
    instruction: str
    language: str
    kind: str
    route_length_m: float                   # the reference route (corridor centre lines)
    shortest_path_m: float                  # the geodesic for the robot's footprint: SPL's denominator
    goal: list[float]                       # [x, y, yaw]
    task_started_s: float
    task_ended_s: float                     # when the task stopped or failed, or the budget ran out
    end_state: str                          # 'arrived', 'stopped', 'failed', 'timeout'
    end_reason: str
    trajectory: list[list[float]]           # [t, x, y, yaw, vx, vy, wz] true, 20 Hz
    commands: list[list[float]]             # [t, vx, vy, wz] as the base received them
    plans: list[Plan]
    collisions: int
    min_clearance_m: float
    answers: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, Any] = field(default_factory=dict)   # in-loop faults injected, and when
    real_time_factor: float = math.nan
    person_collisions: int = 0              # contacts with people (collisions: walls, landmarks, clutter)
    min_clearance_people_m: float = math.inf
    people_tracks: list[list[float]] = field(default_factory=list)   # [t, person_index, x, y]
    guard_stops: list[list[float]] = field(default_factory=list)     # [t, x, y]: the guard began a stop there
    robot: str = ''                         # several robots in one world (make eval ROBOTS=N): whose episode
    robot_index: int = 0                    # its place in the queue (vln_ros/sim/fleet.py), the leader 0
    fleet_size: int = 1                     # how many robots shared the world
    robot_collisions: int = 0               # steps into another robot (head-on: one each); walls etc.: collisions
    cross_talk: int = 0                     # plans or task statuses in its namespace with another robot's task id
    clutter_placed: int = 0                 # boxes and chairs the simulator placed (its reset reply; fewer than
                                            # asked where the scene had no room), recorded, not scored


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _in_task(rows: list[list[float]], start: float, end: float) -> list[list[float]]:
    return [r for r in rows if start <= r[0] <= end]


def standstills(trajectory: list[list[float]]) -> list[tuple[float, float]]:
    """(start, end) of each time the robot stood still for at least STILL_MIN_S."""
    spans, since = [], None
    for t, _x, _y, _yaw, vx, vy, wz in trajectory:
        still = math.hypot(vx, vy) < STILL_MPS and abs(wz) < STILL_RADPS
        if still and since is None:
            since = t
        elif not still and since is not None:
            if t - since >= STILL_MIN_S:
                spans.append((since, t))
            since = None
    if since is not None and trajectory and trajectory[-1][0] - since >= STILL_MIN_S:
        spans.append((since, trajectory[-1][0]))
    return spans


def limit_violations(commands: list[list[float]], limits: dict[str, float]) -> int:
    """Velocity commands outside the controller's configured limits (any one fails the run)."""
    return sum(1 for _t, vx, vy, wz in commands
               if not (math.isfinite(vx) and math.isfinite(vy) and math.isfinite(wz))
               or abs(vx) > limits['max_linear_x'] + LIMIT_EPS or abs(vy) > limits['max_linear_y'] + LIMIT_EPS
               or abs(wz) > limits['max_angular_z'] + LIMIT_EPS)


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a rate successes / n (Wilson 1927): unlike the normal approximation it
    stays inside [0, 1] and is not empty at 0 or n successes, so it suits the 10-20 episodes of a run.
    (nan, nan) for n = 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f'wilson: need 0 <= successes <= n, got successes={successes}, n={n}')
    if n == 0:
        return math.nan, math.nan
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def resample(points: Sequence[Sequence[float]], spacing_m: float) -> np.ndarray:
    """Points every spacing_m along the polyline (by arc length), its first and last point included (N x 2).
    Repeated points (a robot standing still) add nothing."""
    if spacing_m <= 0:
        raise ValueError(f'spacing_m must be positive, got {spacing_m}')
    xy = np.asarray(points, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return xy
    steps = np.hypot(*np.diff(xy, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    keep = np.concatenate([[True], steps > 0])
    xy, arc = xy[keep], arc[keep]
    if arc[-1] == 0:
        return xy[:1]
    at = np.arange(0.0, arc[-1], spacing_m)
    if arc[-1] - at[-1] > 1e-9:
        at = np.append(at, arc[-1])
    return np.stack([np.interp(at, arc, xy[:, 0]), np.interp(at, arc, xy[:, 1])], axis=1)


def dtw(a: np.ndarray, b: np.ndarray) -> float:
    """Dynamic time warping distance between point sequences a (N x 2) and b (M x 2): the least sum of
    Euclidean distances over a monotone alignment of every point of each to the other. O(N M), by
    anti-diagonals (each depends on the two before it only)."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise ValueError(f'dtw: both sequences need a point, got {n} and {m}')
    cost = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    d = np.full((n + 1, m + 1), np.inf)
    d[0, 0] = 0.0
    for k in range(2, n + m + 1):       # cells (i, j) with i + j = k, 1-based
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        d[i, j] = cost[i - 1, j - 1] + np.minimum(np.minimum(d[i - 1, j], d[i, j - 1]), d[i - 1, j - 1])
    return float(d[n, m])


def ndtw(path: Sequence[Sequence[float]], reference: Sequence[Sequence[float]],
         threshold_m: float = NDTW_THRESHOLD_M, spacing_m: float = NDTW_SPACING_M) -> float:
    """Normalized dynamic time warping (Ilharco et al. 2019, as VLN-CE computes it):
    exp(-DTW(R, Q) / (|R| threshold_m)), both paths resampled every spacing_m and |R| the reference's points.
    1 for a path on the reference; it falls as the path strays from it anywhere, not only at its end."""
    q, r = resample(path, spacing_m), resample(reference, spacing_m)
    if not len(q) or not len(r):
        return math.nan
    return math.exp(-dtw(r, q) / (len(r) * threshold_m))


def geodesic_to_goal_m(scene: Scene, x: float, y: float, radius_m: float = geodesic.RADIUS_M) -> float:
    """The geodesic distance from (x, y) to the scene's goal for a robot of radius_m (less where the point
    or the goal is nearer an obstacle than that: the robot stood there, so it fits): the straight line
    when it keeps that clearance, else the shortest path round the walls. nan inside an obstacle."""
    segments = geodesic.obstacle_segments(scene)
    here, goal = np.array([[x, y]]), np.array([[scene.goal.x, scene.goal.y]])
    if not len(segments):
        return math.hypot(x - scene.goal.x, y - scene.goal.y)
    clearance = float(min(geodesic.segment_segment_distance(here, here, segments).min(),
                          geodesic.segment_segment_distance(goal, goal, segments).min()))
    radius = min(radius_m, clearance)
    if radius < _MIN_GEODESIC_RADIUS_M:
        return math.nan
    if geodesic.segment_segment_distance(here, goal, segments).min() >= radius - 1e-6:
        return math.hypot(x - scene.goal.x, y - scene.goal.y)
    try:
        points = geodesic.shortest_path(replace(scene, start=Pose2D(x, y, 0.0)), radius)
    except ValueError:     # no way round at this radius
        return math.nan
    return geodesic.path_length(points)


def came_within_m(scene: Scene, points: Sequence[Sequence[float]], radius_m: float) -> bool:
    """Whether any point is within radius_m of the goal along the geodesic. Only points that close in a
    straight line can be (the geodesic is never shorter), nearest first, so a walk costs few path searches."""
    xy = np.asarray(points, dtype=float).reshape(-1, 2)
    straight = np.hypot(xy[:, 0] - scene.goal.x, xy[:, 1] - scene.goal.y)
    near = np.unique(np.round(xy[straight <= radius_m], 2), axis=0)    # cm: the same place once
    near = near[np.argsort(np.hypot(near[:, 0] - scene.goal.x, near[:, 1] - scene.goal.y))]
    return any(geodesic_to_goal_m(scene, float(px), float(py)) <= radius_m for px, py in near)


def scene_of(r: EpisodeRecord, scene: Scene | None = None) -> Scene:
    """The episode's scene: `scene`, or generated again from the record's seed. ValueError when its goal is
    not the record's (e.g. the generator changed since the record was made): its walls would score another
    episode."""
    if scene is None:   # a robot of a fleet has its own start, goal and route in the seed's scene
        scene = scenes.generate(r.seed)
        scene = fleet.staggered(scene, r.fleet_size)[r.robot_index] if r.fleet_size > 1 else scene
    if math.hypot(scene.goal.x - r.goal[0], scene.goal.y - r.goal[1]) > 1e-6:
        raise ValueError(f'seed {r.seed}: the scene has its goal at ({scene.goal.x:.3f}, {scene.goal.y:.3f}), '
                         f'the record at ({r.goal[0]:.3f}, {r.goal[1]:.3f})')
    return scene


def score(r: EpisodeRecord, limits: dict[str, float], scene: Scene | None = None) -> dict[str, Any]:
    """The episode's measures. scene: the episode's (default: generated again from the record's seed)."""
    scene = scene_of(r, scene)
    start, end = r.task_started_s, r.task_ended_s
    trajectory = _in_task(r.trajectory, start, math.inf)   # to the end of the record: it includes settling
    final = trajectory[-1] if trajectory else [end, math.nan, math.nan, math.nan, 0, 0, 0]
    goal_x, goal_y = r.goal[0], r.goal[1]
    navigation_error = math.hypot(final[1] - goal_x, final[2] - goal_y)
    geodesic_error = geodesic_to_goal_m(scene, final[1], final[2]) if trajectory else math.nan
    # the geodesic decides where it is known (never shorter than the straight line; they differ only with a
    # wall between), the straight line where the stop point has no geodesic (nan: inside an obstacle)
    error = geodesic_error if math.isfinite(geodesic_error) else navigation_error
    path = sum(math.hypot(b[1] - a[1], b[2] - a[2]) for a, b in zip(trajectory, trajectory[1:], strict=False))
    arrived = r.end_state == 'arrived'
    success = arrived and error <= SUCCESS_RADIUS_M
    walked = [row[1:3] for row in trajectory]
    spl = (r.shortest_path_m / max(path, r.shortest_path_m)) if success else 0.0

    task_trajectory = _in_task(r.trajectory, start, end)
    duration = max(end - start, 1e-9)
    stills = standstills(task_trajectory)
    waited = sum(b - a for a, b in stills)
    # stop-and-go: a standstill the robot walked on from, after it had first moved (waiting for the first
    # plan is not one, nor is the final stop)
    first_move = next((row[0] for row in task_trajectory if math.hypot(row[4], row[5]) >= STILL_MPS
                       or abs(row[6]) >= STILL_RADPS), math.inf)
    moves_after_start = [s for s in stills if first_move < s[0] and s[1] < end - 1e-6]

    task_plans = [p for p in r.plans if start <= p.received_s <= end]
    latencies = [p.received_s - p.stamp_s for p in task_plans if not p.stop or p.action == 'arrived']
    ages = []
    plans_by_time = sorted(task_plans, key=lambda p: p.received_s)
    i, current = 0, None
    for t, vx, vy, wz in _in_task(r.commands, start, end):
        while i < len(plans_by_time) and plans_by_time[i].received_s <= t:
            current = plans_by_time[i]
            i += 1
        if current is not None and (vx or vy or wz):
            ages.append(t - current.stamp_s)
    # the 'arrived' that ended the task: with arrived_confirmations > 1 an earlier one was only a stop plan
    arrived_at = next((p.received_s for p in reversed(plans_by_time) if p.action == 'arrived'), math.nan)
    return {
        'seed': r.seed, 'kind': r.kind, 'language': r.language, 'instruction': r.instruction,
        'success': success, 'spl': spl, 'navigation_error_m': navigation_error,
        'success_3m': arrived and error <= SUCCESS_3M_RADIUS_M,
        'oracle_success': came_within_m(scene, walked, SUCCESS_RADIUS_M) if walked else False,
        'navigation_error_geodesic_m': geodesic_error,
        'ndtw': ndtw(walked, scene.route) if walked else 0.0,
        'heading_error_deg': abs(math.degrees(math.remainder(final[3] - r.goal[2], math.tau))),
        'path_length_m': path, 'shortest_path_m': r.shortest_path_m,
        'time_to_goal_s': arrived_at - start if success else math.nan,
        'episode_time_s': duration, 'end_state': r.end_state, 'end_reason': r.end_reason,
        'collisions': r.collisions, 'min_clearance_m': r.min_clearance_m,
        'waiting_ratio': waited / duration, 'stop_and_go': len(moves_after_start),
        'plan_age_s_p50': _percentile(ages, 50), 'plan_age_s_p99': _percentile(ages, 99),
        'keyframe_to_plan_s_p50': _percentile(latencies, 50), 'keyframe_to_plan_s_p99': _percentile(latencies, 99),
        'plans': len(task_plans), 'limit_violations': limit_violations(r.commands, limits),
        'answer_faults': sum(1 for a in r.answers if a.get('fault')),
        'real_time_factor': r.real_time_factor, 'robot': r.robot, 'robot_collisions': r.robot_collisions,
        'cross_talk': r.cross_talk,
    }


def _rate(scores: list[dict[str, Any]], name: str, hits: int) -> dict[str, Any]:
    """{name: the rate, name_ci95: its Wilson 95 % interval [low, high]}."""
    return {name: hits / len(scores) if scores else math.nan, f'{name}_ci95': list(wilson(hits, len(scores)))}


def summarise(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The table row of a set of episodes. Each rate (sr, sr_3m, os, collision_rate) has its Wilson 95 %
    interval beside it as <rate>_ci95 = [low, high]."""
    def mean(key: str, rows: list[dict[str, Any]] = scores) -> float:
        values = [s[key] for s in rows if isinstance(s[key], (int, float)) and math.isfinite(s[key])]
        return float(np.mean(values)) if values else math.nan

    def count(key: str) -> int:
        return sum(1 for s in scores if s[key])

    successes = [s for s in scores if s['success']]
    return {
        'episodes': len(scores), **_rate(scores, 'sr', count('success')), 'spl': mean('spl'),
        **_rate(scores, 'sr_3m', count('success_3m')), **_rate(scores, 'os', count('oracle_success')),
        'navigation_error_m': mean('navigation_error_m'),
        'navigation_error_geodesic_m': mean('navigation_error_geodesic_m'), 'ndtw': mean('ndtw'),
        'time_to_goal_s': mean('time_to_goal_s', successes),
        **_rate(scores, 'collision_rate', count('collisions')),
        'collisions': sum(s['collisions'] for s in scores), 'min_clearance_m': min(
            (s['min_clearance_m'] for s in scores), default=math.nan),
        'waiting_ratio': mean('waiting_ratio'), 'stop_and_go': mean('stop_and_go'),
        'plan_age_s_p50': mean('plan_age_s_p50'), 'plan_age_s_p99': mean('plan_age_s_p99'),
        'keyframe_to_plan_s_p50': mean('keyframe_to_plan_s_p50'),
        'limit_violations': sum(s['limit_violations'] for s in scores),
        'real_time_factor_min': min((s['real_time_factor'] for s in scores
                                     if math.isfinite(s['real_time_factor'])), default=math.nan),
        'robot_collisions': sum(s.get('robot_collisions', 0) for s in scores),
        'cross_talk': sum(s.get('cross_talk', 0) for s in scores),
    }


def summarise_by(scores: list[dict[str, Any]], key: str = 'kind') -> dict[str, dict[str, Any]]:
    """summarise() of each group of episodes with the same score[key] (default: the instruction family), the
    families in vln_ros/sim/instructions.py's order, any other value after them."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in scores:
        groups.setdefault(str(s[key]), []).append(s)
    order = {name: i for i, name in enumerate(FAMILIES)}
    return {name: summarise(groups[name]) for name in sorted(groups, key=lambda g: (order.get(g, len(order)), g))}
