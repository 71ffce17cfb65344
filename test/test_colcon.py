"""The ROS-native path: `colcon build` of this package in a scratch workspace against the venv's ROS 2,
then the executables it installs under install/lib/vln_ros start and answer on the graph, and `ros2 launch`
runs the stack from the install after `. install/setup.bash` (the venv as the underlay a ROS 2 install is)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, wait_for
from test_executables import start_and_stop
from test_ros2_launch import (
    ACTIVATE,
    LAUNCH_MISSING,
    NODE_NAMES,
    STARTUP_S,
    Launch,
    environment,
    nodes_on_graph,
    params_file,
    stop_cleanly,
)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    if shutil.which('colcon', path=os.path.dirname(sys.executable)) is None:
        pytest.fail('colcon is not in the venv: run tools/install.sh')
    ws = tmp_path_factory.mktemp('colcon_ws')
    (ws / 'src').mkdir()
    (ws / 'src' / 'vln_ros').symlink_to(REPO)
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, CMAKE_PREFIX_PATH=sys.prefix,
               PATH=f'{os.path.dirname(sys.executable)}:{os.environ["PATH"]}')
    result = subprocess.run(
        ['colcon', 'build', '--event-handlers', 'console_cohesion+', '--cmake-args',
         f'-DPython3_EXECUTABLE={sys.executable}', '-DBUILD_TESTING=OFF'],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return ws, env, result.stdout + result.stderr


def test_colcon_build_log_has_no_error_lines(workspace):
    _, _, log = workspace
    errors = [line for line in log.splitlines() if re.search(r'(^|[^_\w-])[Ee]rror[:\s]', line)]
    assert not errors, errors
    assert 'Finished <<< vln_ros' in log


def installed_sources(ws):
    return ws / 'install' / 'vln_ros' / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}' \
        / 'site-packages' / 'vln_ros'


def test_installed_package_has_interfaces_sources_and_executables(workspace):
    ws, _, _ = workspace
    site = installed_sources(ws)
    for path in ('msg/_waypoint_array.py', 'srv/_set_task.py', 'core/keyframe.py', 'nodes/camera_node.py'):
        assert (site / path).is_file(), path
    assert (ws / 'install' / 'vln_ros' / 'share' / 'vln_ros' / 'config' / 'vln.yaml').is_file()
    for executable in ('camera_node', 'inference_node', 'controller_node', 'vln_bag'):
        assert os.access(ws / 'install' / 'vln_ros' / 'lib' / 'vln_ros' / executable, os.X_OK), executable


def test_the_robot_install_carries_no_development_code(workspace):
    ws, _, _ = workspace
    site = installed_sources(ws)
    assert (site / 'sim' / '__init__.py').is_file() and (site / 'console' / '__init__.py').is_file()
    assert [name for name in ('demo', 'eval', 'harness') if (site / name).exists()] == []


@pytest.mark.parametrize('node', ['camera_node', 'controller_node'])
def test_installed_executables_start_and_answer(workspace, graph, node):
    ws, env, _ = workspace
    script = (f'cd {ws} && . install/setup.bash && python -c "import vln_ros.nodes.{node} as m; '
              f"assert m.__file__.startswith('{ws}/install'), m.__file__\" && "
              f'exec {ws}/install/vln_ros/lib/vln_ros/{node} --ros-args --params-file '
              f'{ws}/install/vln_ros/share/vln_ros/config/vln.yaml')
    seen, _ = start_and_stop(graph, ['bash', '-c', script], f'/{node}', env=env)
    assert seen[0].hardware_id == node


def test_installed_bag_tool_runs(workspace):
    ws, env, _ = workspace
    result = subprocess.run(['bash', '-c', f'cd {ws} && . install/setup.bash && install/vln_ros/lib/vln_ros/vln_bag '
                             'play /nonexistent'], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and 'vln_bag play: cannot read bag /nonexistent' in result.stderr, result.stderr


@pytest.mark.skipif(bool(LAUNCH_MISSING), reason=LAUNCH_MISSING or 'runs')
def test_ros2_launch_runs_the_stack_from_the_colcon_install(workspace, graph, tmp_path):
    ws, _, _ = workspace
    underlay = f'. {ACTIVATE} && ' if ACTIVATE.is_file() else ''   # a ROS 2 install: its setup.bash, sourced already
    file = params_file(tmp_path / 'p.yaml')
    launch = Launch(['bash', '-c', f'{underlay}cd {ws} && . install/setup.bash && exec "$@"', 'bash',
                     'ros2', 'launch', 'vln_ros', 'vln.launch.py', 'namespace:=colcon', f'params_file:={file}'],
                    environment(tmp_path, keep_prefix=not underlay), tmp_path / 'launch.log')
    try:
        watcher = graph.node('colcon_watcher')
        assert wait_for(lambda: set(NODE_NAMES) <= nodes_on_graph(watcher, '/colcon') or launch.proc.poll() is not None,
                        STARTUP_S), launch.output()
        executables = {name: launch.handles[pid].cmdline()[1] for name, pid in launch.started().items()}
        assert executables == {name: f'{ws}/install/vln_ros/lib/vln_ros/{name}' for name in NODE_NAMES}, executables
        stop_cleanly(launch, NODE_NAMES)
    finally:
        launch.close()
