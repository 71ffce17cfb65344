"""The node executables as separate processes: they start, answer on the graph with exactly the topics and
services bringup and vln_ros/interface.py say, stop cleanly, and refuse bad parameters with a message naming
the parameter, the value and the allowed range."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, wait_for
from diagnostic_msgs.msg import DiagnosticArray

from vln_ros import bringup, interface
from vln_ros.harness.processes import free_port

VENV_BIN = Path(sys.executable).parent
# What rclpy gives every node besides its own interface: rosout, parameter events, and the parameter and
# type-description services under the node's own name.
RCLPY_TOPICS = {'/rosout', '/parameter_events'}


def live_interface(graph, node_name: str) -> tuple[set[str], set[str], set[str]]:
    """(publishers, subscriptions, services) of a running node in the root namespace, rclpy's own left out."""
    watcher, name = graph.node('interface_watcher'), node_name.lstrip('/')
    pubs = {t for t, _ in watcher.get_publisher_names_and_types_by_node(name, '/')} - RCLPY_TOPICS
    subs = {t for t, _ in watcher.get_subscriber_names_and_types_by_node(name, '/')} - RCLPY_TOPICS
    services = {s for s, _ in watcher.get_service_names_and_types_by_node(name, '/')
                if not s.startswith(f'/{name}/')}
    return pubs, subs, services


def declared_interface(node_name: str) -> tuple[set[str], set[str], set[str]]:
    spec = next(n for n in (*bringup.NODES, bringup.CONSOLE, bringup.GUARD) if n.name == node_name.lstrip('/'))
    absolute = lambda names: {n if n.startswith('/') else '/' + n for n in names}  # noqa: E731
    return absolute(spec.publishes), absolute(spec.subscribes), absolute(spec.services)


def diagnostics_from(graph, node_name: str) -> list:
    seen = []
    graph.node('listener').create_subscription(
        DiagnosticArray, '/diagnostics', lambda m: seen.extend(s for s in m.status if s.name == node_name), 10)
    return seen


def start_and_stop(graph, command: list[str], node_name: str, env=None,
                   interface_of: str | None = None, new_session: bool = False) -> tuple[list, str]:
    """Start a node process, wait for its /diagnostics, SIGINT it; returns (statuses, output). With
    interface_of (a bringup node name), first waits (bounded) until the node's live publishers,
    subscriptions and services are exactly bringup's, and asserts that they are."""
    seen = diagnostics_from(graph, node_name)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=new_session)   # new_session: no controlling terminal
    live = declared = None
    try:
        answered = wait_for(lambda: len(seen) > 0 or proc.poll() is not None, 20.0)
        if answered and interface_of:
            declared = declared_interface(interface_of)
            wait_for(lambda: live_interface(graph, node_name) == declared or proc.poll() is not None, 10.0)
            live = live_interface(graph, node_name)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert answered and seen, out
    assert live == declared, f'live (publishers, subscriptions, services) {live} != bringup {declared}'
    assert proc.returncode == 0, out
    return seen, out


