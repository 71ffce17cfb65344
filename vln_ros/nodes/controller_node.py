"""controller_node: the newest plan (vln/waypoints) to cmd_vel at rate_hz, and the robot's safety layer.

All decisions are vln_ros.core.control's; this node only converts messages, keeps time and publishes.
Concurrency: one single-threaded executor runs the control timer and every input callback; each input
callback is bounded (a plan's waypoints are counted on its serialized bytes and only a plan of at most
MAX_WAYPOINTS steps is deserialized) and takes well under a millisecond, so none can delay a control
period noticeably. Not a multi-threaded executor: rclpy's fires timers on simulated
time (/clock, bag replay) 100-200 ms late (measured: period p99 171 ms with /clock at 100 Hz, even on an
idle machine, against 21.6 ms single-threaded).

The collision guard (guard.enabled; core/guard.py) is the last stage of every command: its sensors'
callbacks feed it and the control step passes each command through it (Controller.step); its subscriptions,
status and rviz markers are nodes/guard_adapter.py's, shared with guard_node. CollisionGuard is
not thread-safe; the one single-threaded executor above (run_node, threads=1) runs those callbacks and the
control timer one at a time, so it needs no lock. A multi-threaded executor would need one (or all of them
in one MutuallyExclusiveCallbackGroup).
"""
from __future__ import annotations

import math
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.duration import Duration
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vln_ros import interface
from vln_ros.core.config import ControllerParams
from vln_ros.core.control import (
    Controller,
    Plan,
    PlanRejected,
    Pose2D,
    StopReason,
    Twist2D,
    Waypoint,
    check_waypoint_count,
)
from vln_ros.core.controller_report import ControllerReport, ReportGate, report, stop_counter
from vln_ros.core.stats import EventCounters, LatencyWindow
from vln_ros.msg import ControllerStatus, WaypointArray
from vln_ros.nodes import diagnostics
from vln_ros.nodes.conversions import MalformedMessage, stamp_seconds, time_msg, velocity_message, waypoint_count
from vln_ros.nodes.guard_adapter import GuardAdapter
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node


def plan_from_msg(msg: WaypointArray) -> Plan:
    return Plan(stamp_seconds(msg.header.stamp),
                tuple(Waypoint(w.dx, w.dy, w.dtheta, w.confidence) for w in msg.waypoints),
                stop=msg.stop, task_id=msg.task_id, frame_id=msg.header.frame_id)


def plan_from_serialized(serialized: bytes) -> Plan:
    """The plan in a serialized WaypointArray, its size checked before rclpy deserializes it (PlanRejected)."""
    try:
        check_waypoint_count(waypoint_count(serialized))
        msg = deserialize_message(serialized, WaypointArray)
    except (MalformedMessage, RuntimeError) as exc:  # rclpy raises RuntimeError for bytes it cannot read
        raise PlanRejected('malformed_plan', str(exc)[:200]) from None
    return plan_from_msg(msg)



# How long a node on its way out waits for its last zero command to reach the subscribers (the base).
FINAL_ZERO_ACK_S = 0.5


