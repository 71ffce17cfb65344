"""The demos' parts: `make demo-keyframes` (the camera node on a video clip), the bundled corridor bag and its
scripted answers (made by vln_ros/demo/make_bag.py), the demo summary's arithmetic and its pass check
(impossible figures are named and fail the run), and a read-only output folder or checkout (`make demo`,
`make bench`: one line, no traceback). `make demo` itself runs in test/test_e2e.py."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import cv2
import pytest
from conftest import DATA, REPO


def test_demo_streams_the_clip_and_writes_its_picture(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'vln_ros.demo.keyframes', '--speed', '8', '--out', str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    decisions = [json.loads(line) for line in (tmp_path / 'decisions.jsonl').read_text().splitlines()]
    frames = int(re.search(r'streaming (\d+) frames', result.stdout).group(1))
    received, skipped = map(int, re.search(r'camera_node diagnostics: received (\d+), skipped (\d+)',
                                           result.stdout).groups())
    # camera_node accounts for every frame it received: decided, or skipped by its latest-wins hand-over (a
    # loaded machine cannot decide 80 frames a second) and counted. Its input is best-effort sensor QoS (the
    # newest frame wins in DDS too), so a loaded machine also loses some on the way; most must arrive.
    assert len(decisions) + skipped == received, (len(decisions), skipped, received)
    assert received >= 0.9 * frames, (received, frames)
    keyframes = [d for d in decisions if d['keyframe']]
    assert 12 <= len(keyframes) <= 34  # 27 at real speed: people walking trigger, each empty room too
    assert {d['reason'] for d in keyframes} == {'first', 'change', 'max_interval'}
    assert (tmp_path / 'keyframes.png').stat().st_size > 50_000
    assert 'keyframes:' in result.stdout and (DATA / 'people_clip.mp4').name in result.stdout


# -- the bundled corridor bag and its scripted answers -------------------------------------------------

def test_the_bundled_answers_are_what_make_bag_writes(tmp_path):
    from vln_ros.demo import make_bag
    make_bag.write_answers(tmp_path / 'answers.jsonl')
    assert (tmp_path / 'answers.jsonl').read_text() == (make_bag.DEMO_DIR / make_bag.ANSWERS_NAME).read_text(), \
        'demo/corridor_answers.jsonl is stale: run `make demo-bag`'


def test_the_bundled_bag_holds_the_rendered_walk():
    import numpy as np
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from vln_ros.demo import corridor, make_bag
    store, walk = get_typestore(Stores.ROS2_KILTED), corridor.walk()
    stamps = make_bag.frame_stamps_ns()
    with Reader(make_bag.DEMO_DIR / make_bag.BAG_NAME) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == {
            make_bag.CAMERA_TOPIC + '/compressed': len(stamps), make_bag.INSTRUCTION_TOPIC: 1}
        frames = [(t, store.deserialize_cdr(d, c.msgtype)) for c, t, d in reader.messages()
                  if c.topic.endswith('/compressed')]
    assert [t for t, _ in frames] == stamps
    assert all(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t for t, msg in frames)
    for index in (0, len(frames) // 2, len(frames) - 1):  # JPEG may differ across OpenCV builds: compare pixels
        t, msg = frames[index]
        recorded = cv2.imdecode(msg.data, cv2.IMREAD_COLOR).astype(float)
        rendered = corridor.render(walk.pose_at((t - make_bag.START_NS) / 1e9)).astype(float)
        assert np.abs(recorded - rendered).mean() < 3.0, index


def test_scripted_answers_follow_the_walk_and_parse():
    from vln_ros.core.config import ParserParams
    from vln_ros.core.parser import parse_answer
    from vln_ros.demo import corridor
    walk = corridor.walk()
    parsed = [parse_answer(corridor.answer_text(walk, t), ParserParams()) for t in corridor.frame_times(walk)]
    assert all(p.rejection is None for p in parsed)
    actions = [p.action for p in parsed]
    # forward down the corridor, a left turn at the red door, then arrived until the end
    assert actions[0] == 'forward' and 'turn_left' in actions and actions[-1] == 'arrived'
    first_arrived = actions.index('arrived')
    assert set(actions[first_arrived:]) == {'arrived'} and actions.index('turn_left') < first_arrived
    assert all(p.stop == (p.action == 'arrived') for p in parsed)


def test_demo_summary_measures_rate_and_stops_from_the_commands():
    from vln_ros.demo.run import control_rate_hz, stops
    commands = [{'t': i * 0.02, 'vx': 0.3 if 10 <= i < 60 else 0.0, 'vy': 0.0, 'wz': 0.0} for i in range(100)]
    assert control_rate_hz(commands) == pytest.approx(50.0)
    diagnostics = [{'t': 0.5, 'values': {'stop_reason': 'following'}},
                   {'t': 1.5, 'values': {'stop_reason': 'plan_done'}}]
    assert stops(commands, diagnostics) == [{'t': 1.2, 'reason': 'plan_done'}]
    assert math.isnan(control_rate_hz(commands[:5]))


# -- the demo's pass check: a whole run, and impossible figures named ----------------------------------------

def a_whole_run() -> dict:
    """A small run as run.json holds it: 10 s of bag from 1000 s, 100 frames, 10 keyframes and plans, the robot
    walking from 1 s to 3 s at 50 Hz and stopping."""
    from vln_ros.demo.run import control_rate_hz
    start = 1000.0
    commands = [{'t': start + 1.0 + i * 0.02, 'vx': 0.3 if i < 100 else 0.0, 'vy': 0.0, 'wz': 0.0} for i in range(150)]
    return {
        'title': 'a whole run', 'domain_id': 42, 'bag_start_s': start, 'bag_end_s': start + 10.0, 'bag_frames': 100,
        'rate_hz': 50.0, 'playback_rate': 1.0, 'within_limits': True, 'statuses': [], 'commands': commands,
        'control_rate_hz': control_rate_hz(commands),
        'keyframes': [{'t': start + i + 0.05, 'stamp': start + i} for i in range(10)],
        'plans': [{'received': start + i + 0.6, 'stamp': start + i, 'latency': 0.55, 'action': 'forward'}
                  for i in range(10)],
        'stops': [{'t': start + 3.0, 'reason': 'plan_done'}],
        'diagnostics': {
            '/camera_node': {'values': {'frames_received': '100', 'keyframes_published': '10'}},
            '/inference_node': {'values': {'keyframes_received': '10', 'plans_published': '10'}},
            '/controller_node': {'values': {'rate_hz': '50.01', 'plans_received': '10', 'commands_published': '150'}}},
        'exit_codes': {'camera_node': 0, 'inference_node': 0, 'controller_node': 0, 'vln_bag_player': 0},
    }


def test_a_whole_run_passes():
    from vln_ros.demo.run import impossible_figures, summary
    assert impossible_figures(a_whole_run()) == []
    text, whole = summary(a_whole_run())
    assert whole and 'FAILED' not in text and 'ROS domain 42' in text
    # played at 2x, the controller's timer (bag time) fires twice as often per wall second: its own rate_hz
    twice = a_whole_run()
    twice['playback_rate'] = 2.0
    twice['diagnostics']['/controller_node']['values']['rate_hz'] = '99.7'
    assert impossible_figures(twice) == []


def _set(path: str, value):
    def change(run: dict) -> None:
        *keys, last = path.split('.')
        target = run
        for key in keys:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value
    return change


def _drop_diagnostics(node: str):
    return lambda run: run['diagnostics'].pop(f'/{node}')


def _more_commands(run: dict) -> None:   # a second controller in the graph
    run['commands'] += [dict(c, t=c['t'] + 0.01) for c in run['commands']]


@pytest.mark.parametrize('change, named', [
    # the measured nonsense: `stops: -1763856000.0 s` (bag time 0: no /clock heard from its own player)
    (_set('stops.0.t', 0.0), 'stops at -1000.0 s (1 of 1 outside the bag; the bag spans 0-10.0 s)'),
    (_set('control_rate_hz', math.nan), 'cmd_vel rate while moving nan Hz'),
    (_set('control_rate_hz', 100.0), 'cmd_vel rate while moving 100.0 Hz (configured 50 Hz'),
    (_set('diagnostics./controller_node.values.rate_hz', '-50'), 'controller_node rate_hz -50.0 Hz'),
    (_set('diagnostics./controller_node.values.rate_hz', '96.4'), 'controller_node rate_hz 96.4 Hz (configured 50 Hz'),
    (_set('keyframes.3.stamp', 1020.0), 'keyframe stamp at 20.0 s'),
    (_set('plans.2.stamp', 990.0), 'plan stamp at -10.0 s'),
    (_set('plans.2.received', 1000.5), 'plan heard 1.5 s before its keyframe was taken (1 plans)'),
    (_set('plans.4.latency', -0.3), 'plan latency -0.3 s'),
    (_set('plans.4.latency', math.nan), 'plan latency nan s'),
    (_set('commands.0.t', 0.0), 'cmd_vel heard at -1000.0 s'),
    (_set('diagnostics./camera_node.values.frames_received', '200'),
     'camera_node frames_received 200 > 100 frames in the bag'),
    (_set('diagnostics./camera_node.values.keyframes_published', '9'),
     'keyframes heard 10 > 9 camera_node keyframes_published'),
    (_set('diagnostics./inference_node.values.keyframes_received', '20'),
     'inference_node keyframes_received 20 > 10 camera_node keyframes_published'),
    (_set('diagnostics./controller_node.values.plans_received', '20'),
     'controller_node plans_received 20 > 10 inference_node plans_published'),
    (_more_commands, 'cmd_vel heard 300 > 150 controller_node commands_published'),
    (_drop_diagnostics('inference_node'), 'no /diagnostics heard from inference_node'),
])
def test_the_pass_check_names_each_impossible_figure(change, named):
    from vln_ros.demo.run import summary
    run = a_whole_run()
    change(run)
    text, whole = summary(run)
    assert not whole
    assert f'FAILED: impossible figure: {named}' in text, text


# -- a read-only output folder or checkout: one line, no traceback ----------------------------------------

def run_read_only(folder, command: list[str], cwd) -> subprocess.CompletedProcess:
    """command with `folder` read-only: by its mode for a user, through a read-only bind mount in a mount
    namespace of its own for root (modes do not stop root; nothing outside the command sees the mount)."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd)
    if shutil.which('unshare') is None:
        pytest.skip('root without unshare: no way to make a folder read-only for this test')
    script = 'mount --bind -o ro "$0" "$0" || exit 99; cd "$1" && shift && exec "$@"'
    result = subprocess.run(['unshare', '--mount', 'sh', '-c', script, str(folder), str(cwd), *command],
                            capture_output=True, text=True, timeout=60)
    if result.returncode == 99:
        pytest.skip(f'cannot bind-mount read-only here: {result.stderr.strip()}')
    return result


@pytest.mark.parametrize('case', ['demo in a read-only checkout', 'demo --out', 'bench --out'])
def test_a_read_only_output_folder_is_one_line_and_no_traceback(tmp_path, case):
    read_only = tmp_path / 'read_only'
    command, cwd, named = {
        'demo in a read-only checkout': ([sys.executable, '-m', 'vln_ros.demo.run'], read_only, 'demo_out'),
        'demo --out': ([sys.executable, '-m', 'vln_ros.demo.run', '--out', str(read_only / 'out')], REPO,
                       str(read_only / 'out')),
        'bench --out': ([sys.executable, str(REPO / 'bench' / 'run.py'), '--out', str(read_only / 'out')], REPO,
                        str(read_only / 'out')),
    }[case]
    result = run_read_only(read_only, command, cwd)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == '' and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f'cannot write to the output folder {named}' in result.stderr and 'Traceback' not in result.stderr