def test_camera_node_executable_starts_answers_and_stops(graph):
    seen, out = start_and_stop(
        graph, [str(VENV_BIN / 'camera_node'), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml')],
        '/camera_node', interface_of='camera_node')
    assert seen[0].message == f'no frames on /{interface.IMAGE}'
    assert 'invalid' not in out


def test_controller_node_executable_starts_answers_and_stops(graph):
    seen, out = start_and_stop(
        graph, [str(VENV_BIN / 'controller_node'), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml')],
        '/controller_node', interface_of='controller_node')
    assert seen[0].message == 'no_plan'


def test_guard_node_executable_starts_answers_and_stops(graph):
    seen, _ = start_and_stop(
        graph, [str(VENV_BIN / 'guard_node'), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml')],
        '/guard_node', interface_of='guard_node')
    assert seen[0].message == 'passing (guard off)'   # config/vln.yaml: guard.enabled false


def test_inference_node_executable_with_replay_starts_answers_and_stops(graph, tmp_path):
    (tmp_path / 'answers.jsonl').write_text('{"stamp_ns": 0, "task_id": "", "instruction": "", "prompt_hash": "", '
                                            '"text": "{}", "latency_s": 0.1}\n')
    seen, out = start_and_stop(
        graph, [str(VENV_BIN / 'inference_node'), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml'),
                '-p', 'backend:=replay', '-p', f'replay.file:={tmp_path / "answers.jsonl"}'], '/inference_node',
        interface_of='inference_node')
    assert seen[0].message == 'idle'
    assert 'ready in' in out


def test_console_node_executable_starts_answers_and_stops(graph):
    port = free_port()
    seen, out = start_and_stop(
        graph, [str(VENV_BIN / 'console_node'), '--ros-args', '--params-file', str(REPO / 'config' / 'vln.yaml'),
                '-p', f'port:={port}'], '/console_node', interface_of='console_node')
    assert seen[0].message == 'ok'
    assert f'operator console: http://127.0.0.1:{port}/ (loopback only, no token)' in out, out


def test_console_node_off_loopback_generates_a_token_and_names_it_once(graph, tmp_path):
    """Without a terminal (a session of its own, its output to pipes) the URL with the token is in a 0600 file;
    the output names the file, never the token (test_console_announce.py: the terminal case, /rosout, logs)."""
    port = free_port()
    (tmp_path / 'run').mkdir()
    seen, out = start_and_stop(
        graph, [str(VENV_BIN / 'console_node'), '--ros-args', '-p', 'address:=0.0.0.0', '-p', f'port:={port}'],
        '/console_node', env={**os.environ, 'XDG_RUNTIME_DIR': str(tmp_path / 'run')}, new_session=True)
    assert '?token=' not in out
    lines = [line for line in out.splitlines() if 'operator console' in line]
    assert len(lines) == 1 and str(tmp_path / 'run' / 'vln_console' / f'console-{port}.url') in lines[0], out


def test_a_console_whose_port_is_taken_says_so_and_exits():
    import socket
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(VENV_BIN / 'console_node'), '--ros-args', '-p', f'port:={port}'],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and f'cannot serve the console on 127.0.0.1:{port}' in result.stderr + result.stdout
    assert 'Traceback' not in result.stderr


def test_inference_node_without_lmdeploy_names_the_fix():
    """CI never has lmdeploy: the default backend must fail start-up with one line that says what to do."""
    result = subprocess.run([str(VENV_BIN / 'inference_node'), '--ros-args', '--params-file',
                             str(REPO / 'config' / 'vln.yaml')], capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    assert "[inference_node] cannot start: backend 'lmdeploy' needs the lmdeploy package" in result.stderr
    assert "pip install '.[lmdeploy]'" in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize(('node', 'args', 'expected'), [
    ('camera_node', ['-p', 'max_side_px:=-5'], ["'max_side_px' = -5", '0 <= int <= 8192 [px]']),
    ('camera_node', ['-p', 'keyframe.max_interval_s:=2'], ["'keyframe.max_interval_s' = 2 is an integer", '2.0']),
    ('camera_node', ['-p', 'input_transport:=theora'], ["'input_transport' = 'theora'", 'one of raw, compressed']),
    ('camera_node', ['-p', 'keyframe.min_interval_s:=30.0'], ['keyframe.min_interval_s (30.0) must not exceed']),
    ('controller_node', ['-p', 'rate_hz:=500.0'], ["'rate_hz' = 500.0", '10.0 <= float <= 100.0 [Hz]']),
    ('controller_node', ['-p', 'max_linear_x:=-1.0'], ["'max_linear_x' = -1.0", '0.0 <= float <= 3.0 [m/s]']),
    ('controller_node', ['-p', 'lookahead_m:=0.05'],
     ['goal_tolerance_m (0.1) must be smaller than lookahead_m (0.05)']),
    ('inference_node', ['-p', 'backend:=replay'], ["backend 'replay' needs replay.file"]),
    ('inference_node', ['-p', 'lmdeploy.tp:=0'], ["'lmdeploy.tp' = 0", '1 <= int <= 16']),
    ('inference_node', ['-p', 'backend:=vllm'], ["'backend' = 'vllm'", 'one of lmdeploy, openai, oracle, replay']),
])
def test_bad_parameters_fail_start_up_with_a_clear_message(node, args, expected):
    result = subprocess.run([str(VENV_BIN / node), '--ros-args', *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    for text in expected:
        assert text in result.stderr, result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('node', [*(n.executable for n in (*bringup.NODES, bringup.CONSOLE, bringup.GUARD)),
                                  bringup.SIM_EXECUTABLE])
def test_every_node_executable_lists_its_parameters_under_help(node):
    """sim_node too, though its model is the simulator's (vln_ros/sim/params.py), not in core's NODE_PARAMS."""
    result = subprocess.run([str(VENV_BIN / node), '--help'], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'usage: {node} [--help] [--ros-args')
    assert f'Parameters (ros2 param describe /{node} NAME shows the same):' in result.stdout


def test_sim_node_help_lists_the_simulator_parameters_with_their_ranges():
    result = subprocess.run([str(VENV_BIN / bringup.SIM_EXECUTABLE), '--help'], capture_output=True, text=True,
                            timeout=30)
    assert "  camera.rate_hz = 10.0  (0.0 < float <= 60.0 [Hz]; fixed at start-up)" in result.stdout, result.stdout
    assert "  api_port = 8765  (1 <= int <= 65535; fixed at start-up)" in result.stdout
