"""A fleet when the server cannot keep up, and when it restarts under load, on a real graph (issue 25: "fair and
safe under overload", "a server restart under load"). Real processes: inference_node on the openai backend (one
node serving r1 and r2, or one node per robot) and a controller_node per robot, against test/openai_server.py
imitating a batching api_server. The test is each robot's camera (keyframes at a steady rate) and watches its
plans, cmd_vel and latched controller status. Every wait is bounded and generous (the machine is shared); the
assertions are on outcomes (stopped, counted, answered again), never on timings."""
from __future__ import annotations

import signal
import socket
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from openai_server import FakeOpenAIServer
from sensor_msgs.msg import CompressedImage

from vln_ros import interface
from vln_ros.harness.processes import ProcessGroup, executable, free_port
from vln_ros.msg import ControllerStatus, WaypointArray
from vln_ros.nodes.diagnostics import values_of
from vln_ros.srv import SetTask

ROBOTS = ('r1', 'r2')
SERVER = Path(__file__).with_name('openai_server.py')
# Three 1 m steps: a plan the robot is still following when it goes stale (a short one would end as plan_done).
LONG_PLAN = '{"env": "a long corridor", "act": "forward", "wp": [[1.0, 0.0, 0.0, 0.9], [1.0, 0.0, 0.0, 0.9], ' \
            '[1.0, 0.0, 0.0, 0.9]]}'
PLAN_TIMEOUT_S = 2.0   # the controllers' plan_timeout_s: an answer slower than this arrives stale
KEYFRAME_PERIOD_S = 0.2
STARTUP_S = 60.0       # node processes coming up on a loaded 2-core machine
JPEG = cv2.imencode('.jpg', np.full((64, 64, 3), 90, np.uint8))[1].tobytes()


class RobotWatch:
    """One robot as the test sees it: its camera (a keyframe every KEYFRAME_PERIOD_S, stamped now) and what its
    nodes say: plans, cmd_vel, the controller's latched status, its controller's diagnostics."""

    def __init__(self, graph, robot: str) -> None:
        self.robot = robot
        self.node = graph.node(f'watch_{robot}')
        self.lock = threading.Lock()
        self.plans: list[WaypointArray] = []
        self.commands: list[Twist] = []
        self.status: ControllerStatus | None = None
        self.diagnostics: dict[str, str] = {}            # its controller's
        self.inference_diagnostics: dict[str, str] = {}  # its inference node's (its status in a fleet's node)
        name = lambda base: interface.robot_name(robot, base)  # noqa: E731
        self.node.create_subscription(WaypointArray, name(interface.WAYPOINTS), self._keep(self.plans),
                                      interface.PLAN_QOS)
        self.node.create_subscription(Twist, name(interface.CMD_VEL), self._keep(self.commands), 50)
        self.node.create_subscription(ControllerStatus, name(interface.CONTROLLER_STATUS), self._on_status,
                                      interface.CONTROLLER_STATUS_QOS)
        self.node.create_subscription(DiagnosticArray, interface.DIAGNOSTICS, self._on_diagnostics, 50)
        self.set_client = self.node.create_client(SetTask, name(interface.SET_TASK))
        self._keyframes = self.node.create_publisher(CompressedImage, name(interface.KEYFRAME), interface.KEYFRAME_QOS)
        self.node.create_timer(KEYFRAME_PERIOD_S, self._send_keyframe)

    def _keep(self, into: list):
        def callback(msg) -> None:
            with self.lock:
                into.append(msg)
        return callback

    def _on_status(self, msg: ControllerStatus) -> None:
        with self.lock:
            self.status = msg

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            with self.lock:
                if status.name == f'/{self.robot}/controller_node':
                    self.diagnostics = values_of(status)
                elif status.name in (f'/{self.robot}/inference_node', f'/inference_node: {self.robot}'):
                    self.inference_diagnostics = values_of(status)

    def _send_keyframe(self) -> None:
        msg = CompressedImage(format='jpeg', data=JPEG)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._keyframes.publish(msg)

    def set_task(self, instruction: str) -> None:
        assert self.set_client.wait_for_service(timeout_sec=STARTUP_S), f'{self.robot}: no set_task service'
        for _ in range(5):   # a reply can be lost while discovery still matches its path: ask again
            future = self.set_client.call_async(SetTask.Request(instruction=instruction))
            if wait_for(future.done, 5.0):
                assert future.result().accepted, future.result()
                return
            self.set_client.remove_pending_request(future)
        raise AssertionError(f'{self.robot}: set_task did not answer')

    def answers(self) -> int:
        """Plans made from the model's answers (not the stop plans of a task switch or a failed request)."""
        with self.lock:
            return sum(1 for p in self.plans if p.action == 'forward')

    def mode(self) -> tuple[str, str]:
        with self.lock:
            return (self.status.mode, self.status.stop_reason) if self.status is not None else ('', '')

    def moving(self) -> bool:
        """Following a plan and commanding motion."""
        with self.lock:
            last = self.commands[-1] if self.commands else None
        return self.mode()[0] == ControllerStatus.MODE_FOLLOWING and last is not None and last.linear.x > 0.05

    def halted(self, reason: str) -> bool:
        """Stopped for `reason` (the controller's stop reason) with its last command zero."""
        with self.lock:
            last = self.commands[-1] if self.commands else None
        return self.mode()[1] == reason and last is not None and last.linear.x == 0.0

    def counter(self, name: str, node: str = 'controller') -> int:
        with self.lock:
            values = self.diagnostics if node == 'controller' else self.inference_diagnostics
            return int(values.get(name, '0'))


