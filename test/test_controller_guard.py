"""The collision guard as the last stage of controller_node, on a real graph: the real controller_node
executable with guard.enabled and a laser, a test node publishing LaserScans at 20 Hz and watching cmd_vel
and vln/guard_status. Timing bounds are generous (2-core CI); guard.enabled false is
test_controller_node.py's business (nothing changes)."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from conftest import call_service, wait_for
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2, PointField
from test_controller_node import AHEAD, Robot, controller, plan_msg  # noqa: F401  (controller: the fixture)

from vln_ros import interface
from vln_ros.msg import GuardStatus

GUARD = {'guard.enabled': True}          # a laser on `scan`, frame 'laser', 0.3 m circle, stop within 0.05 m
BEAMS = 271                               # 270 deg at 1 deg
ANGLE_MIN = -0.75 * math.pi
INCREMENT = 1.5 * math.pi / (BEAMS - 1)
OBSTACLE_AHEAD_M = 0.32                   # 0.02 m from the 0.3 m footprint: inside the stop zone


def free_ranges() -> list[float]:
    return [math.inf] * BEAMS             # REP 117: nothing within range


def obstacle_ranges(distance_m: float = OBSTACLE_AHEAD_M) -> list[float]:
    ranges = free_ranges()
    middle = BEAMS // 2                   # straight ahead
    for i in range(middle - 3, middle + 4):
        ranges[i] = distance_m
    return ranges


class Laser:
    """A LaserScan stream at 20 Hz from the test's graph; `ranges`, `frame_id` and the geometry are whatever
    the test sets next (None: silent). Remembers when the first message of each content went out."""

    def __init__(self, graph, period_s: float = 0.05) -> None:
        self.node = graph.node('laser')
        self.pub = self.node.create_publisher(LaserScan, interface.SCAN, interface.SENSOR_QOS)
        self._lock = threading.Lock()
        self._scan: dict | None = None
        self._sent_first: float | None = None
        self.node.create_timer(period_s, self._tick)

    def send(self, ranges: list[float] | None, frame_id: str = 'laser', increment: float = INCREMENT) -> None:
        with self._lock:
            self._scan = None if ranges is None else {'ranges': ranges, 'frame_id': frame_id,
                                                      'increment': increment}
            self._sent_first = None

    def first_sent(self) -> float | None:
        with self._lock:
            return self._sent_first

    def _tick(self) -> None:
        with self._lock:
            scan = self._scan
            if scan is None:
                return
            msg = LaserScan(angle_min=ANGLE_MIN, angle_increment=scan['increment'], range_min=0.05, range_max=8.0,
                            ranges=scan['ranges'])
            msg.angle_max = ANGLE_MIN + scan['increment'] * (len(scan['ranges']) - 1)
            msg.header.frame_id = scan['frame_id']
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.pub.publish(msg)
            if self._sent_first is None:
                self._sent_first = time.monotonic()


class StatusWatch:
    def __init__(self, graph) -> None:
        self.node = graph.node('guard_watch')
        self.seen: list[GuardStatus] = []
        self.node.create_subscription(GuardStatus, interface.GUARD_STATUS, self.seen.append,
                                      interface.GUARD_STATUS_QOS)

    def last(self) -> GuardStatus | None:
        return self.seen[-1] if self.seen else None


def guarded_robot(graph, controller, laser: Laser, cmd_type=Twist, **params) -> Robot:  # noqa: F811
    """A controller with the guard following a 10 m plan straight ahead, the laser seeing nothing."""
    controller(**GUARD, **params)
    robot = Robot(graph, cmd_type)
    laser.send(free_ranges())
    assert robot.ready()
    robot.plans.publish(plan_msg(robot.node, AHEAD))
    assert robot.moving(10.0)
    return robot


def stamp_s(msg: TwistStamped) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def stopped_since(robot: Robot, t0: float, timeout_s: float) -> float | None:
    """Seconds from t0 to the first zero command after it (None if none within timeout_s)."""
    return robot.stopped_after(t0, timeout_s)


def never_forward(robot: Robot, t0: float) -> bool:
    return all(robot.vx(m) <= 0.0 for _, m in robot.since(t0))


def test_an_obstacle_in_the_stop_zone_stops_the_robot_and_it_moves_again_when_gone(graph, controller):  # noqa: F811
    laser = Laser(graph)
    status = StatusWatch(graph)
    robot = guarded_robot(graph, controller, laser)
    laser.send(obstacle_ranges())
    assert wait_for(lambda: laser.first_sent() is not None, 2.0)
    sent = laser.first_sent()
    took = stopped_since(robot, sent, 2.0)
    # One scan, one control period (20 ms), delivery on a loaded 2-core machine.
    assert took is not None and took < 0.3, took
    time.sleep(0.5)
    assert never_forward(robot, sent + took)   # held while the obstacle stands there
    assert wait_for(lambda: status.last() is not None and status.last().action == 'stop', 3.0), status.last()
    stop = status.last()
    assert stop.source == 'laser' and stop.scale == 0.0
    assert stop.nearest_m == pytest.approx(OBSTACLE_AHEAD_M - 0.3, abs=0.01)
    assert abs(stop.bearing_rad) <= math.radians(3.5)   # straight ahead (one of the 7 beams at the obstacle)
    assert wait_for(lambda: robot.diagnostics.get('guard_action') == 'stop', 3.0), robot.diagnostics

    laser.send(free_ranges())
    assert robot.moving(5.0)
    assert wait_for(lambda: status.last().action == 'free', 3.0), status.last()


def test_the_speed_comes_back_within_the_acceleration_limit_after_a_guard_stop(graph, controller):  # noqa: F811
    laser = Laser(graph)
    robot = guarded_robot(graph, controller, laser, TwistStamped, max_accel_x=0.5, cmd_vel_stamped=True)
    laser.send(obstacle_ranges())
    assert wait_for(lambda: laser.first_sent() is not None, 2.0)
    assert stopped_since(robot, laser.first_sent(), 2.0) is not None
    time.sleep(0.5)
    t0 = time.monotonic()
    laser.send(free_ranges())
    assert robot.moving(5.0)
    cmds = [(stamp_s(m), robot.vx(m)) for _, m in robot.since(t0)]
    # At most 0.5 m/s^2 between the steps' stamps (a jump to the control law's 0.5 m/s would be one step).
    assert all(vb - va <= 0.5 * (tb - ta) + 1e-4 for (ta, va), (tb, vb) in zip(cmds, cmds[1:], strict=False)), cmds
    assert max(v for _, v in cmds) > 0.2


def test_a_laser_that_never_publishes_keeps_the_robot_stopped(graph, controller):  # noqa: F811
    controller(**GUARD)
    robot = Robot(graph)
    status = StatusWatch(graph)
    assert robot.ready()
    t0 = time.monotonic()
    robot.plans.publish(plan_msg(robot.node, AHEAD))
    assert wait_for(lambda: len(robot.since(t0)) >= 50, 5.0)   # a second of commands: all zero
    assert all(robot.is_zero(m) for _, m in robot.since(t0))
    assert wait_for(lambda: status.last() is not None, 3.0)
    last = status.last()
    assert (last.action, last.source) == ('stop', 'laser') and 'no message received yet' in last.reason, last
    assert robot.diagnostics.get('guard_action') == 'stop', robot.diagnostics


def test_a_laser_that_goes_silent_stops_the_robot_within_its_timeout(graph, controller):  # noqa: F811
    laser = Laser(graph)
    robot = guarded_robot(graph, controller, laser, **{'guard.laser.timeout_s': 0.5})
    laser.send(None)
    t0 = time.monotonic()
    took = stopped_since(robot, t0, 3.0)
    assert took is not None and took < 0.5 + 0.4, took
    time.sleep(0.3)
    assert all(robot.is_zero(m) for _, m in robot.since(t0 + took))


@pytest.mark.parametrize('bad, counter', [
    ({'ranges': [math.nan] * BEAMS}, 'guard_rejected_laser_no_valid_points'),
    ({'ranges': obstacle_ranges(5.0), 'frame_id': 'base_link'}, 'guard_rejected_laser_wrong_frame'),
    # 2,000 beams at 1 deg: more than a turn, the angles do not belong to these ranges
    ({'ranges': [math.inf] * 2000}, 'guard_rejected_laser_bad_geometry'),
])
def test_bad_scans_are_counted_and_never_move_the_robot_toward_the_obstacle(graph, controller, bad, counter):  # noqa: F811
    laser = Laser(graph)
    robot = guarded_robot(graph, controller, laser)
    laser.send(obstacle_ranges())
    assert wait_for(lambda: laser.first_sent() is not None, 2.0)
    stopped = stopped_since(robot, laser.first_sent(), 2.0)
    assert stopped is not None
    t0 = laser.first_sent() + stopped
    laser.send(**bad)     # the obstacle still stands there; the sensor now sends nonsense
    assert wait_for(lambda: int(robot.diagnostics.get(counter, '0')) >= 3, 5.0), robot.diagnostics
    assert never_forward(robot, t0)
    assert robot.diagnostics.get('guard_action') == 'stop'



def test_a_laser_that_starts_sending_nonsense_stops_a_moving_robot(graph, controller):  # noqa: F811
    laser = Laser(graph)
    robot = guarded_robot(graph, controller, laser)
    laser.send([math.nan] * BEAMS)            # nothing measured: not evidence of free space
    assert wait_for(lambda: laser.first_sent() is not None, 2.0)
    took = stopped_since(robot, laser.first_sent(), 2.0)
    assert took is not None and took < 0.3, took
    assert wait_for(lambda: robot.diagnostics.get('guard_reason', '').startswith('laser: last message rejected'),
                    3.0), robot.diagnostics

def test_a_live_change_of_the_stop_margin_applies_and_the_guards_sources_stay_fixed(graph, controller):  # noqa: F811
    laser = Laser(graph)
    robot = guarded_robot(graph, controller, laser, **{'guard.time_before_collision_s': 0.0})
    laser.send(obstacle_ranges(0.5))          # 0.2 m from the footprint: the slowdown zone (0.3 m), not the stop
    assert wait_for(lambda: robot.diagnostics.get('guard_action') == 'slowdown', 5.0), robot.diagnostics
    client = robot.node.create_client(SetParameters, '/controller_node/set_parameters')
    reply = call_service(client, SetParameters.Request(parameters=[
        Parameter('guard.stop_margin_m', value=0.25).to_parameter_msg()]), timeout_s=5.0)
    assert reply.results[0].successful, reply
    t0 = time.monotonic()
    assert stopped_since(robot, t0, 2.0) is not None
    assert wait_for(lambda: robot.diagnostics.get('guard_action') == 'stop', 3.0), robot.diagnostics
    reply = call_service(client, SetParameters.Request(parameters=[
        Parameter('guard.laser.topic', value='other').to_parameter_msg()]), timeout_s=5.0)
    assert not reply.results[0].successful and 'fixed while the node runs' in reply.results[0].reason


def cloud_msg(ahead_m: float) -> PointCloud2:
    """A wall of points `ahead_m` in front of the lidar (frame 'lidar', at the base origin), 0.2 m up."""
    ys = np.linspace(-0.5, 0.5, 101, dtype=np.float32)
    xyz = np.stack([np.full_like(ys, ahead_m), ys, np.full_like(ys, 0.2)], axis=1)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate('xyz')]
    msg = PointCloud2(height=1, width=len(xyz), fields=fields, is_bigendian=False, point_step=12,
                      row_step=12 * len(xyz), data=xyz.tobytes(), is_dense=True)
    msg.header.frame_id = 'lidar'
    return msg


def depth_msgs(ahead_m: float) -> list:
    """The CameraInfo and a 32FC1 depth image of a wall `ahead_m` in front of the camera (default mount:
    optical frame 0.3 m up, looking forward)."""
    width, height = 64, 48
    image = Image(width=width, height=height, encoding='32FC1', is_bigendian=0, step=4 * width,
                  data=np.full((height, width), ahead_m, np.float32).tobytes())
    info = CameraInfo(width=width, height=height, k=[50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0])
    image.header.frame_id = info.header.frame_id = 'camera_depth_optical_frame'
    return [info, image]


@pytest.mark.parametrize('source', ['pointcloud', 'depth'])
def test_a_point_cloud_or_a_depth_camera_stops_the_robot_as_a_laser_does(graph, controller, source):  # noqa: F811
    node = graph.node('sensor')
    if source == 'pointcloud':
        pubs = [node.create_publisher(PointCloud2, interface.GUARD_POINTS, interface.SENSOR_QOS)]
        make = lambda ahead_m: [cloud_msg(ahead_m)]  # noqa: E731
    else:
        pubs = [node.create_publisher(CameraInfo, interface.GUARD_DEPTH_INFO, interface.SENSOR_QOS),
                node.create_publisher(Image, interface.GUARD_DEPTH, interface.SENSOR_QOS)]
        make = depth_msgs
    ahead = {'m': 5.0, 'first_sent': None}

    def tick() -> None:
        for pub, msg in zip(pubs, make(ahead['m']), strict=True):
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
        if ahead['first_sent'] is None:
            ahead['first_sent'] = time.monotonic()
    node.create_timer(0.05, tick)
    controller(**GUARD, **{'guard.laser.enabled': False, f'guard.{source}.enabled': True})
    robot = Robot(graph)
    assert robot.ready()
    robot.plans.publish(plan_msg(robot.node, AHEAD))
    assert robot.moving(10.0)
    ahead['m'], ahead['first_sent'] = 0.34, None      # 0.04 m from the footprint: the stop zone
    assert wait_for(lambda: ahead['first_sent'] is not None, 2.0)
    took = stopped_since(robot, ahead['first_sent'], 2.0)
    assert took is not None and took < 0.3, took
    ahead['m'] = 5.0
    assert robot.moving(5.0)
    # (a depth image that overtakes the first CameraInfo is rejected: topics are not ordered among each other)
    assert not {k: v for k, v in robot.diagnostics.items()
                if k.startswith('guard_rejected') and k != 'guard_rejected_depth_no_camera_info'}


def test_the_controllers_odometry_reaches_its_guard_and_a_non_finite_twist_is_counted(graph, controller):  # noqa: F811
    laser = Laser(graph)
    robot = guarded_robot(graph, controller, laser)
    odom = robot.node.create_publisher(Odometry, interface.ODOM, interface.SENSOR_QOS)
    msg = Odometry()
    msg.pose.pose.orientation.w = 1.0
    msg.twist.twist.angular.z = math.inf

    def counted() -> bool:
        msg.header.stamp = robot.node.get_clock().now().to_msg()
        odom.publish(msg)
        return int(robot.diagnostics.get('guard_rejected_odometry_not_finite', '0')) >= 1
    assert wait_for(counted, 5.0), robot.diagnostics
