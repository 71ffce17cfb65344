"""The launch files and vln_ros/bringup.py, checked without running launch: what test/test_ros2_launch.py
cannot show, or shows only where launch is installed.

Statically: each launch file takes its nodes, parameter file, remappings and arguments from
vln_ros/bringup.py and names no node itself; every argument is described; every executable is installed
both ways (setup.cfg, CMakeLists.txt); the parameter file has a section per node; config/vln.rviz shows
topics the nodes publish. bringup itself: arguments -> processes (sides, DDS transports, the backend argument,
which processes are required), its checks of the arguments and of the installed executables. Last, a bag
replayed through the processes bringup describes, started as `make demo` starts them (`Process.command`),
on bag time: the player leaves out what the stack publishes itself. The launch files themselves are
executed, with `ros2 launch`, in test/test_ros2_launch.py and test/test_colcon.py.
"""
from __future__ import annotations

import ast
import configparser
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import REPO, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
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
                'camera.launch.py': bringup.StackArgs, 'sim.launch.py': bringup.SimArgs,
                'guard.launch.py': bringup.StackArgs, 'robot.launch.py': bringup.RobotArgs,
                'fleet.launch.py': bringup.FleetArgs}
VENV_BIN = Path(sys.executable).parent
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
OUR_EXECUTABLES = ([n.executable for n in (*bringup.NODES, bringup.CONSOLE, bringup.GUARD)]
                   + [bringup.BAG_EXECUTABLE, bringup.SIM_EXECUTABLE])


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
                                           bringup.PARAMS_FILE, 'vln.yaml', *bringup.LARGE_DATA_ENV,
                                           *bringup.LARGE_DATA_ENV.values()}
    assert not hard_coded, f'{launch_file} names {hard_coded}: take it from vln_ros.bringup'
    assert not calls(tree, 'Node'), f'{launch_file}: the Node actions come from bringup.launch_actions'
    opaque = calls(tree, 'OpaqueFunction')
    assert len(opaque) == 1 and ast.unparse(opaque[0].keywords[0].value) == 'bringup.launch_actions', \
        f'{launch_file}: OpaqueFunction(function=bringup.launch_actions, args=[<its model>, ARGUMENTS, ...])'
    model = ast.unparse(next(k.value for k in opaque[0].keywords if k.arg == 'args').elts[0])
    assert model == f'bringup.{LAUNCH_FILES[launch_file].__name__}'


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
    cmake = (REPO / 'CMakeLists.txt').read_text()
    assert 'install(DIRECTORY launch config demo DESTINATION share/${PROJECT_NAME})' in cmake
    # The node name in the launch file is the section its parameters are read from.
    assert {n.name for n in (*bringup.NODES, bringup.CONSOLE, bringup.GUARD)} == set(NODE_PARAMS)
    for node in bringup.NODES:
        assert load_node_yaml(REPO / bringup.PARAMS_FILE, node.name), node.name


