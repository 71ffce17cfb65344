"""The dead-man armed with the console (issue 23, item 4): with console:=true, bringup arms controller_node's
estop_timeout_s (CONSOLE_ESTOP_TIMEOUT_S unless the parameter file arms it); console_node says `false` on
vln/estop while it lives, page or no page, so a robot nobody watches keeps going; console_node SIGKILLed (nothing
can say `true` then) -> zero cmd_vel within estop_timeout_s. The processes are the ones vln.launch.py starts with
console:=true (bringup), each its own, on a real graph."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, call_service, wait_for
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from test_controller_node import AHEAD, Robot, plan_msg

from vln_ros import bringup, interface
from vln_ros.harness.processes import executable, free_port

DEADMAN_SLACK_S = 1.0   # beyond estop_timeout_s: a control period, DDS, a loaded 2-core machine


def controller_of(args: bringup.StackArgs) -> bringup.Process:
    return next(p for p in bringup.stack(args, str(REPO)) if p.name == 'controller_node')


def test_console_true_arms_the_controllers_deadman_and_console_false_leaves_it_to_the_file():
    assert controller_of(bringup.StackArgs(console=True)).parameters['estop_timeout_s'] == \
        bringup.CONSOLE_ESTOP_TIMEOUT_S
    assert 'estop_timeout_s' not in controller_of(bringup.StackArgs()).parameters   # config/vln.yaml: 0.0 (off)


def test_a_parameter_file_that_arms_the_deadman_keeps_its_timeout_with_the_console(tmp_path: Path):
    params = tmp_path / 'vln.yaml'
    params.write_text('/**/controller_node:\n  ros__parameters:\n    estop_timeout_s: 0.7\n')
    assert 'estop_timeout_s' not in controller_of(bringup.StackArgs(console=True, params_file=str(params))).parameters


def first_zero_after(robot: Robot, t0: float) -> float | None:
    """Time of the first zero cmd_vel after t0 (monotonic), or None."""
    for t, msg in robot.since(t0):
        if Robot.is_zero(msg):
            return t
    return None


@pytest.fixture
def stack_with_console():
    """controller_node and console_node as `vln.launch.py nodes:=controller_node console:=true` starts them."""
    args = bringup.StackArgs(nodes='controller_node', console=True)
    port = free_port()
    procs: dict[str, subprocess.Popen] = {}
    for p in bringup.stack(args, str(REPO)):
        if p.name == 'console_node':
            p = p.with_parameters({'port': port})
        procs[p.name] = subprocess.Popen(p.command(executable(p.executable)), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_sigkill_of_console_node_stops_the_robot_within_the_deadmans_timeout(graph, stack_with_console):
    robot = Robot(graph)
    heartbeats: list[float] = []
    graph.node('estop_listener').create_subscription(
        Bool, interface.ESTOP, lambda m: heartbeats.append(time.monotonic()) if not m.data else None,
        interface.ESTOP_QOS)
    assert robot.ready(20.0), 'the controller did not come up'
    assert wait_for(lambda: heartbeats, 20.0), 'console_node says nothing on vln/estop with no page open'
    # A start slower than the timeout (console_node or its discovery after the controller's first step, under
    # load: seen in 2 of 9 runs here) leaves the dead-man latched; the operator releases it then, granted once
    # the controller hears the heartbeat. Not this test's business: release (bounded) as the operator would.
    assert wait_for(lambda: int(robot.diagnostics.get('estop_publishers', '0')) >= 2, 20.0), robot.diagnostics
    assert wait_for(lambda: call_service(robot.release, Trigger.Request(), 5.0).success, 10.0)
    robot.plans.publish(plan_msg(robot.node, AHEAD))
    assert robot.moving(10.0), 'the robot never moved'
    # No page is open: the console's heartbeat alone keeps the armed dead-man satisfied, beyond its timeout.
    start = time.monotonic()
    assert not wait_for(lambda: first_zero_after(robot, start) is not None,
                        bringup.CONSOLE_ESTOP_TIMEOUT_S + DEADMAN_SLACK_S), 'stopped with the console alive'

    console = stack_with_console['console_node']
    console.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    bound = bringup.CONSOLE_ESTOP_TIMEOUT_S + DEADMAN_SLACK_S
    assert wait_for(lambda: first_zero_after(robot, killed) is not None, bound + 5.0), 'never stopped'
    assert first_zero_after(robot, killed) - killed <= bound
    # Latched: still stopped, and the controller says why.
    assert wait_for(lambda: robot.diagnostics.get('stop_reason') == 'estop_deadman', 5.0)
    later = time.monotonic()
    robot.plans.publish(plan_msg(robot.node, AHEAD))
    assert not wait_for(lambda: any(not Robot.is_zero(m) for _, m in robot.since(later)), 1.0)
