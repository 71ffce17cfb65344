"""sim_node with two robots on a real graph: each namespace has its own odometry, camera and laser, and each robot
moves with its own cmd_vel only."""
from __future__ import annotations

import math
import signal
import subprocess

from conftest import wait_for

from vln_ros import interface as ri
from vln_ros.harness.processes import executable, free_port
from vln_ros.sim.api import SimClient


def test_two_robots_in_one_sim_node_each_move_only_with_their_own_cmd_vel(graph):
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image, LaserScan

    port = free_port()
    proc = subprocess.Popen([executable('sim_node'), '--ros-args', '-p', f'api_port:={port}', '-p', 'seed:=1',
                             '-p', 'robots:=[r1, r2]', '-p', 'camera.width:=160', '-p', 'camera.height:=120'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = graph.node('sim_fleet_test')
    odom: dict[str, list[Odometry]] = {'r1': [], 'r2': []}
    frames: dict[str, list[Image]] = {'r1': [], 'r2': []}
    scans: dict[str, list[LaserScan]] = {'r1': [], 'r2': []}
    for name in odom:
        node.create_subscription(Odometry, f'{name}/{ri.ODOM}', odom[name].append, ri.SENSOR_QOS)
        node.create_subscription(Image, f'{name}/{ri.SIM_CAMERA}', frames[name].append, ri.SENSOR_QOS)
        node.create_subscription(LaserScan, f'{name}/{ri.SCAN}', scans[name].append, ri.SENSOR_QOS)
    cmd = node.create_publisher(Twist, f'r2/{ri.CMD_VEL}', ri.CMD_QOS)
    try:
        assert wait_for(lambda: all(len(frames[n]) >= 2 and len(scans[n]) >= 2 and len(odom[n]) >= 5
                                    for n in odom), 30.0), (proc.poll(), {n: len(odom[n]) for n in odom})

        def moved(name: str) -> float:
            first, last = odom[name][0].pose.pose.position, odom[name][-1].pose.pose.position
            return math.hypot(last.x - first.x, last.y - first.y)

        assert moved('r1') == 0.0 and moved('r2') == 0.0
        forwards = Twist()
        forwards.linear.x = 0.3        # r2 follows r1 1.2 m behind: 0.6 m of free way between their bodies
        count_r1 = len(odom['r1'])

        def drive_r2() -> bool:
            cmd.publish(forwards)
            return moved('r2') > 0.2

        assert wait_for(drive_r2, 20.0), moved('r2')
        assert len(odom['r1']) > count_r1 and moved('r1') == 0.0
        client = SimClient.on_port(port)
        r1, r2 = client.episode(robot='r1'), client.episode(robot='r2')
        assert r1.commands == [] and len(r2.commands) > 0 and r2.distance_travelled_m > 0.15   # odometry reads 2 % long
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ''


def test_robots_that_the_first_scenes_route_cannot_hold_end_sim_node_with_one_line_naming_seeds_that_do(graph):
    """5 robots at seed 0 (a 6.2 m route holds 4): sim_node crashed with two tracebacks (the queue's ValueError,
    then destroy_node on a half-built node), so `make eval ROBOTS=5` or `sim.launch.py robots:=` of 5 could not
    start and did not say why."""
    from vln_ros.nodes.runner import EXIT_CANNOT_START

    result = subprocess.run([executable('sim_node'), '--ros-args', '-p', f'api_port:={free_port()}', '-p', 'seed:=0',
                             '-p', 'robots:=[r1, r2, r3, r4, r5]'], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_CANNOT_START, output
    assert 'Traceback' not in output and 'AttributeError' not in output, output
    assert '[sim_node] cannot start: seed 0: robot 1 of 5 would walk 1.9 m' in output, output
    assert 'choose a seed whose route holds 5 robots (seeds 1, 3, 5 from seed 0 on do)' in output, output