def ros_args(**params: object) -> list[str]:
    args = ['--ros-args', '-p', 'diagnostics_period_s:=0.2']
    for name, value in params.items():
        args += ['-p', f'{name.replace("__", ".")}:={value}']
    return args


def start_nodes(group: ProcessGroup, base_url: str, shape: str) -> None:
    """The inference side in one of fleet.launch.py's shapes (engine: one node serving both robots; api: one per
    robot namespace), and a controller_node in each robot's namespace."""
    inference = dict(backend='openai', openai__base_url=base_url, guided_json='false')
    if shape == 'engine':
        group.start('inference_node', [executable('inference_node'),
                                       *ros_args(robots=f'[{",".join(ROBOTS)}]', **inference)])
    for robot in ROBOTS:
        if shape == 'api':
            group.start(f'inference_node_{robot}', [executable('inference_node'), *ros_args(**inference),
                                                    '-r', f'__ns:=/{robot}'])
        group.start(f'controller_node_{robot}', [executable('controller_node'),
                                                 *ros_args(plan_timeout_s=PLAN_TIMEOUT_S), '-r', f'__ns:=/{robot}'])


@pytest.fixture
def processes(tmp_path):
    group = ProcessGroup(tmp_path / 'logs')
    yield group
    codes = group.stop()
    crashed = {name: code for name, code in codes.items() if code != 0 and not name.startswith('server')}
    assert not crashed, f'a node did not end cleanly: {crashed}\n{group.logs()}'
    for started in group.started.values():   # not even a thread of one on its way out
        assert 'Traceback' not in started.log.read_text(errors='replace'), group.logs(100)


def started_fleet(graph, processes, base_url: str, shape: str = 'engine') -> dict[str, RobotWatch]:
    """Both robots' stacks running, each with a task, each moving on its answers."""
    start_nodes(processes, base_url, shape)
    robots = {robot: RobotWatch(graph, robot) for robot in ROBOTS}
    for robot in robots.values():
        robot.set_task('follow the corridor')
    assert wait_for(lambda: all(r.moving() for r in robots.values()) or processes.dead(), STARTUP_S), \
        ({r: w.mode() for r, w in robots.items()}, processes.logs())
    assert not processes.dead(), processes.logs()
    return robots