def test_rviz_config_shows_topics_the_nodes_publish():
    config = yaml.safe_load((REPO / bringup.RVIZ_CONFIG).read_text())
    manager = config['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'base_link'
    remapped = {source: target.replace(bringup.CAMERA, 'image') for source, target in bringup.RVIZ.remappings}
    # image: the camera driver's; the guard's markers: guard_node's (and controller_node's with guard.enabled)
    published = {t for n in (*bringup.NODES, bringup.GUARD) for t in n.publishes} | {'image'}
    shown = {d['Name']: remapped.get(d['Topic']['Value'], d['Topic']['Value'])
             for d in manager['Displays'] if 'Topic' in d}
    assert set(shown.values()) <= published, shown
    assert set(shown.values()) >= {'image', 'vln/keyframe', 'vln/path', 'vln/markers', 'vln/debug_image', 'cmd_vel'}
    assert all(not topic.startswith('/') for topic in shown.values()), 'relative, so the namespace applies'
    assert all(d['Class'].startswith('rviz_default_plugins/') for d in manager['Displays'])


# -- bringup: arguments -> processes, and its checks --------------------------------------------------------

@pytest.mark.parametrize(('model', 'values', 'named'), [
    (bringup.StackArgs, {'nodes': 'robot,camera'}, "bad launch argument: nodes: .*expected all, robot, gpu"),
    (bringup.StackArgs, {'backend': 'vllm'},
     'bad launch argument: backend: .*expected lmdeploy, openai, oracle, replay'),
    (bringup.ReplayArgs, {'bag': 'x', 'rate': '0'}, r"bad launch argument: rate: .*greater than 0 \(got '0'\)"),
])
def test_launch_arguments_are_checked_with_a_clear_message(model, values, named):
    with pytest.raises(ValueError, match=named):
        bringup.processes(model, values, '/share')


def test_the_backend_model_and_tp_arguments_override_the_parameter_file_only_when_given():
    def inference(**values: str) -> dict:
        return next(p for p in bringup.processes(bringup.StackArgs, values, '/share') if p.name == 'inference_node')

    assert inference().parameters == {'use_sim_time': False}
    given = inference(backend='openai', model='m', tp='2', params_file='/my.yaml')
    assert given.parameters == {'use_sim_time': False, 'backend': 'openai', 'model': 'm', 'lmdeploy.tp': 2}
    assert given.launch_kwargs()['parameters'] == ['/my.yaml', given.parameters]   # the dict wins over the file
    assert set(bringup.BACKENDS) == {'lmdeploy', 'openai', 'oracle', 'replay'}


def test_every_process_but_rviz2_and_the_console_is_required():
    started = bringup.processes(bringup.ReplayArgs, {'bag': 'b', 'rviz': 'true', 'console': 'true'}, '/share')
    assert {p.name: p.required for p in started} == {
        'camera_node': True, 'inference_node': True, 'controller_node': True, 'console_node': False, 'rviz2': False,
        'vln_bag_player': True}


def test_the_console_starts_only_when_asked_in_the_namespace_with_the_parameter_file():
    assert 'console_node' not in [p.name for p in bringup.processes(bringup.StackArgs, {}, '/share')]
    console = next(p for p in bringup.processes(bringup.StackArgs, {'console': 'true', 'namespace': 'dog1'}, '/share')
                   if p.name == 'console_node')
    assert (console.namespace, console.params_files) == ('dog1', ('/share/config/vln.yaml',))


def test_missing_executables_are_named_with_their_fix_before_anything_starts(tmp_path, monkeypatch):
    """What launch_actions checks before it returns a single action (ros2 launch then starts nothing)."""
    prefix = tmp_path / 'prefix'
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True)
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'vln_ros').touch()
    (prefix / 'lib' / 'vln_ros').mkdir(parents=True)
    for name in ('camera_node', 'controller_node'):
        (prefix / 'lib' / 'vln_ros' / name).touch(mode=0o755)
    monkeypatch.setenv('AMENT_PREFIX_PATH', str(prefix))
    assert bringup.missing_executables(bringup.stack(bringup.StackArgs(nodes='robot'), '/share')) == []
    problems = bringup.missing_executables(bringup.stack(bringup.StackArgs(rviz=True), '/share'))
    assert problems == [
        f'{prefix}/lib/vln_ros/inference_node is missing: build the package again (colcon build, or '
        'tools/install.sh for the venv)',
        'rviz2 is not installed (rviz:=true): install it (apt install ros-$ROS_DISTRO-rviz2) or launch without '
        'rviz:=true']


def test_sides_split_the_stack_and_the_player_leaves_out_what_the_stack_publishes():
    robot = bringup.stack(bringup.StackArgs(nodes='robot'), '/share')
    gpu = bringup.stack(bringup.StackArgs(nodes='gpu'), '/share')
    assert [p.name for p in robot] == ['camera_node', 'controller_node'] and [p.name for p in gpu] == ['inference_node']
    player = bringup.player(bringup.ReplayArgs(bag='b', nodes='robot', namespace='dog1'))
    excluded = list(player.arguments[player.arguments.index('--exclude-topics') + 1:])
    assert excluded == ['/diagnostics', '/dog1/cmd_vel', '/dog1/vln/controller_status', '/dog1/vln/keyframe']


def test_no_process_gets_dds_transports_of_its_own_and_raw_image_nodes_say_what_they_need():
    """A process given FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA alone did not hear one with the default transports
    (measured: the controller never got a plan): every process inherits the graph's."""
    started = bringup.processes(bringup.ReplayArgs, {'bag': 'b', 'rviz': 'true'}, '/share')
    assert all(p.env == {} and p.launch_kwargs()['additional_env'] == {} for p in started)
    note = bringup.transport_note(started, {})
    assert note and note.startswith("camera_node, inference_node, rviz2: raw images") and 'LARGE_DATA' in note
    assert bringup.transport_note(started, bringup.LARGE_DATA_ENV) is None
    assert bringup.transport_note(started, {'FASTDDS_DEFAULT_PROFILES_FILE': '/robot.xml'}) is None
    assert bringup.transport_note(bringup.stack(bringup.StackArgs(nodes='controller_node'), '/share'), {}) is None


# -- a fleet: robot.launch.py on each robot, fleet.launch.py on the server --------------------------------

def fleet(**values: str) -> list[bringup.Process]:
    return bringup.processes(bringup.FleetArgs, values, '/share')


