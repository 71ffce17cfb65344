"""vln_ros/eval/metrics.py and the baseline rule: scores of hand-made episodes, no ROS graph."""
from __future__ import annotations

import math

import pytest

from vln_ros.core.config import ControllerParams
from vln_ros.eval.baseline import OUTPUT_FPS, baseline_twist
from vln_ros.eval.metrics import EpisodeRecord, Plan, limit_violations, score, standstills, summarise

LIMITS = {'max_linear_x': 0.5, 'max_linear_y': 0.2, 'max_angular_z': 0.8}


def straight_walk(length_m=5.0, speed=0.5, wait_s=1.0, dt=0.05, settle_s=2.0):
    """Stand wait_s, walk length_m along +x at speed, stand settle_s: trajectory rows and commands."""
    rows, commands, t, x = [], [], 0.0, 0.0
    while t < wait_s:
        rows.append([t, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        t += dt
    while x < length_m - 1e-9:
        x = min(length_m, x + speed * dt)
        rows.append([t, x, 0.0, 0.0, speed, 0.0, 0.0])
        commands.append([t, speed, 0.0, 0.0])
        t += dt
    end = t
    while t < end + settle_s:
        rows.append([t, x, 0.0, 0.0, 0.0, 0.0, 0.0])
        t += dt
    return rows, commands, end


def record(**changes):
    rows, commands, end = straight_walk()
    plans = [Plan(0.5, 0.0, True, 'stop', 0, 'task'), Plan(1.0, 0.5, False, 'forward', 6, 'task'),
             Plan(end, end - 0.5, True, 'arrived', 0, 'task')]
    base = dict(seed=1, instruction='go down the corridor and stop at the red door', language='en', kind='door_ahead',
                route_length_m=5.0, shortest_path_m=5.0, goal=[5.0, 0.0, 0.0], task_started_s=0.0, task_ended_s=end,
                end_state='arrived',
                end_reason='goal reached (the model answered arrived)', trajectory=rows, commands=commands,
                plans=plans, collisions=0, min_clearance_m=0.4)
    base.update(changes)
    return EpisodeRecord(**base)


def test_a_straight_successful_episode_scores_as_computed_by_hand():
    s = score(record(), LIMITS)
    assert s['success'] and s['spl'] == pytest.approx(1.0, abs=0.01)
    assert s['navigation_error_m'] == pytest.approx(0.0, abs=1e-6) and s['heading_error_deg'] == 0.0
    assert s['path_length_m'] == pytest.approx(5.0, abs=0.03)
    assert s['waiting_ratio'] == pytest.approx(1.0 / s['episode_time_s'], abs=0.02)  # the first second
    assert s['stop_and_go'] == 0   # waiting at the start is not a stop-and-go
    later = score(record(task_started_s=0.01), LIMITS)   # the task began between two trajectory samples
    assert later['stop_and_go'] == 0, later
    assert s['time_to_goal_s'] == pytest.approx(s['episode_time_s'], abs=1e-6)
    assert s['plan_age_s_p50'] > 0.5 and s['limit_violations'] == 0


def test_arrived_too_far_from_the_goal_or_not_arrived_is_no_success():
    far = score(record(goal=[6.2, 0.0, math.pi / 2]), LIMITS)
    assert far['heading_error_deg'] == pytest.approx(90.0)
    assert not far['success'] and far['spl'] == 0.0 and far['navigation_error_m'] == pytest.approx(1.2, abs=1e-6)
    timeout = score(record(end_state='timeout'), LIMITS)
    assert not timeout['success'] and math.isnan(timeout['time_to_goal_s'])


def test_a_detour_lowers_spl():
    rows, commands, end = straight_walk(length_m=8.0)
    s = score(record(trajectory=rows, commands=commands, task_ended_s=end, goal=[8.0, 0.0, 0.0]), LIMITS)
    assert s['success'] and s['spl'] == pytest.approx(5.0 / 8.0, abs=0.01)


def test_a_pause_in_the_middle_is_one_stop_and_go():
    rows, commands, end = straight_walk()
    paused = [r if not 2.0 <= r[0] < 3.0 else [r[0], *rows[39][1:4], 0.0, 0.0, 0.0] for r in rows]
    s = score(record(trajectory=paused, commands=commands, task_ended_s=end), LIMITS)
    assert s['stop_and_go'] == 1
    assert len(standstills(paused)) == 3   # start, the pause, the end


def test_commands_beyond_the_limits_and_non_finite_ones_are_violations():
    commands = [[0.0, 0.5, 0.0, 0.0], [0.1, 0.51, 0.0, 0.0], [0.2, 0.0, -0.3, 0.0], [0.3, 0.0, 0.0, math.nan]]
    assert limit_violations(commands, LIMITS) == 3


def test_summary_rates_and_pooled_counts():
    good, bad = score(record(), LIMITS), score(record(end_state='timeout', collisions=2), LIMITS)
    summary = summarise([good, good, good, bad])
    assert summary['sr'] == pytest.approx(0.75) and summary['collisions'] == 2 and summary['episodes'] == 4


def test_baseline_rule_is_the_mean_step_times_output_fps_clamped():
    params = ControllerParams()
    linear, angular = baseline_twist([(0.4, 0.0), (0.2, 0.4)], params)
    assert linear == pytest.approx(0.3 * OUTPUT_FPS) and angular == pytest.approx(0.2 * OUTPUT_FPS)
    assert baseline_twist([(5.0, 5.0)], params) == (params.max_linear_x, params.max_angular_z)
    assert baseline_twist([], params) == (0.0, 0.0)
