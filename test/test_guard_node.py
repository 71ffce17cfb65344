"""guard_node, the collision guard alone (cmd_vel_in -> cmd_vel_out), on a real graph: the real guard_node
executable with a laser, a test node that drives it at 20 Hz (as teleop would), publishes LaserScans at
20 Hz and watches cmd_vel_out, vln/guard_status and /diagnostics. Bounds are generous (2-core CI)."""
from __future__ import annotations

import math
import threading
import time

import pytest
from conftest import call_service, node_starter, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from test_controller_guard import Laser, StatusWatch, free_ranges, obstacle_ranges
from visualization_msgs.msg import Marker, MarkerArray

from vln_ros import interface

FORWARD_MPS = 0.4


@pytest.fixture
def guard_node():
    """Start the real guard_node executable with the guard on (a laser on `scan`) and the given parameters."""
    yield from node_starter('guard_node', 'guard.enabled:=true', 'guard.laser.enabled:=true')


class Teleop:
    """Publishes `command` on cmd_vel_in at 20 Hz (None: silent) and records cmd_vel_out with receive times."""

    def __init__(self, graph, cmd_type=Twist) -> None:
        self.node = graph.node('teleop')
        self.cmd_type = cmd_type
        self._lock = threading.Lock()
        self.command: tuple[float, float, float] | None = (FORWARD_MPS, 0.0, 0.0)
        self.out: list[tuple[float, Twist]] = []
        self.diagnostics: dict[str, str] = {}
        self.pub = self.node.create_publisher(cmd_type, interface.CMD_VEL_IN, interface.CMD_QOS)
        self.node.create_subscription(cmd_type, interface.CMD_VEL_OUT, self._on_out, 10)
        self.node.create_subscription(DiagnosticArray, interface.DIAGNOSTICS, self._on_diagnostics, 10)
        self.node.create_timer(0.05, self._tick)

    def _tick(self) -> None:
        with self._lock:
            command = self.command
        if command is None:
            return
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.angular.z = command
        self.pub.publish(twist if self.cmd_type is Twist else TwistStamped(twist=twist))

    def send(self, command: tuple[float, float, float] | None) -> None:
        with self._lock:
            self.command = command

    def _on_out(self, msg) -> None:
        with self._lock:
            self.out.append((time.monotonic(), msg.twist if isinstance(msg, TwistStamped) else msg))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == '/guard_node':
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def since(self, t0: float) -> list[Twist]:
        with self._lock:
            return [m for t, m in self.out if t >= t0]

    def first_zero_after(self, t0: float, timeout_s: float) -> float | None:
        def zero_seen() -> bool:
            return any(m.linear.x == 0.0 for m in self.since(t0))
        if not wait_for(zero_seen, timeout_s):
            return None
        with self._lock:
            return next(t for t, m in self.out if t >= t0 and m.linear.x == 0.0) - t0

    def passing(self, timeout_s: float = 5.0) -> bool:
        """The newest output is the input, unchanged."""
        return wait_for(lambda: bool(self.out) and self.out[-1][1].linear.x == FORWARD_MPS, timeout_s)


def passing(graph, guard_node, **params) -> tuple[Laser, Teleop]:
    """guard_node started with `params`, a clear scan and teleop driving it: once commands pass, (laser, teleop)."""
    guard_node(**params)
    laser, teleop = Laser(graph), Teleop(graph)
    laser.send(free_ranges())
    assert teleop.passing(10.0)
    return laser, teleop


def test_commands_pass_unchanged_while_the_way_is_clear(graph, guard_node):
    laser, teleop = passing(graph, guard_node)
    assert wait_for(lambda: teleop.diagnostics.get('guard_action') == 'free', 3.0), teleop.diagnostics


@pytest.mark.parametrize('cmd_type', [Twist, TwistStamped])
def test_an_obstacle_in_the_scan_makes_the_output_zero_and_clear_lets_it_pass_again(graph, guard_node, cmd_type):
    guard_node(cmd_vel_stamped=cmd_type is TwistStamped)
    laser, teleop, status = Laser(graph), Teleop(graph, cmd_type), StatusWatch(graph)
    laser.send(free_ranges())
    assert teleop.passing(10.0)
    laser.send(obstacle_ranges())
    assert wait_for(lambda: laser.first_sent() is not None, 2.0)
    sent = laser.first_sent()
    took = teleop.first_zero_after(sent, 2.0)
    assert took is not None and took < 0.3, took
    time.sleep(0.5)
    assert all(m.linear.x <= 0.0 for m in teleop.since(sent + took))   # held while the obstacle stands there
    assert wait_for(lambda: status.last() is not None and status.last().action == 'stop', 3.0), status.last()
    assert status.last().source == 'laser'
    laser.send(free_ranges())
    assert teleop.passing(5.0)


def test_a_silent_input_becomes_zero_within_its_timeout(graph, guard_node):
    laser, teleop = passing(graph, guard_node, input_timeout_s=0.3)
    teleop.send(None)
    t0 = time.monotonic()
    took = teleop.first_zero_after(t0, 3.0)
    assert took is not None and took < 0.3 + 0.4, took
    assert wait_for(lambda: int(teleop.diagnostics.get('input_timeouts', '0')) >= 1, 3.0), teleop.diagnostics