def test_the_robot_launch_starts_the_robot_side_in_its_namespace_and_the_guard_only_when_asked():
    def robot(**values: str) -> list[tuple[str, str]]:
        started = bringup.processes(bringup.RobotArgs, {**values, **bringup.ROBOT_ONLY}, '/share')
        return [(p.name, p.namespace) for p in started]

    assert robot(namespace='r1') == [('camera_node', 'r1'), ('controller_node', 'r1')]
    assert robot(namespace='/r1', guard='true') == [('camera_node', 'r1'), ('controller_node', 'r1'),
                                                    ('guard_node', 'r1')]
    assert [(p.name, p.namespace) for p in bringup.processes(bringup.StackArgs, {
        'nodes': 'robot,guard_node', 'namespace': 'r1'}, '/share')] == robot(namespace='r1', guard='true')
    with pytest.raises(ValueError, match=r"bad launch argument: namespace: .*robot namespace 'r-1' is not a ROS "):
        robot(namespace='r-1')


def test_the_engine_shape_is_one_inference_node_in_the_root_namespace_serving_every_robot():
    (server,) = fleet(robots='r1, r2,/r3', model='/m', tp='2')
    assert (server.name, server.namespace, server.remappings) == ('inference_node', '', ())
    assert server.parameters == {'use_sim_time': False, 'model': '/m', 'lmdeploy.tp': 2, 'robots': ('r1', 'r2', 'r3')}
    # launch_ros writes the dict to a parameter file (a string array); make demo's command line says it as YAML
    assert server.launch_kwargs()['parameters'] == ['/share/config/vln.yaml', {
        'use_sim_time': False, 'model': '/m', 'lmdeploy.tp': 2, 'robots': ['r1', 'r2', 'r3']}]
    assert '-p' in server.command('x') and 'robots:=[r1, r2, r3]' in server.command('x')


def test_the_api_shape_is_one_openai_inference_node_per_robot_namespace():
    started = fleet(robots='r1,r2', shape='api', openai_url='http://gpu:8000/v1')
    assert [(p.name, p.namespace) for p in started] == [('inference_node', 'r1'), ('inference_node', 'r2')]
    for process in started:
        assert process.parameters == {'use_sim_time': False, 'backend': 'openai',
                                      'openai.base_url': 'http://gpu:8000/v1'}
        assert '-r' in process.command('x') and f'__ns:=/{process.namespace}' in process.command('x')
    # without openai_url, the parameter file's openai.base_url
    assert all('openai.base_url' not in p.parameters for p in fleet(robots='r1', shape='api'))


def test_a_fleet_with_the_robot_side_starts_each_robots_nodes_in_its_namespace():
    started = fleet(robots='r1,r2', nodes='all', camera_topic='camera/image_raw')
    assert [(p.name, p.namespace) for p in started] == [
        ('camera_node', 'r1'), ('camera_node', 'r2'), ('inference_node', ''), ('controller_node', 'r1'),
        ('controller_node', 'r2')]
    # a relative camera topic stays relative: each camera_node reads its own robot's camera
    assert started[0].remappings == (('image', 'camera/image_raw'), ('image/compressed', 'camera/image_raw/compressed'))
    assert [p.namespace for p in fleet(robots='r1,r2', nodes='robot', shape='api')] == ['r1', 'r2', 'r1', 'r2']



def test_a_simulated_world_with_robots_has_one_sim_node_and_a_stack_in_each_robots_namespace():
    started = bringup.processes(bringup.SimArgs, {'robots': 'r1, /r2', 'api_port': '9000', 'seed': '4'}, '/share')
    assert [(p.name, p.namespace) for p in started] == [
        ('sim_node', ''), ('camera_node', 'r1'), ('inference_node', 'r1'), ('controller_node', 'r1'),
        ('camera_node', 'r2'), ('inference_node', 'r2'), ('controller_node', 'r2')]
    assert started[0].parameters == {'seed': 4, 'speed': 1.0, 'api_port': 9000, 'robots': ('r1', 'r2')}
    # each oracle answers from its own robot's ground truth, through the one simulator
    assert [p.parameters.get('oracle.robot') for p in started if p.name == 'inference_node'] == ['r1', 'r2']
    assert all(p.parameters['oracle.url'] == 'http://127.0.0.1:9000' for p in started if p.name == 'inference_node')
    assert all(p.parameters['use_sim_time'] is True for p in started[1:])
    # another backend asks its model for every robot: no oracle.robot
    assert not any('oracle.robot' in p.parameters for p in bringup.processes(
        bringup.SimArgs, {'robots': 'r1', 'backend': 'replay'}, '/share'))
    # without robots: one robot, as before
    assert [p.namespace for p in bringup.processes(bringup.SimArgs, {}, '/share')] == ['', '', '', '']


