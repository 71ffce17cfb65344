"""Parameters on a real graph: files apply under a namespace or the node says why not, a misspelt name
stops a node, and a running node takes a valid change through its parameter services (`ros2 param set`)
and refuses an invalid one in the model's words, changing nothing."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import rclpy
from conftest import REPO, call_service, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy

from vln_ros.core.backends.base import AnswerRecord, AnswerRecorder
from vln_ros.core.config import node_key_matches
from vln_ros.msg import Waypoint, WaypointArray
from vln_ros.nodes.camera_node import CameraNode
from vln_ros.nodes.inference_node import InferenceNode
from vln_ros.nodes.parameters import params_files

VENV_BIN = Path(sys.executable).parent
YAML = REPO / 'config' / 'vln.yaml'
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


# -- helpers ----------------------------------------------------------------------------------------

def replay_file(tmp_path: Path) -> str:
    path = tmp_path / 'answers.jsonl'
    recorder = AnswerRecorder(path)
    recorder.write(AnswerRecord(stamp_ns=0, task_id='', instruction='', prompt_hash='', text='{}', latency_s=0.0))
    recorder.close()
    return str(path)


def node_command(name: str, *ros_args: str) -> list[str]:
    return [str(VENV_BIN / name), '--ros-args', *ros_args]


class Started:
    """A node process whose output is collected while it runs (so a test can wait for a line)."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return ''.join(self._lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.proc.kill()
            self._reader.join(timeout=2.0)


@pytest.fixture
def started():
    procs: list[Started] = []

    def start(command: list[str]) -> Started:
        procs.append(Started(command))
        return procs[-1]
    yield start
    for proc in procs:
        proc.stop()


def call(node: Node, srv_type, name: str, request, timeout_s: float = 20.0):
    client = node.create_client(srv_type, name)
    try:
        return call_service(client, request, timeout_s)
    finally:
        node.destroy_client(client)


def get(node: Node, fqn: str, *names: str) -> list:
    values = call(node, GetParameters, f'{fqn}/get_parameters', GetParameters.Request(names=list(names))).values
    return [parameter_value_to_python(v) for v in values]


def set_each(node: Node, fqn: str, **values) -> list:
    """SetParameters, what `ros2 param set` calls: one result per parameter."""
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return call(node, SetParameters, f'{fqn}/set_parameters', request).results


def set_together(node: Node, fqn: str, **values):
    request = SetParametersAtomically.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return call(node, SetParametersAtomically, f'{fqn}/set_parameters_atomically', request).result


# -- which files apply: our matcher against rclpy's -----------------------------------------------------

KEYS = ['controller_node', '/controller_node', '/**/controller_node', '**/controller_node', '/**', '/*',
        '/*/controller_node', '/*/*/controller_node', '/r1/*', '/**/r1/**/controller_node', '/r1/controller_node',
        'r1/controller_node', '/**/camera_node']


@pytest.mark.parametrize('namespace', ['/', '/r1', '/fleet/r1'])
def test_the_sections_our_matcher_finds_are_the_ones_rclpy_applies(tmp_path, namespace):
    path = tmp_path / 'p.yaml'
    path.write_text(''.join(f"'{key}':\n  ros__parameters: {{k{i}: {i}}}\n" for i, key in enumerate(KEYS)))
    context = Context()
    rclpy.init(context=context, args=['test'])
    try:
        node = Node('controller_node', namespace=namespace, context=context, start_parameter_services=False,
                    cli_args=['--ros-args', '--params-file', str(path)])
        applied = {KEYS[int(name[1:])] for name in node._parameter_overrides}
        fqn = node.get_fully_qualified_name()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert applied == {key for key in KEYS if node_key_matches(key, fqn)}, fqn


