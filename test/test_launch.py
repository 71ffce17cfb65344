"""The launch files, kept correct without launch (it cannot be installed here).

Statically: each launch file takes its nodes, parameter file, remappings, environment and arguments from
vln_ros/bringup.py and names no node itself; every argument is described; every executable is installed
both ways (setup.cfg, CMakeLists.txt); the parameter file has a section per node; config/vln.rviz shows
topics the nodes publish. Then each launch file is run against stand-ins for launch's classes, and what
it would start must be exactly what bringup describes. Last, the processes bringup describes are started
as real processes (the command lines launch_ros would run) and must come up on the graph as described:
the stack (vln.launch.py) and a bag replayed through it on bag time (replay.launch.py).
"""
from __future__ import annotations

import ast
import configparser
import os
import re
import runpy
import signal
import subprocess
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path

import ament_index_python.packages
import cv2
import numpy as np
import pytest
import yaml
from conftest import REPO, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rcl_interfaces.srv import GetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from vln_ros import bringup
from vln_ros.core.backends.base import AnswerRecord, AnswerRecorder
from vln_ros.core.config import NODE_PARAMS, load_node_yaml
from vln_ros.msg import WaypointArray

LAUNCH_FILES = {'vln.launch.py': bringup.StackArgs, 'replay.launch.py': bringup.ReplayArgs,
                'camera.launch.py': bringup.StackArgs}
VENV_BIN = Path(sys.executable).parent
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
OUR_EXECUTABLES = [n.executable for n in bringup.NODES] + [bringup.BAG_EXECUTABLE]


def parsed(launch_file: str) -> ast.Module:
    return ast.parse((REPO / 'launch' / launch_file).read_text())


def calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, 'id', None) == name or getattr(n.func, 'attr', None) == name)]


def string_constants(tree: ast.Module) -> set[str]:
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings}


# -- static checks ------------------------------------------------------------------------------------

@pytest.mark.parametrize('launch_file', sorted(LAUNCH_FILES))
def test_launch_files_take_the_stack_from_bringup_and_name_no_node(launch_file):
    tree = parsed(launch_file)
    assert any(isinstance(n, ast.ImportFrom) and n.module == 'vln_ros' and [a.name for a in n.names] == ['bringup']
               for n in tree.body), 'imports vln_ros.bringup'
    hard_coded = string_constants(tree) & {*OUR_EXECUTABLES, *(n.name for n in bringup.NODES), 'rviz2',
                                           bringup.PARAMS_FILE, 'vln.yaml', *bringup.LARGE_DATA_ENV}
    assert not hard_coded, f'{launch_file} names {hard_coded}: take it from vln_ros.bringup'
    for node in calls(tree, 'Node'):
        keywords = {k.arg for k in node.keywords}
        assert keywords == {None, 'output', 'emulate_tty'}, f'{launch_file}: Node({keywords}) must take ' \
            'executable, name, parameters, remappings and environment from bringup (**process.launch_kwargs())'
    assert calls(tree, 'OpaqueFunction')


@pytest.mark.parametrize('launch_file', sorted(LAUNCH_FILES))
def test_every_launch_argument_has_a_description(launch_file):
    declared = calls(parsed(launch_file), 'DeclareLaunchArgument')
    assert declared
    for call in declared:
        description = next((k.value for k in call.keywords if k.arg == 'description'), None)
        assert description is not None, f'{launch_file}: DeclareLaunchArgument without description'
        assert not (isinstance(description, ast.Constant) and not str(description.value).strip())
    # the declarations take their descriptions from bringup's argument models:
    for argument in bringup.launch_arguments(LAUNCH_FILES[launch_file]):
        assert len(argument.description) > 20, argument


def console_scripts() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(REPO / 'setup.cfg')
    lines = config['options.entry_points']['console_scripts'].strip().splitlines()
    return {name.strip(): target.strip() for name, target in (line.split('=') for line in lines)}


