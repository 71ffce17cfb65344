"""sim_node as a process on a real graph: /clock, camera, laser, odometry and cmd_vel as a robot offers them, the
side channel's replies and refusals, /diagnostics, and a clean exit on SIGINT."""
from __future__ import annotations

import json
import signal
import socket
import subprocess

import pytest
from conftest import wait_for

from vln_ros import interface as ri
from vln_ros.harness.processes import executable, free_port
from vln_ros.sim.api import ORACLE, OracleRequest, SimApiError, SimClient


def refused(call) -> int:
    """The status of the side channel's refusal of call()."""
    with pytest.raises(SimApiError) as refusal:
        call()
    return refusal.value.status


@pytest.fixture
def sim(graph):
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, LaserScan

    port = free_port()
    proc = subprocess.Popen([executable('sim_node'), '--ros-args', '-p', f'api_port:={port}', '-p', 'seed:=1',
                             '-p', 'camera.width:=320', '-p', 'camera.height:=240', '-p', 'depth.enabled:=true'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = graph.node('sim_test')
    heard = {'clock': [], 'image': [], 'odom': [], 'diag': [], 'scan': [], 'depth': [], 'depth_info': []}
    node.create_subscription(Clock, ri.CLOCK, heard['clock'].append, 10)
    node.create_subscription(Image, ri.SIM_CAMERA, heard['image'].append, ri.SENSOR_QOS)
    node.create_subscription(Odometry, ri.ODOM, heard['odom'].append, ri.SENSOR_QOS)
    node.create_subscription(LaserScan, ri.SCAN, heard['scan'].append, ri.SENSOR_QOS)
    node.create_subscription(Image, ri.GUARD_DEPTH, heard['depth'].append, ri.SENSOR_QOS)
    node.create_subscription(CameraInfo, ri.GUARD_DEPTH_INFO, heard['depth_info'].append, ri.SENSOR_QOS)
    node.create_subscription(DiagnosticArray, ri.DIAGNOSTICS,
                             lambda m: heard['diag'].extend(s for s in m.status if s.name == '/sim_node'), 10)
    cmd = node.create_publisher(Twist, ri.CMD_VEL, ri.CMD_QOS)
    try:
        assert wait_for(lambda: len(heard['image']) >= 3 and len(heard['diag']) >= 1, 30.0), proc.poll()
        yield SimClient.on_port(port), heard, cmd, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_clock_camera_and_odometry_come_as_from_a_robot(sim):
    _, heard, _, _ = sim
    image = heard['image'][-1]
    assert (image.width, image.height, image.encoding) == (320, 240, 'bgr8') and len(image.data) == 320 * 240 * 3
    clock = [c.clock.sec + c.clock.nanosec * 1e-9 for c in heard['clock']]
    assert clock == sorted(clock) and clock[-1] > 0.5, clock[:30]
    assert image.header.stamp.sec + image.header.stamp.nanosec * 1e-9 <= clock[-1]   # stamped at capture
    assert heard['odom'][-1].header.frame_id == 'odom'
    values = {kv.key: kv.value for kv in heard['diag'][-1].values}
    assert 0.5 < float(values['real_time_factor']) < 1.5 and values['seed'] == '1'


def test_the_laser_scans_at_rate_hz_of_simulated_time_in_its_frame_and_sees_the_start_pose_truly(sim):
    import numpy as np

    from vln_ros.sim import scenes
    from vln_ros.sim.laser import Laser
    from vln_ros.sim.params import LaserParams
    _, heard, _, _ = sim
    assert wait_for(lambda: len(heard['scan']) >= 20, 15.0), len(heard['scan'])
    scans = list(heard['scan'])
    stamps = [s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 for s in scans]
    assert stamps == sorted(stamps)
    rate_hz = (len(scans) - 1) / (stamps[-1] - stamps[0])          # per second of simulated time (the stamps)
    assert 13.5 < rate_hz < 16.5, rate_hz
    scan, laser = scans[-1], Laser(LaserParams())
    assert scan.header.frame_id == 'laser' and len(scan.ranges) == laser.geometry.count == 541
    assert (scan.angle_min, scan.angle_increment) == pytest.approx((-0.75 * np.pi, np.radians(0.5)))
    assert (scan.range_min, scan.range_max) == pytest.approx((0.05, 8.0))
    truth = laser.true_ranges(scenes.generate(1), scenes.generate(1).start)   # the robot has not moved
    ranges, near = np.asarray(scan.ranges), truth <= 8.0
    assert near.sum() > 100 and np.abs(ranges[near] - truth[near]).max() <= 0.03 + 1e-4
    assert np.isposinf(ranges[~near]).all()


def test_the_depth_camera_publishes_what_the_guards_depth_source_reads_with_its_defaults(sim):
    from vln_ros.core.guard_sources import CameraModel, DepthParams, depth_to_points
    _, heard, _, _ = sim
    assert wait_for(lambda: len(heard['depth']) >= 5 and len(heard['depth_info']) >= 5, 15.0), len(heard['depth'])
    image, info = heard['depth'][-1], heard['depth_info'][-1]
    assert (image.width, image.height, image.encoding) == (160, 120, '32FC1')
    assert image.header.frame_id == info.header.frame_id == 'camera_depth_optical_frame'
    stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in heard['depth'][-5:]}
    assert stamps <= {(m.header.stamp.sec, m.header.stamp.nanosec) for m in heard['depth_info']}   # paired
    points = depth_to_points(image, CameraModel(info), DepthParams(enabled=True))
    assert len(points) > 100


def test_cmd_vel_moves_the_robot_and_the_episode_records_it(sim):
    from geometry_msgs.msg import Twist
    client, heard, cmd, _ = sim
    twist = Twist()
    twist.linear.x = 0.3

    def moved() -> bool:
        cmd.publish(twist)
        return heard['odom'][-1].pose.pose.position.x > 0.2
    assert wait_for(moved, 15.0, poll_s=0.05)
    episode = client.episode()
    assert episode.commands and max(c[1] for c in episode.commands) == pytest.approx(0.3)
    assert episode.trajectory[-1][4] > 0.1 and episode.collisions == 0


def test_the_side_channel_resets_answers_and_refuses_clearly(sim):
    client, heard, _, _ = sim
    scene = client.reset(7)
    assert scene.seed == 7 and scene.instruction and scene.shortest_path_m > 1.0
    assert wait_for(lambda: heard['image'][-1].header.stamp.sec + heard['image'][-1].header.stamp.nanosec * 1e-9
                    > scene.now_s, 10.0)
    image = heard['image'][-1]
    stamp_ns = image.header.stamp.sec * 10**9 + image.header.stamp.nanosec
    answer = client.oracle(OracleRequest(stamp_ns=stamp_ns, latency_s=0.3))
    assert json.loads(answer.text)['act'] in ('forward', 'turn_left', 'turn_right')
    assert refused(lambda: client.oracle(OracleRequest(stamp_ns=1))) == 409            # before this episode
    assert refused(lambda: client.send('POST', ORACLE.path, b'{"latency_s": 0.3}')) == 400   # no stamp
    assert refused(lambda: client.send('POST', ORACLE.path, json.dumps({
        'stamp_ns': stamp_ns, 'fault_malformed': 0.8, 'fault_wrong_direction': 0.8}).encode())) == 400  # over 100 %
    assert refused(lambda: client.send('GET', '/nothing')) == 404
    assert client.fault(camera_frozen=True).camera_frozen
    frames = len(heard['image'])
    assert not wait_for(lambda: len(heard['image']) > frames + 1, 1.5)   # frozen: no new frames


def test_a_side_channel_port_in_use_fails_start_up_naming_the_fix():
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([executable('sim_node'), '--ros-args', '-p', f'api_port:={port}'],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert (f'cannot serve the side channel on 127.0.0.1:{port} (Address already in use); choose another api_port'
            in done.stdout + done.stderr)


def test_sigint_ends_it_cleanly(sim):
    _, _, _, proc = sim
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
