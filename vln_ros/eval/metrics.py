"""An episode's score from what the simulator and an observer recorded. No ROS.

The measures of VLN papers (success, SPL, navigation error; Anderson et al. 2018, "On Evaluation of
Embodied Navigation Agents") and of the robot-side ones that real deployments report (StreamVLN, LiveVLN:
how long the robot stands waiting for the model, how often it stops and goes again), plus this package's
own: plan age when a command used it, keyframe -> plan latency, and every velocity command within the
controller's limits.

All times are simulated seconds. An episode runs from the task's start (set_task answered) to its end
(the task stopped or failed, or the time budget ran out) plus the settling time the robot needs to stand
still.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vln_ros.sim.scene import SUCCESS_RADIUS_M

STILL_MPS = 0.02         # slower than this (and turning slower than STILL_RADPS) is standing still
STILL_RADPS = 0.05
STILL_MIN_S = 0.2        # a standstill shorter than this is not a stop (a gait's speed ripple)
LIMIT_EPS = 1e-6


@dataclass
class Plan:
    received_s: float
    stamp_s: float
    stop: bool
    action: str
    waypoints: int
    task_id: str
    steps: list[list[float]] = field(default_factory=list)   # [dx, dy, dtheta, confidence] (the video draws them)


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


def score(r: EpisodeRecord, limits: dict[str, float]) -> dict[str, Any]:
    start, end = r.task_started_s, r.task_ended_s
    trajectory = _in_task(r.trajectory, start, math.inf)   # to the end of the record: it includes settling
    final = trajectory[-1] if trajectory else [end, math.nan, math.nan, math.nan, 0, 0, 0]
    goal_x, goal_y = r.goal[0], r.goal[1]
    navigation_error = math.hypot(final[1] - goal_x, final[2] - goal_y)
    path = sum(math.hypot(b[1] - a[1], b[2] - a[2]) for a, b in zip(trajectory, trajectory[1:], strict=False))
    success = r.end_state == 'arrived' and navigation_error <= SUCCESS_RADIUS_M
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
    arrived_at = next((p.received_s for p in task_plans if p.action == 'arrived'), math.nan)
    return {
        'seed': r.seed, 'kind': r.kind, 'language': r.language, 'instruction': r.instruction,
        'success': success, 'spl': spl, 'navigation_error_m': navigation_error,
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
        'real_time_factor': r.real_time_factor,
    }


def summarise(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The table row of a set of episodes."""
    def mean(key: str, rows: list[dict[str, Any]] = scores) -> float:
        values = [s[key] for s in rows if isinstance(s[key], (int, float)) and math.isfinite(s[key])]
        return float(np.mean(values)) if values else math.nan

    successes = [s for s in scores if s['success']]
    return {
        'episodes': len(scores), 'sr': mean('success') if scores else math.nan, 'spl': mean('spl'),
        'navigation_error_m': mean('navigation_error_m'), 'time_to_goal_s': mean('time_to_goal_s', successes),
        'collisions': sum(s['collisions'] for s in scores), 'min_clearance_m': min(
            (s['min_clearance_m'] for s in scores), default=math.nan),
        'waiting_ratio': mean('waiting_ratio'), 'stop_and_go': mean('stop_and_go'),
        'plan_age_s_p50': mean('plan_age_s_p50'), 'plan_age_s_p99': mean('plan_age_s_p99'),
        'keyframe_to_plan_s_p50': mean('keyframe_to_plan_s_p50'),
        'limit_violations': sum(s['limit_violations'] for s in scores),
        'real_time_factor_min': min((s['real_time_factor'] for s in scores
                                     if math.isfinite(s['real_time_factor'])), default=math.nan),
    }