def test_a_simulated_world_in_shape_engine_has_one_inference_node_serving_every_robot():
    started = bringup.processes(bringup.SimArgs, {'robots': 'r1,r2', 'shape': 'engine', 'api_port': '9000'}, '/share')
    assert [(p.name, p.namespace) for p in started] == [
        ('sim_node', ''), ('inference_node', ''), ('camera_node', 'r1'), ('controller_node', 'r1'),
        ('camera_node', 'r2'), ('controller_node', 'r2')]
    (server,) = [p for p in started if p.name == 'inference_node']
    # the node's parameter robots makes a client per robot; the oracle's client asks for that robot's ground truth
    assert server.parameters['robots'] == ('r1', 'r2') and 'oracle.robot' not in server.parameters
    assert server.parameters['oracle.url'] == 'http://127.0.0.1:9000' and server.parameters['use_sim_time'] is True
    # nodes:= still chooses: without the inference node there is none in the root either
    assert [p.name for p in bringup.processes(bringup.SimArgs, {'robots': 'r1', 'shape': 'engine',
                                                                'nodes': 'robot'}, '/share')] == [
        'sim_node', 'camera_node', 'controller_node']


@pytest.mark.parametrize(('values', 'named'), [
    ({'robots': 'r1,r1'}, r"robots: .*'r1' is listed twice"),
    ({'robots': 'r1,,r2'}, r"robots: .*an empty name"),
    ({'robots': 'r1', 'namespace': 'site'}, r"robots: .*robots with namespace 'site': the robots are the namespaces"),
    ({'robots': ','.join(f'r{i}' for i in range(9))}, r'robots: .*at most 8 robots in one world'),
    ({'shape': 'engine'}, r'shape: .*shape engine without robots'),
    ({'robots': 'r1,r2', 'shape': 'engine', 'backend': 'replay'}, r"shape: .*shape engine with backend 'replay'"),
    ({'robots': 'r1,r2', 'shape': 'both'}, r"shape: .*'api' or 'engine' \(got 'both'\)"),
])
def test_a_simulated_worlds_robots_are_checked_naming_the_bad_value(values, named):
    with pytest.raises(ValueError, match=f'bad launch argument: {named}'):
        bringup.processes(bringup.SimArgs, values, '/share')

@pytest.mark.parametrize(('values', 'named'), [
    ({'robots': ''}, r"robots: .*name at least one robot namespace"),
    ({'robots': ' , '}, r"robots: .*name at least one robot namespace"),
    ({'robots': 'r1,,r2'}, r"robots: .*robots 'r1,,r2': an empty name"),
    ({'robots': 'r1,r2,'}, r"robots: .*robots 'r1,r2,': an empty name"),
    ({'robots': 'r1,r2,r1'}, r"robots: .*'r1' is listed twice"),
    ({'robots': 'r1,/r1'}, r"robots: .*'r1' is listed twice"),
    ({'robots': 'r1,2r'}, r"robots: .*robot namespace '2r' is not a ROS namespace"),
    ({'robots': 'dog-1'}, r"robots: .*robot namespace 'dog-1' is not a ROS namespace"),
    ({'robots': 'site//r1'}, r"robots: .*robot namespace 'site//r1' is not a ROS namespace"),
    ({'robots': 'r1/'}, r"robots: .*robot namespace 'r1/' is not a ROS namespace"),
    ({'robots': 'r1', 'shape': 'both'}, r"shape: .*'engine' or 'api' \(got 'both'\)"),
    ({'robots': 'r1', 'shape': 'api', 'backend': 'lmdeploy'}, r"shape: .*shape api with backend 'lmdeploy'"),
    ({'robots': 'r1', 'shape': 'api', 'tp': '2'}, r"shape: .*shape api with tp 2: the api_server has the GPUs"),
    ({'robots': 'r1', 'namespace': 'site'}, r"namespace: .*a fleet has no namespace of its own"),
    ({'robots': 'r1', 'nodes': 'robots'}, r"nodes: .*expected all, robot, gpu"),
    ({}, r"robots: Field required"),
])
def test_fleet_arguments_are_checked_naming_the_bad_value(values, named):
    with pytest.raises(ValueError, match=f'bad launch argument: {named}'):
        fleet(**values)


# -- a bag through the processes bringup describes, started as `make demo` starts them ------------------

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
    """Keeps /diagnostics statuses by name (the header stamp too)."""

    def __init__(self, graph) -> None:
        self.node = graph.node('launch_watcher')
        self.lock = threading.Lock()
        self.statuses: dict[str, list] = {}
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 100)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                self.statuses.setdefault(status.name, []).append((msg.header.stamp, status))


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