def cmake_scripts() -> dict[str, str]:
    """Executable -> module that CMakeLists.txt installs under lib/vln_ros."""
    text = (REPO / 'CMakeLists.txt').read_text()
    nodes = re.search(r'set\(VLN_ROS_NODES ([^)]*)\)', text).group(1).split()
    scripts = {node: f'vln_ros.nodes.{node}' for node in nodes}
    scripts.update(re.findall(r'^\s*vln_ros_install_script\((\w+) ([\w.]+)\)', text, re.MULTILINE))
    assert 'foreach(node ${VLN_ROS_NODES})\n    vln_ros_install_script(${node} vln_ros.nodes.${node})' in text
    return scripts


@pytest.mark.parametrize('executable', OUR_EXECUTABLES)
def test_every_executable_bringup_starts_is_installed_both_ways(executable):
    assert console_scripts()[executable] == f'{cmake_scripts()[executable]}:main'


def test_every_node_has_its_parameter_section_and_the_files_are_installed():
    assert (REPO / bringup.PARAMS_FILE).is_file() and (REPO / bringup.RVIZ_CONFIG).is_file()
    assert 'install(DIRECTORY launch config demo DESTINATION share/${PROJECT_NAME})' in (REPO / 'CMakeLists.txt').read_text()
    # The node name in the launch file is the section its parameters are read from.
    assert {n.name for n in bringup.NODES} == set(NODE_PARAMS)
    for node in bringup.NODES:
        assert load_node_yaml(REPO / bringup.PARAMS_FILE, node.name), node.name


def test_rviz_config_shows_topics_the_nodes_publish():
    config = yaml.safe_load((REPO / bringup.RVIZ_CONFIG).read_text())
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'base_link'
    remapped = {source: target.replace(bringup.CAMERA, 'image') for source, target in bringup.RVIZ.remappings}
    published = {t for n in bringup.NODES for t in n.publishes} | {'image'}  # image: the camera driver's
    shown = {d['Name']: remapped.get(d['Topic']['Value'], d['Topic']['Value'])
             for d in manager['Displays'] if 'Topic' in d}
    assert set(shown.values()) <= published, shown
    assert set(shown.values()) >= {'image', 'vln/keyframe', 'vln/path', 'vln/markers', 'vln/debug_image', 'cmd_vel'}
    assert all(not topic.startswith('/') for topic in shown.values()), 'relative, so the namespace applies'
    assert all(d['Class'].startswith('rviz_default_plugins/') for d in manager['Displays'])


# -- the launch files, run against stand-ins for launch -----------------------------------------------

@dataclass
class Declared:
    name: str
    default_value: str | None
    description: str


@dataclass
class Opaque:
    function: object


class Configuration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: dict[str, str]) -> str:
        return context[self.name]


def module(name: str, **attributes) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    return made


@pytest.fixture
def fake_launch(monkeypatch):
    """launch, launch.actions, launch.substitutions and launch_ros.actions with what our files use."""
    fakes = {
        'launch': module('launch', LaunchDescription=list),
        'launch.actions': module('launch.actions', OpaqueFunction=lambda function: Opaque(function),
                                 DeclareLaunchArgument=lambda name, default_value=None, description=None:
                                 Declared(name, default_value, description)),
        'launch.substitutions': module('launch.substitutions', LaunchConfiguration=Configuration),
        'launch_ros': module('launch_ros'),
        'launch_ros.actions': module('launch_ros.actions', Node=lambda **kwargs: kwargs),
    }
    for name, fake in fakes.items():
        monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.setattr(ament_index_python.packages, 'get_package_share_directory',
                        lambda package: f'/share/{package}')

    def evaluate(launch_file: str, given: dict[str, str]) -> tuple[list[Declared], list[dict]]:
        entities = runpy.run_path(str(REPO / 'launch' / launch_file))['generate_launch_description']()
        declared = [e for e in entities if isinstance(e, Declared)]
        values = {d.name: given.get(d.name, d.default_value) for d in declared}
        assert None not in values.values(), f'a required argument is missing: {values}'
        started = [node for e in entities if isinstance(e, Opaque) for node in e.function(values)]
        return declared, started
    return evaluate


