"""The node executables as separate processes: they start, answer on the graph, stop cleanly,
and refuse bad parameters with a message naming the parameter, the value and the allowed range."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, wait_for
from diagnostic_msgs.msg import DiagnosticArray

VENV_BIN = Path(sys.executable).parent


def diagnostics_from(graph, node_name: str) -> list:
    seen = []
    graph.node('listener').create_subscription(
        DiagnosticArray, '/diagnostics', lambda m: seen.extend(s for s in m.status if s.name == node_name), 10)
    return seen


def start_and_stop(graph, command: list[str], node_name: str, env=None) -> tuple[list, str]:
    """Start a node process, wait for its /diagnostics, SIGINT it; returns (statuses, output)."""
    seen = diagnostics_from(graph, node_name)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        answered = wait_for(lambda: len(seen) > 0 or proc.poll() is not None, 20.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert answered and seen, out
    assert proc.returncode == 0, out
    return seen, out


def test_camera_node_executable_starts_answers_and_stops(graph):
    seen, out = start_and_stop(
        graph, [str(VENV_BIN / 'camera_node'), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml')],
        '/camera_node')
    assert seen[0].message == 'no frames on /image'
    assert 'invalid' not in out


def test_controller_node_executable_starts_answers_and_stops(graph):
    seen, out = start_and_stop(
        graph, [str(VENV_BIN / 'controller_node'), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml')],
        '/controller_node')
    assert seen[0].message == 'no_plan'


@pytest.mark.parametrize(('node', 'args', 'expected'), [
    ('camera_node', ['-p', 'max_side_px:=-5'], ["'max_side_px' = -5", '0 <= int <= 8192 [px]']),
    ('camera_node', ['-p', 'keyframe.max_interval_s:=2'], ["'keyframe.max_interval_s' = 2 is an integer", '2.0']),
    ('camera_node', ['-p', 'input_transport:=theora'], ["'input_transport' = 'theora'", 'one of raw, compressed']),
    ('camera_node', ['-p', 'keyframe.min_interval_s:=30.0'], ['keyframe.min_interval_s (30.0) must not exceed']),
    ('controller_node', ['-p', 'rate_hz:=500.0'], ["'rate_hz' = 500.0", '10.0 <= float <= 100.0 [Hz]']),
    ('controller_node', ['-p', 'max_linear_x:=-1.0'], ["'max_linear_x' = -1.0", '0.0 <= float <= 3.0 [m/s]']),
    ('controller_node', ['-p', 'lookahead_m:=0.05'],
     ['goal_tolerance_m (0.1) must be smaller than lookahead_m (0.05)']),
])
def test_bad_parameters_fail_start_up_with_a_clear_message(node, args, expected):
    result = subprocess.run([str(VENV_BIN / node), '--ros-args', *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    for text in expected:
        assert text in result.stderr, result.stderr
    assert 'Traceback' not in result.stderr
