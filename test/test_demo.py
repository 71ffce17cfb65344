"""The demos' parts: `make demo-keyframes` (the camera node on a video clip), the bundled corridor bag and its
scripted answers (made by vln_ros/demo/make_bag.py), and the demo summary's arithmetic. `make demo` itself
runs in test/test_e2e.py."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import pytest
from conftest import DATA


def test_demo_streams_the_clip_and_writes_its_picture(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'vln_ros.demo.keyframes', '--speed', '8', '--out', str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    decisions = [json.loads(line) for line in (tmp_path / 'decisions.jsonl').read_text().splitlines()]
    assert len(decisions) >= 390  # every frame decided but for rare best-effort losses
    keyframes = [d for d in decisions if d['keyframe']]
    assert 10 <= len(keyframes) <= 24
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
    diagnostics = [{'t': 0.5, 'values': {'stop_reason': 'following'}}, {'t': 1.5, 'values': {'stop_reason': 'plan_done'}}]
    assert stops(commands, diagnostics) == [{'t': 1.2, 'reason': 'plan_done'}]
    assert math.isnan(control_rate_hz(commands[:5]))