@pytest.mark.parametrize('shape', ['engine', 'api'])
def test_an_overloaded_server_stops_every_robot_by_its_plan_timeout_counted_and_they_go_on_when_it_recovers(
        graph, processes, shape):
    server = FakeOpenAIServer([LONG_PLAN])
    server.repeat_last = True
    server.batching(0.1, 0.05)
    try:
        robots = started_fleet(graph, processes, server.base_url, shape)
        before = {r: w.answers() for r, w in robots.items()}
        # Saturated: each answer now takes 0.1 + 2.5 s alone and 0.1 + 2 x 2.5 s with both robots asking, either
        # longer than the plan timeout (at 1.5 s, an answer that ran alone for a while came in 1.6-2 s, fresh, and
        # a robot seen stopped moved again: a fresh-clone run under load).
        server.per_request_s = 2.5
        assert wait_for(lambda: all(w.halted('plan_stale') for w in robots.values()), 30.0), \
            {r: w.mode() for r, w in robots.items()}
        for robot, watch in robots.items():
            assert watch.mode()[0] == ControllerStatus.MODE_FAULT
            assert wait_for(lambda w=watch: w.counter('stops_plan_stale') >= 1, 10.0), (robot, watch.diagnostics)
            # A slow answer still arrives (stale: older than plan_timeout_s) and must not move the robot. Under
            # load the stop can come before the first slow answer does, so wait for one rather than assume it.
            assert wait_for(lambda w=watch, r=robot: w.answers() > before[r], 30.0), f'{robot}: no slow answer came'
            assert watch.halted('plan_stale'), f'{robot}: a stale plan moved it: {watch.mode()}'
        server.per_request_s = 0.05   # the load is gone: fresh plans again, without touching any node
        assert wait_for(lambda: all(w.moving() for w in robots.values()), 30.0), \
            {r: w.mode() for r, w in robots.items()}
        # Fairness over a window in which both are served, not since the start: with shape api each robot has a
        # node of its own, and under load one came up seconds before the other and had 10 answers to its 3.
        recovered = {r: w.answers() for r, w in robots.items()}
        assert wait_for(lambda: all(w.answers() >= recovered[r] + 5 for r, w in robots.items()), 30.0), \
            {r: w.answers() - recovered[r] for r, w in robots.items()}
        answers = {r: w.answers() - recovered[r] for r, w in robots.items()}
        print(f'answers per robot after the recovery: {answers}')  # fairness, for the report (-s): about equal
        assert min(answers.values()) >= max(answers.values()) / 3, answers
        assert not processes.dead(), processes.logs()
    finally:
        server.close()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(('127.0.0.1', port)) == 0


def log_lines(path: Path, text: str) -> int:
    return sum(1 for line in path.read_text(errors='replace').splitlines() if text in line)


@pytest.mark.parametrize('shape', ['engine', 'api'])
def test_a_server_killed_mid_request_and_restarted_stops_the_robots_and_they_go_on_without_a_node_restart(
        graph, processes, shape):
    port = free_port()
    server = [sys.executable, str(SERVER), '--port', str(port), '--base-s', '0.5', '--per-request-s', '0.1',
              '--answer', LONG_PLAN]
    processes.start('server', server)
    assert wait_for(lambda: listening(port), 30.0), processes.logs()   # up before the nodes ask: one outage only
    robots = started_fleet(graph, processes, f'http://127.0.0.1:{port}/v1', shape)
    answered = {r: w.answers() for r, w in robots.items()}
    processes.send('server', signal.SIGKILL)   # mid-request: both robots always have one in flight
    processes.started['server'].popen.wait(10.0)
    # Each failed request is a stop plan: the robots stop at once, and the failures are counted.
    assert wait_for(lambda: all(w.halted('stop_plan') for w in robots.values()), 30.0), \
        {r: w.mode() for r, w in robots.items()}
    assert wait_for(lambda: all(w.counter('backend_failures_unavailable', 'inference') >= 3
                                for w in robots.values()), 30.0), {r: w.inference_diagnostics
                                                                   for r, w in robots.items()}
    processes.start('server', server)   # again, on the same port
    assert wait_for(lambda: all(w.moving() and w.answers() > answered[r] for r, w in robots.items()), 60.0), \
        ({r: w.mode() for r, w in robots.items()}, processes.logs())
    assert not [name for name in processes.dead() if name != 'server'], processes.logs()
    # Logged once per outage (per inference process), not once per failed request.
    for name, started in processes.started.items():
        if name.startswith('inference_node'):
            served = len(ROBOTS) if shape == 'engine' else 1
            assert 1 <= log_lines(started.log, 'backend failed') <= served, started.log.read_text()[-3000:]
            assert wait_for(lambda s=started: log_lines(s.log, 'backend answers again after') >= 1, 10.0), \
                started.log.read_text()[-3000:]
    failures = {r: w.counter('backend_failures_unavailable', 'inference') for r, w in robots.items()}
    print(f'failed requests per robot during the outage: {failures}')
