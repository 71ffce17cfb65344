"""console_node: the operator console in the browser (vln_ros/console): see what the robot sees, give it an
instruction, stop it.

The web server (vln_ros/console/server.py, ROS-free) runs on its own asyncio thread; this node only turns
topics into what the pages show and the pages' commands into services and topics:
- in: keyframes (JPEG, sent on as they are, with their capture stamp), plans, task status, cmd_vel, the
  controller's status (vln/controller_status, latched: the e-stop and the controller's mode, stop reason, plan
  age and limits in force), the collision guard's state (vln/guard_status), /diagnostics (a health line per
  node with its age and period, for humans); the controller's velocity limits once, from its parameter service.
  Whatever comes at a known period says so (period_s): the page greys it when unheard for twice that;
- out: vln/set_task, vln/stop_task, vln/release_estop (services, called from the server's worker thread),
  and vln/estop: `true` on the e-stop button and when the page holding control goes away (no heartbeat for
  heartbeat_timeout_s, or its socket closed); `false` at 5 Hz while this node is alive (the console's
  heartbeat, which keeps the controller's dead-man, estop_timeout_s, satisfied: armed with console:=true, a
  console that dies stops the robot), except from a page-gone e-stop until a page takes control again (that
  `true` stays the last word, and the controller refuses a release while its dead-man sees silence).
Security: bound to loopback by default; any other address needs a token (set, or generated); the server refuses
every route without it. The URL with the token goes once to the terminal (or a 0600 file without one), never
to the logger, which writes /rosout and ~/.ros/log (vln_ros/console/announce.py).
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from rcl_interfaces.srv import GetParameters
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vln_ros import interface
from vln_ros.console.announce import Announcement
from vln_ros.console.server import ConsoleServer
from vln_ros.core.config import ConsoleParams, StartupError
from vln_ros.core.control import ESTOP_STILL_ASSERTED
from vln_ros.core.limits import VelocityLimits
from vln_ros.msg import ControllerStatus, GuardStatus, TaskStatus, WaypointArray
from vln_ros.nodes import diagnostics
from vln_ros.nodes.conversions import stamp_seconds
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node
from vln_ros.nodes.services import call_service
from vln_ros.srv import SetTask

if TYPE_CHECKING:
    from rclpy.client import Client

HEARTBEAT_PERIOD_S = 0.2     # vln/estop false while this node is alive (not after a page-gone e-stop)
SERVICE_TIMEOUT_S = 3.0      # a command the page waits for
CMD_TO_PAGES_PERIOD_S = 0.1  # cmd_vel comes at 50 Hz; the pages' velocity bars need 10 (CPU: the 5 % budget)
LEVEL_NAMES = {0: 'ok', 1: 'warn', 2: 'error', 3: 'stale'}
DIAGNOSTICS_PERIOD_S = 1.0   # a node's period until two of its messages have come (every node's default)
PERIOD_SAMPLES = 4           # a node's period: the longest of its last intervals (an extra message never shortens it)


def _level(value: Any) -> int:
    return value[0] if isinstance(value, (bytes, bytearray)) else int(value)


def page_state(msg: ControllerStatus) -> dict[str, dict[str, Any]]:
    """What the pages get of one ControllerStatus, by message kind: `estop` as before (engaged, reason: 'released',
    'estop' or 'estop_deadman'), and every field of the message under `controller_status`."""
    return {
        'estop': {'engaged': bool(msg.estop_engaged), 'reason': msg.estop_reason or 'released',
                  'period_s': interface.CONTROLLER_STATUS_PERIOD_S},
        'controller_status': {
            'mode': msg.mode, 'estop_engaged': bool(msg.estop_engaged), 'estop_reason': msg.estop_reason,
            'estop_asserted': bool(msg.estop_asserted), 'stop_reason': msg.stop_reason,
            'plan_age_s': float(msg.plan_age_s), 'stamp_s': stamp_seconds(msg.header.stamp),
            'limits': {'max_linear_x': float(msg.max_linear_x), 'max_linear_y': float(msg.max_linear_y),
                       'max_angular_z': float(msg.max_angular_z)},
            'estop_timeout_s': float(msg.estop_timeout_s), 'period_s': interface.CONTROLLER_STATUS_PERIOD_S}}


class ConsoleNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__('console_node', **node_kwargs)
        self.params: ConsoleParams = declare_params(self, ConsoleParams, None, cli_args=node_kwargs.get('cli_args'))
        p = self.params
        self._estop_pub = self.create_publisher(Bool, interface.ESTOP, interface.ESTOP_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        self._set_task: Client[Any, Any] = self.create_client(SetTask, interface.SET_TASK)
        self._stop_task: Client[Any, Any] = self.create_client(Trigger, interface.STOP_TASK)
        self._release: Client[Any, Any] = self.create_client(Trigger, interface.RELEASE_ESTOP)
        self._get_limits: Client[Any, Any] = self.create_client(GetParameters, 'controller_node/get_parameters')
        self._health: dict[str, dict[str, Any]] = {}
        self._heard: dict[str, tuple[float, list[float]]] = {}   # node -> (monotonic receipt s, last intervals)
        self._limits_known = False
        self._heartbeats = 0
        self._cmd_sent_s = 0.0
        # The heartbeat (executor thread) and control_lost (the server's safety worker) both publish on
        # vln/estop: the lock keeps a heartbeat's `false` from landing after control_lost's `true`.
        self._estop_lock = threading.Lock()
        self._lost_pending = False   # a page-gone e-stop, until a page takes control again

        self.create_subscription(CompressedImage, interface.KEYFRAME, self._on_keyframe, interface.KEYFRAME_QOS)
        self.create_subscription(WaypointArray, interface.WAYPOINTS, self._on_plan, interface.PLAN_QOS)
        self.create_subscription(TaskStatus, interface.TASK_STATUS, self._on_status, interface.STATUS_QOS)
        self.create_subscription(Twist, interface.CMD_VEL, self._on_cmd, interface.CMD_QOS)
        self.create_subscription(ControllerStatus, interface.CONTROLLER_STATUS, self._on_controller_status,
                                 interface.CONTROLLER_STATUS_QOS)
        self.create_subscription(DiagnosticArray, interface.DIAGNOSTICS, self._on_diagnostics,
                                 interface.DIAGNOSTICS_QOS)
        self.create_subscription(GuardStatus, interface.GUARD_STATUS, self._on_guard, interface.GUARD_STATUS_QOS)

        self._server = ConsoleServer(p, self, self._log)
        try:
            url = self._server.start()
        except OSError as exc:
            raise StartupError(f'cannot serve the console on {p.address}:{p.port}: {exc.strerror or exc} '
                               '(another program on that port? set the port parameter)') from None
        self.create_timer(HEARTBEAT_PERIOD_S, self._heartbeat)
        diagnostics.start_timer(self, p.diagnostics_period_s, self._publish_diagnostics)
        self._limits_thread = threading.Thread(target=self._fetch_limits, name='console_limits', daemon=True)
        self._limits_thread.start()
        # The operator needs the URL (and the token, if any) to open the page: see announce.py for where it goes.
        self._announcement = Announcement(self._log)
        self._announcement.announce(url, self._server.token)

    def _log(self, line: str) -> None:
        self.get_logger().info(line)

    # -- topics -> the pages (executor thread; the server's publish_* never block) --------------------
    def _on_keyframe(self, msg: CompressedImage) -> None:
        if msg.format.lower().startswith('jpeg') or bytes(msg.data[:2]) == b'\xff\xd8':
            self._server.publish_image(bytes(msg.data), stamp_seconds(msg.header.stamp))

    def _on_plan(self, msg: WaypointArray) -> None:
        self._server.publish('plan', {
            'task_id': msg.task_id, 'instruction': msg.instruction, 'environment': msg.environment,
            'action': msg.action, 'stop': bool(msg.stop), 'latency_s': float(msg.inference_latency),
            'stamp_s': stamp_seconds(msg.header.stamp),
            'waypoints': [[w.dx, w.dy, w.dtheta, w.confidence] for w in msg.waypoints]})

    def _on_status(self, msg: TaskStatus) -> None:
        self._server.publish('status', {'state': msg.state_name, 'reason': msg.reason, 'task_id': msg.task_id,
                                        'instruction': msg.instruction})

    def _on_cmd(self, msg: Twist) -> None:
        now = time.monotonic()
        stopping = not (msg.linear.x or msg.linear.y or msg.angular.z)
        if now - self._cmd_sent_s < CMD_TO_PAGES_PERIOD_S and not stopping:
            return
        self._cmd_sent_s = now
        self._server.publish('cmd', {'vx': msg.linear.x, 'vy': msg.linear.y, 'wz': msg.angular.z,
                                     'stamp_s': self.get_clock().now().nanoseconds * 1e-9,
                                     'period_s': CMD_TO_PAGES_PERIOD_S})

    def _on_guard(self, msg: GuardStatus) -> None:
        self._server.publish('guard', {'action': msg.action, 'nearest_m': float(msg.nearest_m),
                                       'bearing_rad': float(msg.bearing_rad), 'source': msg.source,
                                       'reason': msg.reason[:200], 'scale': float(msg.scale),
                                       'period_s': interface.GUARD_STATUS_PERIOD_S})

    def _on_controller_status(self, msg: ControllerStatus) -> None:
        for kind, data in page_state(msg).items():
            self._server.publish(kind, data)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        for status in msg.status:
            if status.name == self.get_fully_qualified_name():
                continue
            self._health[status.name] = {'name': status.name, 'level': _level(status.level),
                                         'message': status.message[:200]}
            last_s, intervals = self._heard.get(status.name, (None, []))
            if last_s is not None:
                intervals = [*intervals, now - last_s][-PERIOD_SAMPLES:]
            self._heard[status.name] = (now, intervals)
        self._server.publish('health', {'nodes': self._health_now(now)})

    def _health_now(self, now_s: float) -> list[dict[str, Any]]:
        """Every node heard from, with how long ago (age_s) and how often it speaks (period_s): a node that
        died stays in the list and ages, while the others' messages keep the list coming."""
        nodes = []
        for name, entry in sorted(self._health.items()):
            last_s, intervals = self._heard[name]
            nodes.append({**entry, 'age_s': now_s - last_s,
                          'period_s': max(intervals) if intervals else DIAGNOSTICS_PERIOD_S})
        return nodes

    def _fetch_limits(self) -> None:
        """The controller's velocity limits, from its parameter service (retried until it answers)."""
        while not self._limits_known and self.context.ok():
            try:
                reply = call_service(self._get_limits, GetParameters.Request(names=list(VelocityLimits.names())),
                                     timeout_s=10.0)
                limits = VelocityLimits.from_values([v.double_value for v in reply.values])
            except (TimeoutError, RuntimeError, ValueError):
                continue
            self._server.publish('limits', limits.as_dict())
            self._limits_known = True

    # -- the pages' commands (the server's worker thread; may block up to SERVICE_TIMEOUT_S) -----------
    def _call(self, client: Any, request: Any, ok_field: str) -> tuple[bool, str]:
        """(the reply's ok_field, its message), or (False, why) when the service does not answer in time."""
        try:
            reply = call_service(client, request, timeout_s=SERVICE_TIMEOUT_S, attempt_s=1.0)
        except TimeoutError as exc:
            return False, str(exc)
        return bool(getattr(reply, ok_field)), reply.message

    def set_task(self, instruction: str) -> tuple[bool, str]:
        return self._call(self._set_task, SetTask.Request(instruction=instruction), 'accepted')

    def stop_task(self) -> tuple[bool, str]:
        return self._call(self._stop_task, Trigger.Request(), 'success')

    def estop(self) -> None:
        self._estop_pub.publish(Bool(data=True))
        self.get_logger().warning('e-stop from the console')

    def release_estop(self) -> tuple[bool, str]:
        """Only the page holding control gets here, and it is alive: that is what the heartbeat says, so say it
        before asking (the controller refuses while the last vln/estop said true). The topic and the service are
        separate channels: a refusal for that reason is asked again after a heartbeat period, twice at most."""
        for attempt in range(3):
            if self._server.control_alive():
                self._estop_pub.publish(Bool(data=False))
            ok, message = self._call(self._release, Trigger.Request(), 'success')
            if ok or message != ESTOP_STILL_ASSERTED or attempt == 2:
                return ok, message
            time.sleep(HEARTBEAT_PERIOD_S)
        return ok, message

    def control_lost(self, why: str) -> None:
        with self._estop_lock:
            self._lost_pending = True
            self._estop_pub.publish(Bool(data=True))
        self.get_logger().warning(f'the page holding control went away ({why}): e-stop')

    # -- timers ------------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        """`false` while this node is alive, page or no page (arming the dead-man must not stop a robot that
        nobody is watching); after a page-gone e-stop, silence until a page takes control again."""
        with self._estop_lock:
            if self._server.control_alive():
                self._lost_pending = False
            elif self._lost_pending:
                return
            self._estop_pub.publish(Bool(data=False))
            self._heartbeats += 1

    def _publish_diagnostics(self) -> None:
        stats = self._server.stats()
        values: dict[str, object] = {**stats, 'estop_heartbeats': self._heartbeats,
                                     'limits_known': str(self._limits_known).lower()}
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(self, diagnostics.OK, 'ok', values)))

    def destroy_node(self) -> None:
        if hasattr(self, '_server'):  # absent when the parameters or the server's start failed
            self._server.stop()
        if hasattr(self, '_announcement'):
            self._announcement.withdraw()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node('console_node', ConsoleNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
