"""End to end: the real executables as separate processes (what replay.launch.py starts, config/vln.yaml),
the bundled corridor bag played through them, and faults injected while it plays.

`make demo` itself runs first (at twice the bag's speed) and its run.json is checked: keyframes and plans
flow, cmd_vel comes at the configured rate in bag time, every sample is within the limits, the robot
stops when the task ends. The fault tests drive vln_ros/demo/stack.py's StackRun directly: a crashed
inference node, a dead camera, a task switch mid-run, corrupted camera frames.
"""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from vln_ros.core.config import ControllerParams, load_node_yaml, validate_params
from vln_ros.core.control import MAX_STEP_DT_S
from vln_ros.demo import make_bag
from vln_ros.demo.stack import RunOptions, StackRun

LIMITS = validate_params(ControllerParams, load_node_yaml(REPO / 'config' / 'vln.yaml', 'controller_node'))
RATE = 2.0                # bag seconds per wall second in these tests
START_S = make_bag.START_NS / 1e9
MOVING_AT_BAG_S = 6.0     # faults come once the robot is well on its way
STOP_SLACK_S = 1.0        # bag time for DDS and a control period or two


def ramp_down_s() -> float:
    return max(LIMITS.max_linear_x / LIMITS.max_decel_x, LIMITS.max_linear_y / LIMITS.max_decel_y,
               LIMITS.max_angular_z / LIMITS.max_decel_z)


