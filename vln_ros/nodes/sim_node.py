"""sim_node: a simulated quadruped in a generated indoor scene, on simulated time (make eval).

It talks to the stack only through what a real robot offers: the camera (sensor_msgs/Image on
camera/image_raw, stamped with the capture time), odometry (odom) and cmd_vel, plus /clock, which it owns
(every other node runs with use_sim_time). A physics thread steps vln_ros/sim/world.py at physics_rate_hz
of simulated time, paced to `speed` x wall time, publishing /clock every step; the executor takes cmd_vel.

Ground truth stays off the ROS graph, on an HTTP side channel (api_address:api_port, JSON), so nothing in
the stack can read it by accident: make eval starts and scores episodes through it, and the oracle backend
asks it what a perfect model would answer.
    POST /reset {"seed": n}            a new episode: the scene of seed n, the robot at its start
    GET  /episode                      the episode so far: true trajectory, commands received, collisions...
    GET  /status                       simulated time, real-time factor
    POST /fault {"camera_frozen": b, "odom_lost": b}   faults in the loop
    POST /oracle {"stamp_ns": n, "latency_s": s, ...}  the oracle's answer for the frame captured at stamp_ns
"""
from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from vln_ros import interface
from vln_ros.core.control import Pose2D, Twist2D
from vln_ros.core.schema import StartupError
from vln_ros.nodes import diagnostics
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node
from vln_ros.sim import geodesic, scenes
from vln_ros.sim.params import SimParams
from vln_ros.sim.render import CameraSpec, render
from vln_ros.sim.world import Capture, SimWorld

# The loop re-anchors its pace when it falls this far behind (a stall is not made up for by a burst).
MAX_LAG_S = 0.25
ORACLE_WAIT_S = 120.0
MAX_BODY_BYTES = 64 * 1024
DIAGNOSTICS_PERIOD_S = 1.0
SLOW_RTF = 0.95          # /diagnostics warns below this share of the asked speed


def _time_msg(t_s: float) -> Any:
    """builtin_interfaces/Time of t_s, rounded to the nanosecond (3.9999999999 s is 4 s, not 3 s + 1e9 ns)."""
    return Time(nanoseconds=round(t_s * 1e9)).to_msg()


class SimNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__('sim_node', **node_kwargs)
        if self.get_parameter('use_sim_time').value:
            raise StartupError('sim_node publishes /clock itself: run it without use_sim_time')
        self.params: SimParams = declare_params(self, SimParams, cli_args=node_kwargs.get('cli_args'))
        p = self.params
        self.world = SimWorld(p)
        self._camera = CameraSpec(width=p.camera.width, height=p.camera.height, hfov_deg=p.camera.hfov_deg)
        self._clock_pub = self.create_publisher(Clock, interface.CLOCK, 10)
        self._image_pub = self.create_publisher(Image, interface.SIM_CAMERA, interface.SENSOR_QOS)
        self._odom_pub = self.create_publisher(Odometry, interface.ODOM, interface.SENSOR_QOS)
        self.create_subscription(Twist, interface.CMD_VEL, self._on_cmd_vel, interface.CMD_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        diagnostics.start_timer(self, DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._pending: list[tuple[Capture, Any]] = []
        self._rtf_lock = threading.Lock()
        self._rtf_window: list[tuple[float, float]] = []   # (wall, sim) samples of the last seconds
        self._stopping = threading.Event()
        try:
            self._server = ThreadingHTTPServer((p.api_address, p.api_port), _handler(self))
        except OSError as exc:
            raise StartupError(f'cannot serve the side channel on {p.api_address}:{p.api_port} ({exc.strerror}); '
                               'choose another api_port') from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name='sim-api', daemon=True).start()
        self._loop = threading.Thread(target=self._run, name='sim-physics', daemon=True)
        self._loop.start()
        self.get_logger().info(
            f'simulating {scenes.describe(self.world.scene)}: "{self.world.scene.instruction}", at {p.speed}x '
            f'real time; camera '
            f'{p.camera.width}x{p.camera.height} at {p.camera.rate_hz} Hz on '
            f'{self.resolve_topic_name(interface.SIM_CAMERA)}; side channel http://{p.api_address}:{p.api_port}')

    def destroy_node(self) -> None:
        self._stopping.set()
        self._loop.join(timeout=2.0)
        self._server.shutdown()
        self._server.server_close()
        super().destroy_node()

    # -- cmd_vel ---------------------------------------------------------------------------------------
    def _on_cmd_vel(self, msg: Twist) -> None:
        self.world.command(msg.linear.x, msg.linear.y, msg.angular.z)

    # -- the physics thread --------------------------------------------------------------------------
    def _run(self) -> None:
        anchor_wall, anchor_sim = time.monotonic(), self.world.t_s
        speed = self.params.speed
        while not self._stopping.is_set():
            target = anchor_wall + (self.world.t_s + self.world.dt_s - anchor_sim) / speed
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif -delay > MAX_LAG_S:
                anchor_wall, anchor_sim = time.monotonic(), self.world.t_s
            try:
                self._step()
            except Exception as exc:  # the clock must not stop silently: every node would freeze with it
                self.get_logger().error(f'simulation step failed: {exc!r}', throttle_duration_sec=2.0)

    def _step(self) -> None:
        t, odom, capture = self.world.step()
        stamp = _time_msg(t)
        self._clock_pub.publish(Clock(clock=stamp))
        if odom is not None:
            self._odom_pub.publish(self._odometry(stamp, *odom))
        if capture is not None:  # rendered at capture, published once its latency has passed
            self._pending.append((capture, render(self.world.scene, capture.pose, self._camera)))
        while self._pending and self._pending[0][0].due_s <= t + 1e-9:
            taken, image = self._pending.pop(0)
            self._image_pub.publish(self._image(taken.stamp_s, image))
        now = time.monotonic()
        with self._rtf_lock:
            self._rtf_window.append((now, t))
            while len(self._rtf_window) > 2 and now - self._rtf_window[0][0] > 5.0:
                self._rtf_window.pop(0)

    def _publish_diagnostics(self) -> None:
        rtf, episode = self.real_time_factor(), self.world.episode_counts()
        slow = math.isfinite(rtf) and rtf < SLOW_RTF * self.params.speed
        level = diagnostics.WARN if slow else diagnostics.OK
        message = f'slower than asked: {rtf:.2f}x real time' if slow else f'{rtf:.2f}x real time'
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(
            self, level, message, {'real_time_factor': rtf, 'speed': self.params.speed,
                                   'sim_time_s': self.world.t_s, **episode})))

    def real_time_factor(self) -> float:
        """Simulated seconds per wall second over the last 5 s."""
        with self._rtf_lock:
            if len(self._rtf_window) < 2:
                return float('nan')
            (w0, s0), (w1, s1) = self._rtf_window[0], self._rtf_window[-1]
        return (s1 - s0) / (w1 - w0) if w1 > w0 else float('nan')

    def _image(self, stamp_s: float, bgr: Any) -> Image:
        msg = Image()
        msg.header.stamp = _time_msg(stamp_s)
        msg.header.frame_id = self.params.camera.frame_id
        msg.height, msg.width = bgr.shape[:2]
        msg.encoding, msg.step = 'bgr8', bgr.shape[1] * 3
        msg.data = bgr.tobytes()
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

    # -- the side channel ------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One side-channel request -> (HTTP status, JSON reply)."""
        w = self.world
        if method == 'POST' and path == '/reset':
            self._pending.clear()
            scene = w.reset(int(body.get('seed', 0)))
            self.get_logger().info(f'episode: {scenes.describe(scene)}: "{scene.instruction}"')
            shortest = geodesic.path_length(geodesic.shortest_path(scene, self.params.base.radius_m))
            return 200, {'seed': scene.seed, 'instruction': scene.instruction, 'language': scene.language,
                         'kind': scene.kind, 'route_length_m': scene.route_length_m, 'shortest_path_m': shortest,
                         'start': [scene.start.x, scene.start.y, scene.start.yaw],
                         'goal': [scene.goal.x, scene.goal.y, scene.goal.yaw], 'now_s': w.t_s,
                         'describe': scenes.describe(scene)}
        if method == 'GET' and path == '/episode':
            return 200, {**w.episode(), 'real_time_factor': self.real_time_factor()}
        if method == 'GET' and path == '/status':
            v = w.base.velocity
            return 200, {'now_s': w.t_s, 'real_time_factor': self.real_time_factor(), 'seed': w.log.seed,
                         'speed_mps': math.hypot(v.vx, v.vy), 'yaw_rate': v.wz}
        if method == 'POST' and path == '/fault':
            w.camera_frozen = bool(body.get('camera_frozen', w.camera_frozen))
            w.odom_lost = bool(body.get('odom_lost', w.odom_lost))
            return 200, {'camera_frozen': w.camera_frozen, 'odom_lost': w.odom_lost, 'now_s': w.t_s}
        if method == 'POST' and path == '/oracle':
            stamp_ns = body.get('stamp_ns')
            if not isinstance(stamp_ns, int):
                return 400, {'error': 'stamp_ns (int, ns) is required'}
            settings = {k: float(v) for k, v in body.items() if k != 'stamp_ns' and isinstance(v, (int, float))}
            try:
                return 200, w.oracle_answer(stamp_ns * 1e-9, settings, ORACLE_WAIT_S)
            except LookupError as exc:
                return 409, {'error': str(exc)}
            except TimeoutError as exc:
                return 503, {'error': str(exc)}
        return 404, {'error': f'no {method} {path} (see sim_node --help)'}


def _handler(node: SimNode) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            try:
                length = int(self.headers.get('Content-Length') or 0)
                if length > MAX_BODY_BYTES:
                    raise ValueError(f'body over {MAX_BODY_BYTES} bytes')
                raw = self.rfile.read(length) if length else b'{}'
                body = json.loads(raw or b'{}')
                if not isinstance(body, dict):
                    raise ValueError('the body must be a JSON object')
                status, reply = node.api(method, self.path, body)
            except ValueError as exc:
                status, reply = 400, {'error': str(exc)}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's names)
            self._serve('GET')

        def do_POST(self) -> None:  # noqa: N802
            self._serve('POST')

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (quiet: the node logs)
            pass

    return Handler


def main(args: list[str] | None = None) -> int:
    return run_node('sim_node', SimNode, args, params=SimParams)


if __name__ == '__main__':
    raise SystemExit(main())