@pytest.mark.parametrize(('launch_file', 'given'), [
    ('vln.launch.py', {}),
    ('vln.launch.py', {'nodes': 'robot', 'namespace': 'dog1', 'camera_topic': '/cam/image_raw', 'rviz': 'true'}),
    ('vln.launch.py', {'nodes': 'gpu', 'model': '/data/models/Qwen3-VL-32B-Instruct', 'tp': '4'}),
    ('vln.launch.py', {'nodes': 'camera_node,inference_node', 'use_sim_time': 'true', 'params_file': '/my.yaml'}),
    ('replay.launch.py', {'bag': '/bags/run1', 'rate': '2.0', 'loop': 'true', 'namespace': 'dog1'}),
    ('replay.launch.py', {'bag': 'run1.mcap', 'nodes': 'gpu', 'rviz': 'true'}),
    ('camera.launch.py', {'camera_topic': '/cam/image_raw', 'namespace': 'dog1'}),
])
def test_launch_files_start_exactly_what_bringup_describes(fake_launch, launch_file, given):
    model = LAUNCH_FILES[launch_file]
    declared, started = fake_launch(launch_file, given)
    arguments = {a.name: a for a in bringup.launch_arguments(model)}
    for d in declared:
        assert (d.default_value, d.description) == (arguments[d.name].default, arguments[d.name].description)
    values = {d.name: given.get(d.name, d.default_value) for d in declared}
    if launch_file == 'camera.launch.py':
        assert [d.name for d in declared] == list(bringup.CAMERA_ARGUMENTS)
        values.update(bringup.CAMERA_ONLY)
    else:
        assert [d.name for d in declared] == list(arguments)
    expected = [{'output': 'screen', 'emulate_tty': True, **p.launch_kwargs()}
                for p in bringup.processes(model, values, '/share/vln_ros')]
    assert started == expected


def test_launch_arguments_are_checked_with_a_clear_message(fake_launch):
    with pytest.raises(ValueError, match="bad launch argument: nodes: .*expected all, robot, gpu"):
        fake_launch('vln.launch.py', {'nodes': 'robot,camera'})
    with pytest.raises(ValueError, match=r"bad launch argument: rate: .*greater than 0 \(got '0'\)"):
        fake_launch('replay.launch.py', {'bag': 'x', 'rate': '0'})
    with pytest.raises(AssertionError, match='a required argument is missing'):
        fake_launch('replay.launch.py', {})


def test_sides_split_the_stack_and_raw_image_processes_get_the_large_data_transport():
    robot = bringup.stack(bringup.StackArgs(nodes='robot'), '/share')
    gpu = bringup.stack(bringup.StackArgs(nodes='gpu'), '/share')
    assert [p.name for p in robot] == ['camera_node', 'controller_node'] and [p.name for p in gpu] == ['inference_node']
    everything = bringup.stack(bringup.StackArgs(rviz=True), '/share')
    assert {p.name for p in everything if p.env == bringup.LARGE_DATA_ENV} == {'camera_node', 'inference_node', 'rviz2'}
    player = bringup.player(bringup.ReplayArgs(bag='b', nodes='robot', namespace='dog1'))
    assert player.env == bringup.LARGE_DATA_ENV
    excluded = list(player.arguments[player.arguments.index('--exclude-topics') + 1:])
    assert excluded == ['/diagnostics', '/dog1/cmd_vel', '/dog1/vln/keyframe']


# -- the processes bringup describes, started for real ------------------------------------------------

FORWARD = '{"env":"corridor","act":"forward","wp":[[0.5,0,0,0.9],[0.5,0,0,0.9]]}'


def replay_answers(tmp_path: Path) -> str:
    path = tmp_path / 'answers.jsonl'
    recorder = AnswerRecorder(path)
    recorder.write(AnswerRecord(stamp_ns=0, task_id='', instruction='', prompt_hash='', text=FORWARD, latency_s=0.05))
    recorder.close()
    return str(path)


