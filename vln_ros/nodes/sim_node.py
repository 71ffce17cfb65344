"""sim_node: a simulated quadruped in a generated indoor scene, on simulated time (make eval).

It talks to the stack only through what a real robot offers: the camera (sensor_msgs/Image on
camera/image_raw, stamped with the capture time), a 2D laser (sensor_msgs/LaserScan on scan, frame_id
laser.frame_id, mounted at laser.mount; vln_ros/sim/laser.py), with depth.enabled a depth camera (sensor_msgs/Image on
depth/image_raw in depth.encoding and its CameraInfo on depth/camera_info, frame_id depth.frame_id, mounted at
depth.mount: the guard's depth source reads them as they are), odometry (odom) and cmd_vel, plus /clock, which it owns
(every other node runs with use_sim_time). A physics thread steps vln_ros/sim/world.py at physics_rate_hz
of simulated time, paced to `speed` x wall time, publishing /clock every step; the executor takes cmd_vel.

Ground truth stays off the ROS graph, on an HTTP side channel (api_address:api_port, JSON), so nothing in
the stack can read it by accident: make eval starts and scores episodes through it, and the oracle backend
asks it what a perfect model would answer. vln_ros/sim/api.py is the one home of its routes, models, server
and client; vln_ros/sim/service.py is the simulator this node steps and serves, without ROS.

With `robots` (e.g. r1,r2) the one world has several robots, each with its own topics under its name (r1/odom,
r1/camera/image_raw, r1/scan, r1/cmd_vel, ...), its own start and goal (vln_ros/sim/fleet.py), and the others in its
camera and laser; /clock and the side channel stay one (per-robot data there by a robot field or ?robot=).
"""
from __future__ import annotations

import array
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.publisher import Publisher
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, LaserScan

from vln_ros import interface
from vln_ros.core.control import Pose2D, Twist2D
from vln_ros.core.schema import StartupError
from vln_ros.nodes import diagnostics
from vln_ros.nodes.conversions import time_msg
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node
from vln_ros.sim import api, fleet, scenes
from vln_ros.sim.laser import scan_geometry
from vln_ros.sim.params import SimParams, robot_names
from vln_ros.sim.render import CameraSpec, intrinsics, render
from vln_ros.sim.service import SimService

__doc__ = f"{(__doc__ or '').rstrip()}\n{api.describe_routes()}\n"   # sim_node --help prints them

# The loop re-anchors its pace when it falls this far behind (a stall is not made up for by a burst).
MAX_LAG_S = 0.25
DIAGNOSTICS_PERIOD_S = 1.0
SLOW_RTF = 0.95          # /diagnostics warns below this share of the asked speed


@dataclass
class _RobotIO:
    image: Publisher
    odom: Publisher
    scan: Publisher | None
    depth: tuple[Publisher, Publisher] | None


class SimNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__('sim_node', **node_kwargs)
        if self.get_parameter('use_sim_time').value:
            raise StartupError('sim_node publishes /clock itself: run it without use_sim_time')
        # Before anything that can fail: destroy_node runs after a failed start too.
        self._stopping = threading.Event()
        self._loop = threading.Thread(target=self._run, name='sim-physics', daemon=True)
        self._server: api.ApiServer | None = None
        self.params: SimParams = declare_params(self, SimParams, cli_args=node_kwargs.get('cli_args'))
        p = self.params
        camera = CameraSpec(width=p.camera.width, height=p.camera.height, hfov_deg=p.camera.hfov_deg)
        try:
            self.sim = SimService(p, lambda scene, pose, people, robots: render(scene, pose, camera, people, robots),
                                  self.get_logger().info)
        except ValueError as exc:   # the first scene's route has no room for the robots' queue
            robots = len(robot_names(p.robots))
            if robots < 2:
                raise StartupError(str(exc)) from None
            fit = fleet.seeds_that_fit(robots, p.seed, 3)[0]
            raise StartupError(f'{exc}: choose a seed whose route holds {robots} robots (seeds '
                               f'{", ".join(map(str, fit))} from seed {p.seed} on do), or fewer robots') from None
        self.world = self.sim.world
        self._clock_pub = self.create_publisher(Clock, interface.CLOCK, 10)
        self._scan_geometry = scan_geometry(p.laser.fov_deg, p.laser.step_deg)
        self._robots = [self._robot_io(name) for name in self.world.names]
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        diagnostics.start_timer(self, DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._server = api.ApiServer(self.sim, p.api_address, p.api_port)
        try:
            self._server.start()
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)   # 'Address already in use', as ever
            raise StartupError(f'cannot serve the side channel on {p.api_address}:{p.api_port} ({why}); '
                               'choose another api_port') from None
        self._loop.start()
        self.get_logger().info(
            f'simulating {scenes.describe(self.world.scene)}: "{self.world.scene.instruction}", at {p.speed}x '
            f'real time; camera '
            f'{p.camera.width}x{p.camera.height} at {p.camera.rate_hz} Hz on '
            f'{self.resolve_topic_name(interface.SIM_CAMERA)}; side channel http://{p.api_address}:{p.api_port}')

    def _robot_io(self, name: str) -> _RobotIO:
        """One robot's publishers and cmd_vel subscription, under its name ('': the node's own namespace)."""
        p = self.params

        def topic(relative: str) -> str:
            return f'{name}/{relative}' if name else relative

        io = _RobotIO(
            image=self.create_publisher(Image, topic(interface.SIM_CAMERA), interface.SENSOR_QOS),
            odom=self.create_publisher(Odometry, topic(interface.ODOM), interface.SENSOR_QOS),
            scan=(self.create_publisher(LaserScan, topic(interface.SCAN), interface.SENSOR_QOS)
                  if p.laser.enabled else None),
            # The depth image and its CameraInfo as a depth camera driver publishes them: sensor data, one stamp.
            depth=((self.create_publisher(Image, topic(interface.GUARD_DEPTH), interface.SENSOR_QOS),
                    self.create_publisher(CameraInfo, topic(interface.GUARD_DEPTH_INFO), interface.SENSOR_QOS))
                   if p.depth.enabled else None))
        self.create_subscription(Twist, topic(interface.CMD_VEL),
                                 lambda msg: self.world.command(msg.linear.x, msg.linear.y, msg.angular.z, name),
                                 interface.CMD_QOS)
        return io

    def destroy_node(self) -> None:
        self._stopping.set()
        if self._loop.is_alive():   # not when start-up failed
            self._loop.join(timeout=2.0)
        if self._server is not None:
            self._server.stop()
        super().destroy_node()

    # -- the physics thread --------------------------------------------------------------------------
    def _run(self) -> None:
        anchor_wall, anchor_sim = time.monotonic(), self.world.t_s
        speed = self.params.speed
        while not self._stopping.is_set():
            target = anchor_wall + (self.world.t_s + self.world.dt_s - anchor_sim) / speed
            delay = target - time.monotonic()
            if delay > 0:
                self.sim.idle(delay)   # a reset asked for meanwhile is applied here, on this thread
            elif -delay > MAX_LAG_S:
                anchor_wall, anchor_sim = time.monotonic(), self.world.t_s
            try:
                self._step()
            except Exception as exc:  # the clock must not stop silently: every node would freeze with it
                self.get_logger().error(f'simulation step failed: {exc!r}', throttle_duration_sec=2.0)

    def _step(self) -> None:
        outs = self.sim.step_all()
        stamp = time_msg(outs[0].t_s)
        self._clock_pub.publish(Clock(clock=stamp))
        for io, out in zip(self._robots, outs, strict=True):
            if out.odom is not None:
                io.odom.publish(self._odometry(stamp, *out.odom))
            for stamp_s, image in out.frames:
                io.image.publish(self._image(stamp_s, image))
            if out.scan is not None and io.scan is not None:
                io.scan.publish(self._laser_scan(*out.scan))
            if out.depth is not None and io.depth is not None:
                image, info = self._depth(*out.depth)
                io.depth[0].publish(image)
                io.depth[1].publish(info)

    def _publish_diagnostics(self) -> None:
        rtf, episode = self.sim.real_time_factor(), self.world.episode_counts()
        slow = math.isfinite(rtf) and rtf < SLOW_RTF * self.params.speed
        level = diagnostics.WARN if slow else diagnostics.OK
        message = f'slower than asked: {rtf:.2f}x real time' if slow else f'{rtf:.2f}x real time'
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(
            self, level, message, {'real_time_factor': rtf, 'speed': self.params.speed,
                                   'sim_time_s': self.world.t_s, **episode})))

    def _image(self, stamp_s: float, bgr: Any) -> Image:
        msg = Image()
        msg.header.stamp = time_msg(stamp_s)
        msg.header.frame_id = self.params.camera.frame_id
        msg.height, msg.width = bgr.shape[:2]
        msg.encoding, msg.step = 'bgr8', bgr.shape[1] * 3
        msg.data = bgr.tobytes()
        return msg

    def _depth(self, stamp_s: float, depth: np.ndarray) -> tuple[Image, CameraInfo]:
        p = self.params.depth
        msg = Image()
        msg.header.stamp = time_msg(stamp_s)
        msg.header.frame_id = p.frame_id
        msg.height, msg.width = depth.shape
        msg.encoding, msg.step = p.encoding, depth.shape[1] * depth.itemsize
        msg.is_bigendian = 0     # numpy's native order on every machine this runs on (little-endian)
        msg.data = depth.tobytes()
        info = CameraInfo()
        info.header = msg.header
        info.height, info.width = depth.shape
        fx, fy, cx, cy = intrinsics(self.sim.depth_camera)
        info.distortion_model = 'plumb_bob'
        info.d = [0.0] * 5
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return msg, info

    def _laser_scan(self, stamp_s: float, ranges: np.ndarray) -> LaserScan:
        p, geometry = self.params.laser, self._scan_geometry
        msg = LaserScan()
        msg.header.stamp = time_msg(stamp_s)
        msg.header.frame_id = p.frame_id
        msg.angle_min, msg.angle_max = geometry.angle_min, geometry.angle_max
        msg.angle_increment = geometry.angle_increment
        msg.time_increment = 0.0                  # every beam at the same instant (vln_ros/sim/laser.py)
        msg.scan_time = 1.0 / p.rate_hz
        msg.range_min, msg.range_max = p.range_min_m, p.range_max_m
        values = array.array('f')
        values.frombytes(ranges.astype(np.float32).tobytes())   # one copy, not a check per float
        msg.ranges = values
        return msg

    def _odometry(self, stamp: Any, pose: Pose2D, twist: Twist2D) -> Odometry:
        msg = Odometry()
        msg.header.stamp = stamp
        msg.header.frame_id = self.params.odom.frame_id
        msg.child_frame_id = self.params.odom.child_frame_id
        msg.pose.pose.position.x, msg.pose.pose.position.y = pose.x, pose.y
        msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(pose.yaw / 2), math.cos(pose.yaw / 2)
        msg.twist.twist.linear.x, msg.twist.twist.linear.y = twist.vx, twist.vy
        msg.twist.twist.angular.z = twist.wz
        return msg


def main(args: list[str] | None = None) -> int:
    return run_node('sim_node', SimNode, args, params=SimParams)


if __name__ == '__main__':
    raise SystemExit(main())