def pose_from_odometry(msg: Odometry) -> Pose2D:
    """Planar pose; a quaternion that is not (nearly) unit gives NaN so the controller rejects it."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    norm = math.sqrt(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w)
    if not 0.9 <= norm <= 1.1:  # also catches NaN: comparisons with NaN are False
        return Pose2D(p.x, p.y, math.nan)
    yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
    return Pose2D(p.x, p.y, yaw)


class ControllerNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__('controller_node', **node_kwargs)
        self.params: ControllerParams = declare_params(self, ControllerParams, self._apply_params,
                                                       cli_args=node_kwargs.get('cli_args'),
                                                       file_without_section='error')
        p = self.params
        self._controller = Controller(p)
        self._counters = EventCounters(time.monotonic())
        self._periods = LatencyWindow(size=max(100, int(10 * p.rate_hz)))  # ~10 s of control periods
        self._jitter = LatencyWindow(size=max(100, int(10 * p.rate_hz)))   # |period - 1/rate_hz|
        self._last_tick: float | None = None
        self._last_now: float | None = None
        self._last_command = Twist2D()
        self._last_reason = StopReason.NO_PLAN
        self._last_plan_stamp_s: float | None = None

        # raw: the plan's size is checked on its bytes before it becomes Python objects (plan_from_serialized)
        self.create_subscription(WaypointArray, interface.WAYPOINTS, self._on_plan, interface.PLAN_QOS, raw=True)
        self.create_subscription(Odometry, interface.ODOM, self._on_odometry, interface.SENSOR_QOS)
        self.create_subscription(
            Bool, interface.ESTOP, self._on_estop, interface.ESTOP_QOS,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_estop_qos_mismatch))
        self.create_service(Trigger, interface.RELEASE_ESTOP, self._on_release)
        self._cmd_type = TwistStamped if p.cmd_vel_stamped else Twist
        self._cmd_pub = self.create_publisher(self._cmd_type, interface.CMD_VEL, interface.CMD_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        self._status_gate = ReportGate(interface.CONTROLLER_STATUS_PERIOD_S)
        self._status_pub = self.create_publisher(ControllerStatus, interface.CONTROLLER_STATUS,
                                                 interface.CONTROLLER_STATUS_QOS)
        # The collision guard and its sensors' subscriptions (nodes/guard_adapter.py, shared with guard_node).
        self._guard: GuardAdapter | None = None
        if p.guard.enabled:
            self._guard = GuardAdapter(self, p.guard, self._now, lambda: self.params.base_frame)
            self.get_logger().info(self._guard.describe())
        self.create_timer(1.0 / p.rate_hz, self._tick)
        diagnostics.start_timer(self, p.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f'{self.resolve_topic_name(interface.WAYPOINTS)} -> {self.resolve_topic_name(interface.CMD_VEL)} '
            f'({self._cmd_type.__name__}) at {p.rate_hz} Hz; limits vx {p.max_linear_x} m/s, vy {p.max_linear_y} '
            f'm/s, wz {p.max_angular_z} rad/s; plan timeout {p.plan_timeout_s} s, inference timeout '
            f'{p.inference_timeout_s} s, dead-man {p.estop_timeout_s or "off"}')

    def _apply_params(self, params: ControllerParams) -> None:
        """A change through the parameter services, validated by the model (parameters.LiveParameters): the
        control law and the guard use it from their next step. Only dynamic parameters change; rate_hz,
        cmd_vel_stamped, base_frame, estop_timeout_s, diagnostics_period_s and which guard sources are on
        (with their topics, frames and mounts) are read-only."""
        self.params = params
        self._controller.set_params(params)
        if self._guard is not None:
            self._guard.update_params(params.guard)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs ---------------------------------------------------------------------------------
    def _on_plan(self, serialized: bytes) -> None:
        self._counters.add('plans_received')
        try:
            plan = plan_from_serialized(serialized)
        except PlanRejected as exc:  # refused before it was even built: the core must stop all the same
            self._controller.refuse_plan(exc, self._now())
            self._reject(exc, '(unread)')
            return
        try:
            self._controller.set_plan(plan, self._now())
            self._last_plan_stamp_s = plan.stamp_s
        except PlanRejected as exc:
            self._reject(exc, plan.task_id)

    def _reject(self, exc: PlanRejected, task_id: str) -> None:
        self._counters.add('plans_rejected_' + exc.reason)
        self.get_logger().warning(f'rejected a plan of task {task_id!r}, stopping: {exc}', throttle_duration_sec=2.0)

    def _on_odometry(self, msg: Odometry) -> None:
        now = self._now()
        stamp = stamp_seconds(msg.header.stamp) or now
        pose = pose_from_odometry(msg)
        accepted = self._controller.set_odometry(stamp, pose, now)
        if self._guard is not None:
            self._guard.on_odometry(msg)     # its twist: the robot's real motion for the moving-obstacle estimate
        if not accepted:
            self._counters.add('odometry_rejected')
            self.get_logger().warning(f'rejected odometry (non-finite, implausible or out of order): {pose}',
                                      throttle_duration_sec=2.0)

    def _on_estop(self, msg: Bool) -> None:
        was = self._controller.estop_engaged
        now = self._now()
        self._controller.estop_message(bool(msg.data), now)
        if msg.data and was is None:
            self._counters.add('estop_engagements')
            self.get_logger().error(f'e-stop engaged: stopping (latched until {interface.RELEASE_ESTOP})')
            # Said at once, not at the next control step: the console's pill follows this message.
            self._publish_status(now)

    def _on_estop_qos_mismatch(self, event: Any) -> None:
        self._counters.add('estop_qos_mismatches')
        self.get_logger().error('an e-stop publisher with incompatible QoS cannot reach this node; publish '
                                f'{interface.ESTOP} RELIABLE', throttle_duration_sec=10.0)

    def _on_release(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._controller.release_estop(self._now())
        self.get_logger().info(f'e-stop release requested: {response.message}')
        return response

    # -- the control loop ---------------------------------------------------------------------------
    def _tick(self) -> None:
        tick, now = time.monotonic(), self._now()
        if self._last_tick is not None:  # loop timing statistics: wall clock
            period = tick - self._last_tick
            self._periods.add(period)
            self._jitter.add(abs(period - 1.0 / self.params.rate_hz))
        self._last_tick = tick
        # The control law runs on ROS time (the timer does too), so accelerations stay within limits
        # in simulation at any real-time factor.
        dt = 1.0 / self.params.rate_hz if self._last_now is None else now - self._last_now
        self._last_now = now
        # Every command, plans from the stream included, passes the guard (the last stage) inside the step.
        command = self._controller.step(now, dt, self._guard.guard if self._guard is not None else None)
        if (counter := stop_counter(self._last_reason, command.reason)) is not None:
            self._counters.add(counter)
        self._last_command, self._last_reason = command.twist, command.reason
        if command.publish:
            self._cmd_pub.publish(self._message(command.twist, now))
            self._counters.add('commands_published')
        if command.guard is not None and self._guard is not None:
            self._guard.report(command.guard, now)
        self._publish_status(now)

    def _publish_status(self, now_s: float) -> None:
        """vln/controller_status, when the gate says it is due (a change, or a period since the last one)."""
        state = report(self._controller, self._last_reason, now_s, self._last_plan_stamp_s)
        if self._status_gate.due(state, now_s):
            self._status_pub.publish(self._status_message(state, now_s))

    def _status_message(self, state: ControllerReport, now_s: float) -> ControllerStatus:
        msg = ControllerStatus(
            mode=state.mode.value, estop_engaged=state.estop_engaged, estop_reason=state.estop_reason,
            estop_asserted=state.estop_asserted, stop_reason=state.stop_reason, plan_age_s=state.plan_age_s,
            max_linear_x=state.max_linear_x, max_linear_y=state.max_linear_y, max_angular_z=state.max_angular_z,
            estop_timeout_s=state.estop_timeout_s)
        msg.header.stamp = time_msg(now_s)
        msg.header.frame_id = self.params.base_frame
        return msg

    def _message(self, t: Twist2D, now_s: float) -> Twist | TwistStamped:
        """The command of the step at now_s, stamped with that step's time."""
        return velocity_message(t.vx, t.vy, t.wz, self._cmd_type, now_s, self.params.base_frame)

    def destroy_node(self) -> None:
        """On the way out (Ctrl-C, SIGTERM, the launcher gone): one last zero command, so a base that keeps
        its last command until its own timeout stops now."""
        try:
            if self.context.ok():
                self._cmd_pub.publish(self._message(Twist2D(), self._now()))
                # Delivered before the process (and its DDS writer) ends, or it is lost: bounded.
                self._cmd_pub.wait_for_all_acked(Duration(seconds=FINAL_ZERO_ACK_S))
        except Exception as exc:  # the context went down meanwhile: nothing can be sent any more
            self.get_logger().debug(f'no final zero command: {exc}')
        super().destroy_node()

    # -- diagnostics ---------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        nominal = 1.0 / self.params.rate_hz
        rates = self._counters.rates(time.monotonic())
        totals = self._counters.totals()
        reason, command = self._last_reason, self._last_command
        plan_age = self._now() - self._last_plan_stamp_s if self._last_plan_stamp_s is not None else float('nan')
        values: dict[str, object] = {
            'stop_reason': reason.value,
            'rate_hz': 1.0 / (self._periods.percentile_ms(50) / 1e3) if len(self._periods) else float('nan'),
            'period_ms_p50': self._periods.percentile_ms(50),
            'period_ms_p99': self._periods.percentile_ms(99),
            'period_ms_max': self._periods.percentile_ms(100),
            'period_jitter_ms_p99': self._jitter.percentile_ms(99),
            'plan_age_s': plan_age,
            'plan_rate_hz': rates.get('plans_received', 0.0),
            'cmd_vx': command.vx, 'cmd_vy': command.vy, 'cmd_wz': command.wz,
            'estop': self._controller.estop_engaged.value if self._controller.estop_engaged else 'released',
            # who can reach this robot: an operator wants to know that an e-stop publisher exists
            'estop_publishers': self.count_publishers(self.resolve_topic_name(interface.ESTOP)),
            'plan_publishers': self.count_publishers(self.resolve_topic_name(interface.WAYPOINTS)),
        }
        for name in ('plans_received', 'commands_published', 'odometry_rejected', 'estop_engagements'):
            values[name] = totals.get(name, 0)
        values.update({k: v for k, v in sorted(totals.items())
                       if k.startswith(('plans_rejected_', 'estop_qos', 'stops_'))})
        if self._guard is not None:
            values.update(self._guard.diagnostics_values())
        slow = len(self._periods) and self._periods.percentile_ms(50) > 1.1e3 * nominal
        if reason in (StopReason.ESTOP, StopReason.ESTOP_DEADMAN):
            level, message = diagnostics.WARN, f'stopped: {reason.value} (release with {interface.RELEASE_ESTOP})'
        elif reason.is_fault:
            level, message = diagnostics.WARN, f'stopped: {reason.value}'
        elif self._guard is not None and self._guard.state is not None and self._guard.stopping():
            level, message = diagnostics.WARN, f'collision guard stop: {self._guard.state.reason}'
        elif slow:
            level, message = diagnostics.WARN, f'control loop slower than {self.params.rate_hz} Hz'
        else:
            level, message = diagnostics.OK, reason.value
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(self, level, message, values)))


def main(args: list[str] | None = None) -> int:
    return run_node('controller_node', ControllerNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