def start(processes: list[bringup.Process], tmp_path: Path) -> list[subprocess.Popen]:
    """Each process with the command line launch_ros would run, and its environment added to ours. The
    one addition: inference_node uses the replay backend (no GPU here), as a params file would set it."""
    started = []
    for process in processes:
        command = process.command(str(VENV_BIN / process.executable))
        if process.name == 'inference_node':
            command += ['-p', 'backend:=replay', '-p', f'replay.file:={replay_answers(tmp_path)}',
                        '-p', 'replay.loop:=true']
        started.append(subprocess.Popen(command, env={**os.environ, **process.env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    return started


def stop(started: list[subprocess.Popen]) -> list[str]:
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    outputs = []
    for proc in started:
        try:
            outputs.append(proc.communicate(timeout=20)[0])
        finally:
            proc.kill()
    return outputs


class Watcher:
    """Keeps /diagnostics statuses by name (the header stamp too) and anything else asked for."""

    def __init__(self, graph) -> None:
        self.node = graph.node('launch_watcher')
        self.lock = threading.Lock()
        self.statuses: dict[str, list] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 100)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                self.statuses.setdefault(status.name, []).append((msg.header.stamp, status))

    def answered(self, names) -> bool:
        with self.lock:
            return all(self.statuses.get(name) for name in names)

    def parameters(self, node: str, names: list[str]) -> list:
        client = self.node.create_client(GetParameters, f'{node}/get_parameters')
        assert client.wait_for_service(timeout_sec=20.0), node
        future = client.call_async(GetParameters.Request(names=names))
        assert wait_for(future.done, 20.0), node
        return future.result().values


def test_the_stack_comes_up_as_bringup_describes(graph, tmp_path):
    args = {'namespace': 'launch_test', 'model': 'launch-test-model', 'tp': '2', 'camera_topic': '/launch_test_cam'}
    processes = bringup.processes(bringup.StackArgs, args, str(REPO))
    assert [p.name for p in processes] == ['camera_node', 'inference_node', 'controller_node']
    watcher = Watcher(graph)
    started = start(processes, tmp_path)
    try:
        names = [f'/launch_test/{p.name}' for p in processes]
        assert wait_for(lambda: watcher.answered(names) or any(p.poll() is not None for p in started), 60.0), \
            stop(started)
        for spec in bringup.NODES:  # every topic bringup says a node publishes, and nothing at the root
            published = {t for t, _ in watcher.node.get_publisher_names_and_types_by_node(spec.name, '/launch_test')}
            expected = {t if t.startswith('/') else f'/launch_test/{t}' for t in spec.publishes}
            assert expected <= published, (spec.name, published)
        camera_in = {t for t, _ in watcher.node.get_subscriber_names_and_types_by_node('camera_node', '/launch_test')}
        assert '/launch_test_cam' in camera_in  # the camera_topic remapping
        model, tp, sim_time = watcher.parameters('/launch_test/inference_node',
                                                 ['model', 'lmdeploy.tp', 'use_sim_time'])
        assert (model.string_value, tp.integer_value, sim_time.bool_value) == ('launch-test-model', 2, False)
    finally:
        outputs = stop(started)
    assert [p.returncode for p in started] == [0, 0, 0], outputs


def write_run_bag(path: Path, camera_topic: str, namespace: str) -> int:
    """A recorded run: camera frames alternating dark and bright (each one a keyframe) at 10 Hz for 3 s, an
    instruction, and the recorded run's own keyframes (which the player must leave out). Returns the start."""
    start_ns = 1_700_000_000 * 10**9
    typestore = get_typestore(Stores.ROS2_KILTED)
    writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    camera = writer.add_connection(camera_topic, 'sensor_msgs/msg/Image', typestore=typestore)
    instruction = writer.add_connection(f'/{namespace}/vln/instruction', 'std_msgs/msg/String', typestore=typestore)
    old_keyframes = writer.add_connection(f'/{namespace}/vln/keyframe', 'sensor_msgs/msg/CompressedImage',
                                          typestore=typestore)
    writer.write(instruction, start_ns, serialize_message(String(data='go down the corridor')))
    old_jpeg = CompressedImage(format='jpeg', data=cv2.imencode('.jpg', np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    for i in range(30):
        stamp_ns = start_ns + 100_000_000 * (i + 1)
        frame = Image(height=240, width=320, encoding='bgr8', step=960,
                      data=np.full((240, 320, 3), 40 if (i // 6) % 2 else 220, np.uint8).tobytes())
        frame.header.stamp.sec, frame.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        writer.write(camera, stamp_ns, serialize_message(frame))
        if i % 10 == 0:
            writer.write(old_keyframes, stamp_ns, serialize_message(old_jpeg))
    writer.close()
    return start_ns


def test_a_bag_replays_through_the_stack_on_bag_time(graph, tmp_path):
    namespace, camera_topic = 'replay_test', '/replay_test_cam'
    start_ns = write_run_bag(tmp_path / 'run', camera_topic, namespace)
    values = {'bag': str(tmp_path / 'run'), 'namespace': namespace, 'camera_topic': camera_topic}
    processes = bringup.processes(bringup.ReplayArgs, values, str(REPO))
    assert [p.executable for p in processes] == ['camera_node', 'inference_node', 'controller_node', 'vln_bag']
    watcher = Watcher(graph)
    keyframes, plans, commands = [], [], []
    node = watcher.node
    outputs_heard = [
        node.create_subscription(CompressedImage, f'/{namespace}/vln/keyframe', keyframes.append, RELIABLE),
        node.create_subscription(WaypointArray, f'/{namespace}/vln/waypoints', plans.append, RELIABLE),
        node.create_subscription(Twist, f'/{namespace}/cmd_vel', commands.append, RELIABLE)]
    # The stack first, then the player once this test hears the stack's outputs (the player itself waits
    # for the stack's inputs), so that the first keyframes are not missed by the test.
    started = start(processes[:-1], tmp_path)
    try:
        assert wait_for(lambda: all(s.get_publisher_count() > 0 for s in outputs_heard)
                        or any(p.poll() is not None for p in started), 60.0)
        started += start(processes[-1:], tmp_path)
        player = started[-1]
        assert wait_for(lambda: player.poll() is not None, 90.0), 'the player did not finish'
        assert wait_for(lambda: any(p.action == 'forward' for p in plans) and any(c.linear.x > 0 for c in commands),
                        20.0), (len(keyframes), len(plans), len(commands))
    finally:
        outputs = stop(started)
    assert player.returncode == 0, outputs[-1]
    assert f'/{namespace}/vln/keyframe' not in outputs[-1] and camera_topic in outputs[-1]  # the summary line
    stamps = [k.header.stamp.sec * 10**9 + k.header.stamp.nanosec for k in keyframes]
    assert len(stamps) >= 3 and all(start_ns < s <= start_ns + 3 * 10**9 for s in stamps)  # camera stamps
    with watcher.lock:  # use_sim_time: the controller's clock is the bag's (0 until its first /clock)
        clock_s = [stamp.sec + stamp.nanosec * 1e-9 for stamp, _ in watcher.statuses[f'/{namespace}/controller_node']
                   if stamp.sec or stamp.nanosec]
    assert clock_s and all(start_ns * 1e-9 <= s <= start_ns * 1e-9 + 3.0 for s in clock_s), clock_s
    assert [p.returncode for p in started[:-1]] == [0, 0, 0], outputs


def test_readme_documents_every_launch_argument():
    section = re.search(r'^## Bags and launch files\n(.*?)(?=^## |\Z)', (REPO / 'README.md').read_text(), re.M | re.S)
    assert section, 'README has no "## Bags and launch files" section'
    for argument in bringup.launch_arguments(bringup.ReplayArgs):
        assert re.search(rf'^\| `{argument.name}` \| ', section.group(1), re.M), argument.name