def test_parameter_files_are_found_among_the_ros_arguments():
    assert params_files(['node', '--ros-args', '-p', 'a:=1', '--params-file', 'a.yaml', '-r', 'x:=y',
                         '--params-file', 'b.yaml', '--', '--params-file', 'not_ros.yaml',
                         '--ros-args', '--params-file', 'c.yaml']) == ['a.yaml', 'b.yaml', 'c.yaml']
    assert params_files(['node', '--params-file', 'x.yaml']) == []  # not a ROS argument
    assert params_files(['node', '--ros-args', '--params-file']) == []


# -- start-up: files under a namespace, misspelt names -------------------------------------------------

def test_the_shipped_file_applies_to_every_node_under_a_namespace(graph, tmp_path, started):
    """config/vln.yaml's own keys, with one value per node changed: each node in /r1 must read it back."""
    text = YAML.read_text()
    changes = {'camera_node': ('jpeg_quality', '85', 61), 'controller_node': ('max_linear_x', '0.5', 0.31),
               'inference_node': ('max_new_tokens', '128', 77)}
    for name, old, new in changes.values():
        text, count = re.subn(rf'^(    {name}: ){re.escape(old)}\b', rf'\g<1>{new}', text, flags=re.M)
        assert count == 1, name
    path = tmp_path / 'vln.yaml'
    path.write_text(text)
    procs = {node: started(node_command(node, '-r', '__ns:=/r1', '--params-file', str(path),
                                        *(['-p', 'backend:=replay', '-p', f'replay.file:={replay_file(tmp_path)}']
                                          if node == 'inference_node' else [])))
             for node in changes}
    watcher = graph.node('watcher')
    for node, (name, _, new) in changes.items():
        assert get(watcher, f'/r1/{node}', name) == [new], procs[node].output
    for proc in procs.values():
        assert proc.stop() == 0, proc.output
        assert 'no section' not in proc.output, proc.output


