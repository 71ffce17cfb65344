"""The collision guard's ROS side, shared by controller_node (its last stage) and guard_node (standalone).

Everything here is plumbing over vln_ros.core.guard: one subscription per enabled source (sensor-data QoS,
as their drivers publish), each message fed to the guard with its receive time and header stamp, and the
guard's state on the latched vln/guard_status (on a change of what it does and why, and every
interface.GUARD_STATUS_PERIOD_S). The owner runs every callback and its step on one single-threaded executor:
CollisionGuard is not thread-safe, and this adapter adds no lock.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from geometry_msgs.msg import Point
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from vln_ros import interface
from vln_ros.core.guard import CollisionGuard, GuardAction, GuardParams, GuardState
from vln_ros.core.guard_report import StatusGate, points_at_gap, rejection_counters, zone_outline
from vln_ros.core.guard_sources import RejectReason
from vln_ros.msg import GuardStatus
from vln_ros.nodes.conversions import stamp_seconds, time_msg

# The zones for rviz: a modest rate (they change only with the parameters; the nearest obstacle moves).
GUARD_MARKER_PERIOD_S = 0.2
MARKER_NS = 'vln_guard'
_COLORS: dict[object, tuple[float, float, float, float]] = {
    'footprint': (1.0, 1.0, 1.0, 0.9), 'stop': (1.0, 0.1, 0.1, 0.9), 'slowdown': (1.0, 0.8, 0.0, 0.8),
           GuardAction.FREE: (0.2, 0.9, 0.2, 0.9), GuardAction.SLOWDOWN: (1.0, 0.8, 0.0, 0.9),
           GuardAction.APPROACH: (1.0, 0.5, 0.0, 0.9), GuardAction.STOP: (1.0, 0.1, 0.1, 0.9)}


def _color(key: object) -> ColorRGBA:
    r, g, b, a = _COLORS[key]
    return ColorRGBA(r=r, g=g, b=b, a=a)


class GuardAdapter:
    """A CollisionGuard wired to its sensors' topics and to vln/guard_status on `node`."""

    def __init__(self, node: Node, params: GuardParams, now_s: Callable[[], float],
                 base_frame: Callable[[], str], subscribe_odometry: bool = False) -> None:
        """subscribe_odometry: listen to `odom` here (guard_node); controller_node, which has its own odometry
        subscription, passes its messages to on_odometry() instead."""
        self._node = node
        self._now_s = now_s
        self._base_frame = base_frame     # read per message: the owner's parameter snapshot may change
        self.guard = CollisionGuard(params)
        self.state: GuardState | None = None   # the newest step's (None: no step yet)
        # The zones' outlines change only with the parameters: (footprint, margins) -> their points.
        self._outlines: tuple[tuple[object, ...], list[list[Point]]] | None = None
        self._gate = StatusGate(interface.GUARD_STATUS_PERIOD_S)
        self._pub = node.create_publisher(GuardStatus, interface.GUARD_STATUS, interface.GUARD_STATUS_QOS)
        self._markers_pub = node.create_publisher(MarkerArray, interface.GUARD_MARKERS, interface.GUARD_MARKERS_QOS)
        node.create_timer(GUARD_MARKER_PERIOD_S, self._publish_markers)
        self.topics: list[str] = []
        on = params.enabled   # a guard that is off (guard_node passing commands) listens to nothing
        if on and params.laser.enabled:
            node.create_subscription(LaserScan, params.laser.topic, self._on_scan, interface.SENSOR_QOS)
            self.topics.append(f'laser {node.resolve_topic_name(params.laser.topic)}')
        if on and params.pointcloud.enabled:
            node.create_subscription(PointCloud2, params.pointcloud.topic, self._on_cloud, interface.SENSOR_QOS)
            self.topics.append(f'pointcloud {node.resolve_topic_name(params.pointcloud.topic)}')
        if on and params.depth.enabled:
            node.create_subscription(Image, params.depth.topic, self._on_depth, interface.SENSOR_QOS)
            # CameraInfo is best effort from most drivers as well; the newest one is all the guard needs.
            node.create_subscription(CameraInfo, params.depth.camera_info_topic, self._on_camera_info,
                                     interface.SENSOR_QOS)
            self.topics.append(f'depth {node.resolve_topic_name(params.depth.topic)} + '
                               f'{node.resolve_topic_name(params.depth.camera_info_topic)}')
        if on and subscribe_odometry:
            # Optional: without it the guard estimates its own motion from the commands it lets through.
            node.create_subscription(Odometry, interface.ODOM, self.on_odometry, interface.SENSOR_QOS)

    def describe(self) -> str:
        """The start-up log line's part about the guard."""
        g = self.guard.params
        return (f'collision guard on: {", ".join(self.topics)}; stop within {g.stop_margin_m} m, slow down within '
                f'{g.slowdown_margin_m} m, time before collision {g.time_before_collision_s} s; status on '
                f'{self._node.resolve_topic_name(interface.GUARD_STATUS)}')

    def update_params(self, params: GuardParams) -> None:
        self.guard.update_params(params)

    # -- the sensors: each message is fed with its receive time and its header stamp ------------------
    def _on_scan(self, msg: LaserScan) -> None:
        self._rejected('laser', self.guard.on_scan(msg, self._now_s(), stamp_seconds(msg.header.stamp)))

    def _on_cloud(self, msg: PointCloud2) -> None:
        self._rejected('pointcloud', self.guard.on_cloud(msg, self._now_s(), stamp_seconds(msg.header.stamp)))

    def _on_depth(self, msg: Image) -> None:
        self._rejected('depth', self.guard.on_depth(msg, self._now_s(), stamp_seconds(msg.header.stamp)))

    def on_odometry(self, msg: Odometry) -> None:
        """The robot's measured twist (child frame: the base), for the guard's estimate of moving obstacles."""
        t = msg.twist.twist
        self.guard.on_odometry((t.linear.x, t.linear.y, t.angular.z), self._now_s())

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._rejected('camera_info', self.guard.on_camera_info(msg))

    def _rejected(self, source: str, reason: RejectReason | None) -> None:
        # Counted by the guard itself (diagnostics report guard.rejections); a required source's rejected
        # message also stops the robot, with the reason on vln/guard_status.
        if reason is not None:
            self._node.get_logger().warning(f'collision guard: rejected a {source} message ({reason.value})',
                                            throttle_duration_sec=2.0)

    # -- state out ----------------------------------------------------------------------------------
    def report(self, state: GuardState, now_s: float) -> None:
        """A step's state: kept for diagnostics, logged on a change to a non-free action, published when due."""
        self.state = state
        if self._gate.changed(state) and state.action is not GuardAction.FREE:
            self._node.get_logger().info(f'collision guard: {state.action.value} ({state.reason})',
                                         throttle_duration_sec=1.0)
        if not self._gate.due(state, now_s):
            return
        msg = GuardStatus(action=state.action.value, nearest_m=state.nearest_m, bearing_rad=state.bearing_rad,
                          source=state.source, reason=state.reason, scale=state.scale)
        msg.header.stamp = time_msg(now_s)
        msg.header.frame_id = self._base_frame()
        self._pub.publish(msg)

    def markers(self, now_s: float) -> MarkerArray:
        """Footprint, stop and slowdown zones (line strips) and the nearest obstacle (a sphere in the colour of
        the action; deleted when none is seen), in the base frame."""
        footprint = self.guard.footprint
        header = Header(frame_id=self._base_frame(), stamp=time_msg(now_s))
        markers = []
        for marker_id, (name, points) in enumerate(zip(('footprint', 'stop', 'slowdown'), self._zone_points(),
                                                       strict=True)):
            markers.append(Marker(header=header, ns=MARKER_NS, id=marker_id, type=Marker.LINE_STRIP,
                                  action=Marker.ADD, color=_color(name), frame_locked=True, points=points))
            markers[-1].scale.x = 0.02 if name == 'footprint' else 0.01
            markers[-1].pose.orientation.w = 1.0
        state = self.state
        nearest = Marker(header=header, ns=MARKER_NS, id=3, frame_locked=True)
        if state is None or not (math.isfinite(state.nearest_m) and math.isfinite(state.bearing_rad)):
            nearest.action = Marker.DELETE
        else:
            x, y = points_at_gap(footprint, state.nearest_m, np.array([state.bearing_rad]))[0]
            nearest.type, nearest.action, nearest.color = Marker.SPHERE, Marker.ADD, _color(state.action)
            nearest.pose.position = Point(x=float(x), y=float(y))
            nearest.pose.orientation.w = 1.0
            nearest.scale.x = nearest.scale.y = nearest.scale.z = 0.08
        markers.append(nearest)
        return MarkerArray(markers=markers)

    def _zone_points(self) -> list[list[Point]]:
        """The footprint's, the stop zone's and the slowdown zone's outlines, worked out again only when the
        footprint or a margin changed (a polygon's take a bisection per bearing: not every marker period)."""
        g = self.guard.params
        key = (g.footprint, g.stop_margin_m, g.slowdown_margin_m)
        if self._outlines is None or self._outlines[0] != key:
            outlines = [zone_outline(self.guard.footprint, gap_m)
                        for gap_m in (0.0, g.stop_margin_m, g.slowdown_margin_m)]
            self._outlines = (key, [[Point(x=float(x), y=float(y)) for x, y in outline] for outline in outlines])
        return self._outlines[1]

    def _publish_markers(self) -> None:
        self._markers_pub.publish(self.markers(self._now_s()))

    def diagnostics_values(self) -> dict[str, object]:
        """The guard's part of a node's /diagnostics values."""
        state = self.state
        values: dict[str, object] = {'guard_action': state.action.value if state else 'none yet',
                                     'guard_nearest_m': state.nearest_m if state else float('nan'),
                                     'guard_source': state.source if state else '',
                                     'guard_reason': state.reason if state else ''}
        values.update(rejection_counters(self.guard.rejections))
        return values

    def stopping(self) -> bool:
        """Whether the newest step stopped the robot (a diagnostics warning)."""
        return self.state is not None and self.state.action is GuardAction.STOP