def test_a_silent_laser_makes_the_output_zero(graph, guard_node):
    laser, teleop = passing(graph, guard_node, **{'guard.laser.timeout_s': 0.5})
    laser.send(None)
    t0 = time.monotonic()
    took = teleop.first_zero_after(t0, 3.0)
    assert took is not None and took < 0.5 + 0.4, took
    time.sleep(0.3)
    assert all(m.linear.x == 0.0 for m in teleop.since(t0 + took))   # the input keeps coming: still zero


def test_a_non_finite_input_is_counted_and_becomes_zero(graph, guard_node):
    laser, teleop = passing(graph, guard_node)
    teleop.send((math.nan, 0.0, 0.0))
    t0 = time.monotonic()
    assert teleop.first_zero_after(t0, 2.0) is not None
    assert wait_for(lambda: int(teleop.diagnostics.get('inputs_rejected_nonfinite', '0')) >= 3, 3.0), \
        teleop.diagnostics
    assert all(m.linear.x == 0.0 for m in teleop.since(t0 + 0.3))   # never the NaN, never the old command


def test_bad_scans_are_counted_and_the_output_stays_zero(graph, guard_node):
    laser, teleop = passing(graph, guard_node)
    laser.send([math.nan] * len(free_ranges()))     # nothing measured: not evidence of free space
    t0 = time.monotonic()
    took = teleop.first_zero_after(t0, 2.0)
    assert took is not None
    assert wait_for(lambda: int(teleop.diagnostics.get('guard_rejected_laser_no_valid_points', '0')) >= 3, 5.0), \
        teleop.diagnostics
    assert all(m.linear.x == 0.0 for m in teleop.since(t0 + took))


def test_the_zones_and_the_nearest_obstacle_reach_rviz_as_markers(graph, guard_node):
    guard_node()
    laser, teleop = Laser(graph), Teleop(graph)
    arrays: list[MarkerArray] = []
    teleop.node.create_subscription(MarkerArray, interface.GUARD_MARKERS, arrays.append,
                                    interface.GUARD_MARKERS_QOS)
    laser.send(obstacle_ranges())

    def sphere() -> Marker | None:
        last = arrays[-1].markers if arrays else []
        return next((m for m in last if m.type == Marker.SPHERE and m.action == Marker.ADD), None)
    assert wait_for(lambda: sphere() is not None, 10.0), arrays[-1:]
    lines = [m for m in arrays[-1].markers if m.type == Marker.LINE_STRIP]
    assert len(lines) == 3 and all(m.header.frame_id == 'base_link' for m in arrays[-1].markers)
    radii = [max(math.hypot(p.x, p.y) for p in m.points) for m in lines]
    assert radii == pytest.approx([0.3, 0.35, 0.6])      # footprint, stop (0.05 m), slowdown (0.3 m)
    found = sphere()
    assert found is not None and found.pose.position.x == pytest.approx(0.32, abs=0.01)


def test_a_live_change_of_a_margin_redraws_its_zone(graph, guard_node):
    # The outlines are worked out once per footprint and margins (guard_adapter._zone_points): a change must show.
    guard_node()
    teleop = Teleop(graph)
    arrays: list[MarkerArray] = []
    teleop.node.create_subscription(MarkerArray, interface.GUARD_MARKERS, arrays.append,
                                    interface.GUARD_MARKERS_QOS)

    def stop_zone_radius() -> float | None:
        lines = [m for m in arrays[-1].markers if m.type == Marker.LINE_STRIP] if arrays else []
        return max(math.hypot(p.x, p.y) for p in lines[1].points) if len(lines) == 3 else None
    assert wait_for(lambda: stop_zone_radius() is not None, 10.0)
    assert stop_zone_radius() == pytest.approx(0.35)
    client = teleop.node.create_client(SetParameters, '/guard_node/set_parameters')
    reply = call_service(client, SetParameters.Request(parameters=[
        Parameter('guard.stop_margin_m', value=0.2).to_parameter_msg()]), timeout_s=5.0)
    assert reply.results[0].successful, reply
    assert wait_for(lambda: stop_zone_radius() == pytest.approx(0.5), 5.0), stop_zone_radius()


def test_with_the_guard_off_commands_pass_unchanged_and_no_sensor_is_needed(graph, guard_node):
    guard_node(**{'guard.enabled': False})
    teleop = Teleop(graph)
    assert teleop.passing(10.0)   # no laser publishes: a guard that is on would stop
    assert wait_for(lambda: teleop.diagnostics.get('guard_reason') == 'guard disabled', 3.0), teleop.diagnostics


def test_odometry_on_odom_reaches_the_guard_and_a_non_finite_twist_is_counted(graph, guard_node):
    # Optional for guard_node: it is what the moving-obstacle estimate takes the robot's own motion from.
    laser, teleop = passing(graph, guard_node)
    odom = teleop.node.create_publisher(Odometry, interface.ODOM, interface.SENSOR_QOS)
    msg = Odometry()
    msg.pose.pose.orientation.w = 1.0
    msg.twist.twist.linear.x = math.nan

    def counted() -> bool:
        odom.publish(msg)
        return int(teleop.diagnostics.get('guard_rejected_odometry_not_finite', '0')) >= 1
    assert wait_for(counted, 5.0), teleop.diagnostics
    assert teleop.passing(3.0)          # a bad twist is not a stop: the commands stand in for it