@pytest.mark.parametrize(('node', 'args', 'expected'), [
    ('controller_node', ['-p', 'max_linear_X:=0.1'], "unknown parameter 'max_linear_X' (did you mean 'max_linear_x'?)"),
    ('controller_node', ['-p', 'rate:=20.0'], "unknown parameter 'rate' (did you mean 'rate_hz'?)"),
    ('controller_node', ['-p', 'max_speed:=0.1'], "unknown parameter 'max_speed' (did you mean '"),
    ('controller_node', ['FILE', '/**/controller_node:\n  ros__parameters: {max_lin_x: 0.1}\n'],
     "unknown parameter 'max_lin_x' (did you mean 'max_linear_x'?)"),
    ('controller_node', ['FILE', '/**:\n  ros__parameters: {keyframe: {change_threshold: 0.2}}\n'],
     "unknown parameter 'keyframe.change_threshold'"),  # a section for every node holds only what all have
    ('camera_node', ['-p', 'keyframe.change_treshold:=0.2'],
     "unknown parameter 'keyframe.change_treshold' (did you mean 'keyframe.change_threshold'?)"),
    ('inference_node', ['-p', 'backend:=replay', '-p', 'replay.file:=x.jsonl', '-p', 'histroy_steps:=2'],
     "unknown parameter 'histroy_steps' (did you mean 'history_steps'?)"),
])
def test_a_misspelt_parameter_stops_the_node_naming_the_closest_real_one(tmp_path, node, args, expected):
    if args[0] == 'FILE':
        (tmp_path / 'p.yaml').write_text(args[1])
        args = ['--params-file', str(tmp_path / 'p.yaml')]
    result = subprocess.run(node_command(node, *args), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f'[{node}] invalid parameters, not starting: {expected}' in result.stderr
    assert 'Traceback' not in result.stderr


def test_ros_own_parameters_are_not_unknown(graph, started):
    proc = started(node_command('controller_node', '-r', '__node:=own_params', '-p', 'use_sim_time:=false',
                                '-p', 'start_type_description_service:=false',
                                '-p', 'qos_overrides./cmd_vel.publisher.depth:=3'))
    assert get(graph.node('watcher'), '/own_params', 'max_linear_x') == [0.5], proc.output
    assert proc.stop() == 0, proc.output


def test_a_file_without_a_section_for_the_node_stops_the_controller(tmp_path):
    path = tmp_path / 'root_only.yaml'
    path.write_text('controller_node:\n  ros__parameters: {max_linear_x: 0.1}\n')
    result = subprocess.run(node_command('controller_node', '-r', '__ns:=/r1', '--params-file', str(path)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert (f'[controller_node] invalid parameters, not starting: parameter file {path} has no section for '
            f"/r1/controller_node (its sections are 'controller_node'), so none of its values apply; key the "
            "section '/**/controller_node:' to apply it in any namespace") in result.stderr


def test_a_file_without_a_section_for_the_node_is_a_warning_for_the_camera(graph, tmp_path, started):
    path = tmp_path / 'controller_only.yaml'
    path.write_text('/**/controller_node:\n  ros__parameters: {max_linear_x: 0.1}\n')
    proc = started(node_command('camera_node', '-r', '__ns:=/r1', '--params-file', str(path),
                                '-p', 'diagnostics_period_s:=0.2'))
    seen = []
    graph.node('listener').create_subscription(
        DiagnosticArray, '/diagnostics', lambda m: seen.extend(s for s in m.status if s.name == '/r1/camera_node'), 10)
    assert wait_for(lambda: seen or proc.proc.poll() is not None, 20.0), proc.output
    assert proc.stop() == 0, proc.output
    assert re.search(rf'\[WARN\] .*parameter file {re.escape(str(path))} has no section for /r1/camera_node '
                     r"\(its sections are '/\*\*/controller_node'\), so none of its values apply", proc.output), \
        proc.output


# -- live changes -------------------------------------------------------------------------------------

def plan(node: Node) -> WaypointArray:
    msg = WaypointArray(task_id='t1', waypoints=[Waypoint(dx=0.5, confidence=1.0)] * 20)  # 10 m ahead
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = 'base_link'
    return msg


def test_a_lower_speed_limit_set_on_a_running_controller_takes_effect(graph, started):
    proc = started(node_command('controller_node', '-r', '__ns:=/r1', '--params-file', str(YAML)))
    robot = graph.node('robot')
    commands: list[float] = []
    robot.create_subscription(Twist, '/r1/cmd_vel', lambda m: commands.append(m.linear.x), 10)
    plans = robot.create_publisher(WaypointArray, '/r1/vln/waypoints', RELIABLE)

    [result] = set_each(robot, '/r1/controller_node', max_linear_x=0.2)
    assert result.successful, result.reason
    assert get(robot, '/r1/controller_node', 'max_linear_x') == [0.2]

    assert wait_for(lambda: plans.get_subscription_count() > 0, 10.0)
    plans.publish(plan(robot))
    assert wait_for(lambda: len(commands) > 0 and commands[-1] > 0.19, 10.0), (commands[-5:], proc.output)
    settled = len(commands)
    assert wait_for(lambda: len(commands) > settled + 25, 5.0)  # half a second more at 50 Hz
    assert max(commands) <= 0.2 + 1e-9, max(commands)  # with the old limit it would accelerate on to 0.5
    assert proc.stop() == 0
    assert '[INFO]' in proc.output and 'parameter max_linear_x set: 0.5 -> 0.2 m/s' in proc.output, proc.output


REFUSED = [
    ({'max_linear_x': 5.0}, "parameter 'max_linear_x' = 5.0 is invalid (Input should be less than or equal to 3); "
                            'allowed: 0.0 <= float <= 3.0 [m/s]'),
    ({'max_accel_x': 0.0}, "parameter 'max_accel_x' = 0.0 is invalid (Input should be greater than 0); "
                           'allowed: 0.0 < float <= 10.0 [m/s^2]'),
    ({'goal_tolerance_m': 0.6}, 'goal_tolerance_m (0.6) must be smaller than lookahead_m (0.5)'),
    ({'rate_hz': 20.0}, "parameter 'rate_hz' is fixed while the node runs (read-only): set it in the parameter "
                        'file or with -p and restart the node'),
    ({'max_linear_x': 1}, "parameter 'max_linear_x' = 1 is an integer; write it as 1.0 (ROS parameters are typed); "
                          'allowed: 0.0 <= float <= 3.0 [m/s]'),
    ({'max_speed': 0.1}, "unknown parameter 'max_speed' (did you mean '"),
]


def test_an_invalid_change_is_refused_in_the_models_words_and_changes_nothing(graph, started):
    proc = started(node_command('controller_node', '-r', '__ns:=/r1', '--params-file', str(YAML)))
    client = graph.node('operator')
    names = ['max_linear_x', 'max_accel_x', 'goal_tolerance_m', 'rate_hz', 'lookahead_m']
    before = get(client, '/r1/controller_node', *names)
    for change, message in REFUSED:
        [result] = set_each(client, '/r1/controller_node', **change)
        assert not result.successful and result.reason.startswith(message), (change, result.reason)
    together = set_together(client, '/r1/controller_node', max_linear_x=0.3, rate_hz=20.0)
    assert not together.successful and together.reason.startswith("parameter 'rate_hz' is fixed")
    assert get(client, '/r1/controller_node', *names) == before
    # two parameters that depend on each other, changed at once
    assert set_together(client, '/r1/controller_node', lookahead_m=1.0, goal_tolerance_m=0.6).successful
    assert get(client, '/r1/controller_node', 'lookahead_m', 'goal_tolerance_m') == [1.0, 0.6]
    assert proc.stop() == 0
    assert 'refused a parameter change: goal_tolerance_m (0.6) must be smaller than lookahead_m (0.5)' in proc.output


def test_a_camera_takes_keyframe_and_jpeg_settings_live(graph):
    camera = graph.add(CameraNode(context=graph.context))
    client = graph.node('operator')
    sampler = camera._sampler
    results = set_each(client, '/camera_node', **{'keyframe.change_threshold': 0.3, 'jpeg_quality': 60})
    assert all(r.successful for r in results), results
    assert (camera.params.keyframe.change_threshold, camera.params.jpeg_quality) == (0.3, 60)
    assert camera._sampler is not sampler and camera._sampler.params.change_threshold == 0.3
    [fixed] = set_each(client, '/camera_node', input_transport='compressed')
    assert not fixed.successful and fixed.reason.startswith("parameter 'input_transport' is fixed")
    [crossed] = set_each(client, '/camera_node', **{'keyframe.min_interval_s': 9.0})
    assert crossed.reason.startswith('keyframe.min_interval_s (9.0) must not exceed keyframe.max_interval_s (5.0)')
    assert (camera.params.input_transport, camera.params.keyframe.min_interval_s) == ('raw', 0.5)


def test_an_inference_node_takes_prompt_and_parser_settings_live(graph, tmp_path):
    values = {'backend': 'replay', 'replay.file': replay_file(tmp_path), 'history_max': 6}
    node = graph.add(InferenceNode(context=graph.context,
                                   parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
    client = graph.node('operator')
    results = set_each(client, '/inference_node', history_steps=5, failure_threshold=7,
                       **{'parser.max_waypoints': 4, 'inference_timeout_s': 2.5})
    assert all(r.successful for r in results), results
    assert node.pipeline()._prompts.history_steps == 5 and node.pipeline()._tasks.failure_threshold == 7
    assert node.params.parser.max_waypoints == 4 and node.params.inference_timeout_s == 2.5
    assert node.pipeline()._prompts.schema['properties']['wp']['maxItems'] == 4  # the answer schema, rebuilt
    [crossed] = set_each(client, '/inference_node', history_steps=8)
    assert crossed.reason == 'history_steps (8) must not exceed history_max (6)'
    [fixed] = set_each(client, '/inference_node', backend='openai')
    assert not fixed.successful and fixed.reason.startswith("parameter 'backend' is fixed")
    assert (node.params.history_steps, node.params.backend) == (5, 'replay')
