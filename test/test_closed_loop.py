"""The closed loop for real: sim_node and the three node processes on simulated time, the oracle answering
after 0.5 s, episodes scored (vln_ros/eval). What `make eval` does, on fewer episodes.

Paced for two busy cores: the simulator runs at real time and the figures asserted are the issue's
pass/fail lines (success, no collision, no command outside the limits), not timings.
"""
from __future__ import annotations

import math

import pytest

from vln_ros.eval import run as eval_run
from vln_ros.eval.stack import EvalOptions

SEEDS = [0, 1, 2]


@pytest.fixture(scope='module')
def oracle_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('eval')
    records, scores = eval_run.run_set(EvalOptions(latency_s=0.5), SEEDS, out, 'ci', quiet=True)
    return out, records, scores


def test_every_episode_reaches_its_goal_without_touching_anything(oracle_run):
    _, records, scores = oracle_run
    for r in scores:
        assert r['success'], (r['seed'], r['end_state'], r['end_reason'], r['navigation_error_m'])
        assert r['collisions'] == 0 and r['min_clearance_m'] > 0.0, r
        assert r['navigation_error_m'] <= 1.0 and r['spl'] > 0.5, r
        assert r['heading_error_deg'] < 35.0, r   # facing the door or landmark it was sent to
        # the VLN-CE measures agree: it stopped where it came closest, in sight of the goal, along the route
        assert r['success_3m'] and r['oracle_success'] and r['ndtw'] > 0.5, r
        assert r['navigation_error_geodesic_m'] == pytest.approx(r['navigation_error_m'], abs=0.05), r
    assert {r.seed for r in records} == set(SEEDS)


def test_every_velocity_command_was_within_the_controller_limits(oracle_run):
    _, records, scores = oracle_run
    assert all(len(r.commands) > 100 for r in records)   # the base heard the controller throughout
    assert sum(s['limit_violations'] for s in scores) == 0


def test_plans_were_fresh_and_the_model_latency_was_the_oracle_s(oracle_run):
    _, _, scores = oracle_run
    for r in scores:
        assert 0.5 <= r['keyframe_to_plan_s_p50'] < 1.5, r   # 0.5 s of model plus transport and waiting
        assert r['plans'] >= 3


def test_pictures_and_video_are_written(oracle_run):
    out, records, scores = oracle_run
    written = eval_run.write_pictures(out, records, scores, None)
    assert (out / 'paths.png').stat().st_size > 10_000
    video = next(p for p in written if p.suffix == '.mp4')
    assert video.stat().st_size > 20_000
    assert all((out / 'episodes' / f'seed_{seed}.png').is_file() for seed in SEEDS)


def test_the_robot_stops_within_the_bound_and_touches_nothing_when_odometry_is_lost(tmp_path):
    records, scores = eval_run.run_set(EvalOptions(latency_s=0.5), [3], tmp_path, 'fault', fault='lose_odom',
                                       quiet=True)
    outcome = scores[0]['fault_outcome']
    assert outcome['speed_at_fault_mps'] > 0.1, outcome   # it was walking when odometry went silent
    assert outcome['within_bound'], outcome
    assert outcome['collisions'] == 0 and scores[0]['limit_violations'] == 0
    assert math.isfinite(outcome['stopped_after_s'])


def test_sigterm_to_vln_eval_stops_the_stack_it_started(tmp_path):
    """A killed run must not leave its node processes behind (it did: /clock kept ticking)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from conftest import wait_for

    proc = subprocess.Popen([sys.executable, '-m', 'vln_ros.eval.run', '--episodes', '1', '--out', str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def children() -> list[int]:
        return [child.pid for child in psutil.Process(proc.pid).children()]

    try:
        assert wait_for(lambda: len(children()) >= 4, 60.0), proc.poll()   # sim_node and the three nodes
        started = children()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 'interrupted; the stack was stopped' in proc.stdout.read()
    assert not [pid for pid in started if os.path.exists(f'/proc/{pid}') and
                open(f'/proc/{pid}/stat').read().split()[2] != 'Z'], 'node processes left running'


def test_an_output_folder_it_cannot_write_is_one_line_and_exit_2():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-m', 'vln_ros.eval.run', '--out', '/proc/vln_eval_out'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.startswith('vln_eval: cannot write to the output folder /proc/vln_eval_out')
    assert len(result.stderr.strip().splitlines()) == 1 and 'Traceback' not in result.stderr


def test_the_seed_systems_rule_runs_an_episode_through_the_stack(tmp_path, monkeypatch):
    """`--baseline` (and the latency study's baseline rows): the rule stands in for controller_node without its
    typed status, and the harness waited for that status' clock until it gave up ('the nodes are not on the
    simulated clock', every episode). A short budget: the rule's walk, not its end, is what is checked."""
    from vln_ros.eval import stack
    monkeypatch.setattr(stack, 'BUDGET_MIN_S', 8.0)
    monkeypatch.setattr(stack, 'BUDGET_S_PER_M', 0.0)
    records, scores = eval_run.run_set(EvalOptions(latency_s=0.5, controller='baseline'), [0], tmp_path, 'baseline',
                                       quiet=True)
    assert records[0].end_state == 'timeout', records[0].end_reason
    assert scores[0]['path_length_m'] > 1.0, scores[0]   # it walked on the plans it was given
    assert scores[0]['limit_violations'] == 0


def test_two_robots_served_by_one_inference_node_each_reach_their_own_goal(tmp_path):
    """make eval ROBOTS=2 EVAL_ARGS='--shape engine': fleet.launch.py's shape engine in the closed loop, ONE
    inference_node in the root serving r1 and r2 through one oracle backend, a client per robot asking for
    that robot's ground truth. A client asking for the wrong robot's truth walks a robot to the other's goal."""
    records, scores = eval_run.run_set(EvalOptions(latency_s=0.5, robots=2, shape='engine'), [0], tmp_path,
                                       'engine', quiet=True)
    assert sorted(r.robot for r in records) == ['r1', 'r2']
    for r in scores:
        assert r['success'] and r['navigation_error_m'] <= 1.0, (r['robot'], r['end_state'], r['end_reason'])
        assert r['collisions'] == 0 and r['robot_collisions'] == 0 and r['limit_violations'] == 0, r
        assert r['cross_talk'] == 0 and r['plans'] >= 3, r   # each robot's plans carried its own task id