def moving(command) -> bool:
    return bool(command.msg.linear.x or command.msg.linear.y or command.msg.angular.z)


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory) -> tuple[dict, dict, Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp('demo')
    result = subprocess.run([sys.executable, '-m', 'vln_ros.demo.run', '--rate', str(RATE), '--out', str(out)],
                            capture_output=True, text=True, timeout=240)
    run = json.loads((out / 'run.json').read_text()) if (out / 'run.json').exists() else {}
    summary = json.loads((out / 'summary.json').read_text()) if (out / 'summary.json').exists() else {}
    return run, summary, out, result


def test_make_demo_plays_the_bag_through_the_three_nodes(demo_run):
    run, summary, out, result = demo_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert summary['whole'] and summary['text'] in result.stdout
    assert run['exit_codes'] == {'camera_node': 0, 'inference_node': 0, 'controller_node': 0, 'vln_bag_player': 0}
    keyframe_stamps = {round(k['stamp'], 3) for k in run['keyframes']}
    assert len(keyframe_stamps) >= 20
    plans = [p for p in run['plans'] if p['action'] != 'new_task']
    assert len(plans) >= 10 and {'forward', 'turn_left', 'arrived'} <= {p['action'] for p in plans}
    assert {round(p['stamp'], 3) for p in plans} <= keyframe_stamps, 'every plan comes from a keyframe heard'
    assert len({p['task_id'] for p in run['plans']}) == 1
    assert all(p['model'] == make_bag.SCRIPTED_MODEL for p in plans)
    for picture in ('timeline.png', 'keyframes.png'):
        assert (out / picture).stat().st_size > 50_000, picture


def test_cmd_vel_comes_at_the_configured_rate_within_the_limits(demo_run):
    run = demo_run[0]
    assert run['rate_hz'] == LIMITS.rate_hz
    assert abs(run['control_rate_hz'] - LIMITS.rate_hz) <= 0.1 * LIMITS.rate_hz, run['control_rate_hz']
    commands = run['commands']
    assert max(c['vx'] for c in commands) > 0.3 and max(c['wz'] for c in commands) > 0.3, 'it walked and turned'
    for c in commands:
        assert all(math.isfinite(c[k]) for k in ('vx', 'vy', 'wz')), c
        assert abs(c['vx']) <= LIMITS.max_linear_x and abs(c['vy']) <= LIMITS.max_linear_y
        assert abs(c['wz']) <= LIMITS.max_angular_z
    # Acceleration: a speed grows by at most accel x the time between the two commands, and shrinks by at
    # most decel x that time. The controller's own step is bag time (/clock) and commands reach this
    # process late now and then, so up to one control step's clamp (MAX_STEP_DT_S) is added to the time.
    for a, b in zip(commands, commands[1:], strict=False):
        dt = b['t'] - a['t'] + MAX_STEP_DT_S
        for key, accel, decel in (('vx', LIMITS.max_accel_x, LIMITS.max_decel_x),
                                  ('vy', LIMITS.max_accel_y, LIMITS.max_decel_y),
                                  ('wz', LIMITS.max_accel_z, LIMITS.max_decel_z)):
            growing = abs(b[key]) > abs(a[key]) and a[key] * b[key] >= 0
            assert abs(b[key] - a[key]) <= (accel if growing else decel) * dt + 1e-4, (key, a, b)


def test_the_robot_stops_when_the_task_ends(demo_run):
    run = demo_run[0]
    arrived = next(p for p in run['plans'] if p['action'] == 'arrived')
    assert arrived['stop'] and not arrived['waypoints']
    assert run['statuses'][-1]['state'] == 'stopped' and 'goal reached' in run['statuses'][-1]['reason']
    after = [c for c in run['commands'] if c['t'] > arrived['received'] + ramp_down_s() + STOP_SLACK_S]
    assert all(not (c['vx'] or c['vy'] or c['wz']) for c in after)
    assert not any(run['commands'][-1][k] for k in ('vx', 'vy', 'wz'))
    assert run['stops'] and run['stops'][-1]['reason'] in ('stop_plan', 'plan_done')
    final = next(d for name, d in run['diagnostics'].items() if name.endswith('controller_node'))
    assert final['values']['stop_reason'] == 'stop_plan' and final['level'] == 0


# -- faults -------------------------------------------------------------------------------------------

@pytest.fixture
def stack(tmp_path):
    with StackRun(RunOptions(rate=RATE), tmp_path / 'logs') as run:
        run.start_stack()
        run.play()
        yield run


def wait_until_moving(run: StackRun) -> None:
    assert run.wait_until(lambda: run.recording.commands and moving(run.recording.commands[-1])
                          and run.recording.bag_time(run.recording.commands[-1].wall_s) > START_S + MOVING_AT_BAG_S,
                          30.0), run.logs()


def kill_while_moving(run: StackRun, name: str) -> float:
    """SIGKILL a node once the robot walks, let bag time run past the stop bound (inference_timeout_s +
    the ramp to zero; the player keeps /clock going), check the robot stopped within it; the kill's wall time."""
    wait_until_moving(run)
    killed = run.kill(name)
    bound = LIMITS.inference_timeout_s + ramp_down_s() + STOP_SLACK_S
    assert run.wait_until(lambda: run.recording.bag_time(time.monotonic()) > run.recording.bag_time(killed) + bound + 1,
                          bound / RATE + 15.0)
    stopped_for_good_by(run, killed, bound)
    return killed


def stopped_for_good_by(run: StackRun, since_wall_s: float, bound_s: float) -> float:
    """Bag seconds from since_wall_s to the last moving command heard after it (0 when none moved); fails
    if the robot moved again after coming to rest or moved for longer than bound_s."""
    bag = run.recording.bag_time
    after = [c for c in run.recording.commands if c.wall_s >= since_wall_s]
    last_moving = max((bag(c.wall_s) for c in after if moving(c)), default=bag(since_wall_s))
    assert after and not moving(after[-1]), 'still moving'
    took = last_moving - bag(since_wall_s)
    assert took <= bound_s, f'moved {took:.2f} s of bag time after the fault (bound {bound_s:.2f} s)'
    return took


def test_killing_the_inference_node_stops_the_robot_within_the_inference_timeout(stack):
    kill_while_moving(stack, 'inference_node')
    reason = stack.recording.last_diagnostics('controller_node')['stop_reason']
    assert reason in ('inference_silent', 'plan_done'), reason  # a plan may end before the timeout
    codes = stack.stop()
    assert codes['inference_node'] == -signal.SIGKILL
    assert codes['camera_node'] == codes['controller_node'] == 0, stack.logs()


def test_a_dead_camera_gives_no_plan_from_stale_frames_and_a_controlled_stop(stack):
    killed = kill_while_moving(stack, 'camera_node')
    rec = stack.recording
    keyframes_before = {(k.msg.header.stamp.sec, k.msg.header.stamp.nanosec) for k in rec.keyframes
                        if k.wall_s < killed}
    plans_after = [p.msg for p in rec.plans if p.wall_s > killed]
    stamps_after = [(p.header.stamp.sec, p.header.stamp.nanosec) for p in plans_after]
    # At most the keyframe being answered and the one waiting for the model; each from before the
    # camera died, none answered twice.
    assert len(plans_after) <= 2 and set(stamps_after) <= keyframes_before
    assert len(set(stamps_after)) == len(stamps_after)
    inference = [s.msg for s in rec.diagnostics['/inference_node'] if s.wall_s > killed]
    assert any(d.message == 'task active but no keyframes arrive' for d in inference), [d.message for d in inference]
    codes = stack.stop()
    assert codes['inference_node'] == codes['controller_node'] == 0, stack.logs()


def test_no_plan_of_the_old_task_after_a_switch(stack):
    wait_until_moving(stack)
    old_task = stack.recording.plans[-1].msg.task_id
    response, answered = stack.set_task('turn around and go back to the start')
    assert response.accepted and response.task_id != old_task
    assert stack.wait_until(lambda: any(p.msg.task_id == response.task_id and p.msg.action != 'new_task'
                                        for p in stack.recording.plans), 20.0), 'no plan of the new task'
    after = [p.msg for p in stack.recording.plans if p.wall_s > answered]
    assert after and all(p.task_id == response.task_id for p in after), [(p.task_id, p.action) for p in after]
    switch = [p.msg for p in stack.recording.plans if p.msg.action == 'new_task']
    assert switch[-1].task_id == response.task_id and switch[-1].stop, 'the switch itself publishes a stop plan'
    codes = stack.stop()
    assert all(code == 0 for code in codes.values()), (codes, stack.logs())


def test_corrupted_frames_are_counted_and_nothing_crashes(tmp_path):
    bag = tmp_path / 'corrupted'
    broken = make_bag.corrupt_copy(make_bag.DEMO_DIR / make_bag.BAG_NAME, bag, every=7)
    with StackRun(RunOptions(bag=bag, rate=RATE), tmp_path / 'logs') as run:
        run.start_stack()
        run.play()
        assert run.wait_until(lambda: run.player.poll() is not None, 60.0), run.logs()
        assert run.wait_until(lambda: any(s.msg.state_name == 'stopped' for s in run.recording.statuses), 10.0)
        played = time.monotonic()
        # camera_node's counts once it has seen the whole bag: its first /diagnostics after the player ended
        assert run.wait_until(lambda: any(s.wall_s > played + 0.2 for s in run.recording.diagnostics['/camera_node']),
                              5.0)
        camera = run.recording.last_diagnostics('camera_node')
        codes = run.stop()
    assert all(code == 0 for code in codes.values()), run.logs()
    received, skipped = int(camera['frames_received']), int(camera['frames_skipped'])
    rejected = int(camera['decode_errors'])
    lost = len(make_bag.frame_stamps_ns()) - received  # best effort: a few frames of the bag may never reach the node
    assert broken - lost - skipped <= rejected <= broken, camera
    assert int(camera['rejected_corrupt_compressed']) > 0 and int(camera['rejected_empty']) > 0, camera
    assert int(camera['internal_errors']) == 0
    assert any(c.msg.linear.x > 0.3 for c in run.recording.commands), 'the good frames still drove the robot'
