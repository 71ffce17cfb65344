"""guard_node: the collision guard alone, cmd_vel_in -> cmd_vel_out, for robots where teleop or a twist_mux
also drives the base (put it after the mux, before the motors).

Each command on cmd_vel_in leaves at once on cmd_vel_out, made safe by vln_ros.core.guard (the same guard,
parameters and fail-safe rules as controller_node's last stage: an enabled, required source that was never
heard, is silent or sends bad data stops the robot). Between inputs, a timer at rate_hz re-checks the newest
input against the newest sensor data, so an obstacle stops the robot within a period rather than at the next
input; an input silent past input_timeout_s becomes zero (for zero_hold_s, then the node goes quiet), and a
non-finite input is counted and becomes zero. Odometry on `odom` is optional: its measured twist, while
fresh, is the robot's own motion that the guard's estimate of moving obstacles takes out (without it, the
commands it let through). With guard.enabled false, commands pass unchanged (still with the input
timeout). State on vln/guard_status (latched), as controller_node's.

Concurrency: one single-threaded executor runs the input, sensor and timer callbacks one at a time
(CollisionGuard is not thread-safe; each callback is short).
"""
from __future__ import annotations

import math
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.duration import Duration
from rclpy.node import Node

from vln_ros import interface
from vln_ros.core.config import GuardNodeParams
from vln_ros.core.guard_footprint import Cmd
from vln_ros.core.stats import EventCounters
from vln_ros.nodes import diagnostics
from vln_ros.nodes.conversions import velocity_message
from vln_ros.nodes.guard_adapter import GuardAdapter
from vln_ros.nodes.parameters import declare_params
from vln_ros.nodes.runner import run_node

ZERO: Cmd = (0.0, 0.0, 0.0)
# How long the last zero on the way out may take to be delivered (as controller_node's).
FINAL_ZERO_ACK_S = 0.5


class GuardNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__('guard_node', **node_kwargs)
        self.params: GuardNodeParams = declare_params(self, GuardNodeParams, self._apply_params,
                                                      cli_args=node_kwargs.get('cli_args'),
                                                      file_without_section='error')
        p = self.params
        self._counters = EventCounters(time.monotonic())
        self._input: Cmd | None = None            # the newest input command
        self._input_s = -math.inf                 # when it arrived (ROS time)
        self._sent: Cmd | None = None             # the last command published (None: quiet)
        self._silent_since_s: float | None = None
        self._msg_type = TwistStamped if p.cmd_vel_stamped else Twist
        self._pub = self.create_publisher(self._msg_type, interface.CMD_VEL_OUT, interface.CMD_QOS)
        self.create_subscription(self._msg_type, interface.CMD_VEL_IN, self._on_input, interface.CMD_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, interface.DIAGNOSTICS, interface.DIAGNOSTICS_QOS)
        self._guard = GuardAdapter(self, p.guard, self._now, lambda: self.params.base_frame, subscribe_odometry=True)
        self.create_timer(1.0 / p.rate_hz, self._tick)
        diagnostics.start_timer(self, p.diagnostics_period_s, self._publish_diagnostics)
        guard = self._guard.describe() if p.guard.enabled else 'collision guard OFF (guard.enabled): commands pass'
        self.get_logger().info(
            f'{self.resolve_topic_name(interface.CMD_VEL_IN)} -> {self.resolve_topic_name(interface.CMD_VEL_OUT)} '
            f'({self._msg_type.__name__}), re-checked at {p.rate_hz} Hz, input timeout {p.input_timeout_s} s; '
            f'{guard}')

    def _apply_params(self, params: GuardNodeParams) -> None:
        """A validated change through the parameter services: used from the next step (fixed ones refused)."""
        self.params = params
        self._guard.update_params(params.guard)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_input(self, msg: Twist | TwistStamped) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        cmd = (twist.linear.x, twist.linear.y, twist.angular.z)
        self._counters.add('inputs_received')
        if not all(math.isfinite(v) for v in cmd):
            # Counted here; the guard turns it into a stop (and says so on vln/guard_status).
            self._counters.add('inputs_rejected_nonfinite')
            self.get_logger().warning(f'rejected a non-finite command on cmd_vel_in: {cmd}', throttle_duration_sec=2.0)
        self._input, self._input_s = cmd, self._now()
        self._silent_since_s = None
        self._step(self._input_s, always=True)

    def _tick(self) -> None:
        self._step(self._now(), always=False)

    def _step(self, now_s: float, always: bool) -> None:
        """Guard the newest input (zero once it is silent) and publish: on every input, and from the timer
        when the guarded command changed (a stop, a slowdown, a release) or while a silent input is held at 0."""
        fresh = self._input is not None and 0.0 <= now_s - self._input_s <= self.params.input_timeout_s
        cmd, state = self._guard.guard.step(now_s, self._input if fresh and self._input is not None else ZERO)
        self._guard.report(state, now_s)
        if fresh:
            if always or cmd != self._sent:
                self._publish(cmd, now_s)
            return
        # Silent input (or none yet): zero for zero_hold_s after it went silent, then quiet (a mux can hand over).
        if self._input is None:
            return
        if self._silent_since_s is None:
            self._silent_since_s = now_s
            self._counters.add('input_timeouts')
        if now_s - self._silent_since_s <= self.params.zero_hold_s or self._sent != ZERO:
            self._publish(ZERO, now_s)

    def _publish(self, cmd: Cmd, now_s: float) -> None:
        self._pub.publish(self._message(cmd, now_s))
        self._sent = cmd
        self._counters.add('commands_published')

    def _message(self, cmd: Cmd, now_s: float) -> Twist | TwistStamped:
        return velocity_message(*cmd, self._msg_type, now_s, self.params.base_frame)

    def destroy_node(self) -> None:
        """On the way out: one last zero, so a base that keeps its last command stops now (as controller_node)."""
        try:
            if self.context.ok():
                self._pub.publish(self._message(ZERO, self._now()))
                self._pub.wait_for_all_acked(Duration(seconds=FINAL_ZERO_ACK_S))
        except Exception as exc:  # the context went down meanwhile: nothing can be sent any more
            self.get_logger().debug(f'no final zero command: {exc}')
        super().destroy_node()

    def _publish_diagnostics(self) -> None:
        totals = self._counters.totals()
        values: dict[str, object] = {'input_age_s': self._now() - self._input_s if self._input is not None
                                     else float('nan')}
        for name in ('inputs_received', 'inputs_rejected_nonfinite', 'input_timeouts', 'commands_published'):
            values[name] = totals.get(name, 0)
        values.update(self._guard.diagnostics_values())
        if self._guard.stopping() and self._guard.state is not None:
            level, message = diagnostics.WARN, f'collision guard stop: {self._guard.state.reason}'
        elif self._silent_since_s is not None:
            level, message = diagnostics.WARN, f'{interface.CMD_VEL_IN} silent: zero'
        else:
            level, message = diagnostics.OK, 'guarding' if self.params.guard.enabled else 'passing (guard off)'
        self._diag_pub.publish(diagnostics.array(self, diagnostics.status(self, level, message, values)))


def main(args: list[str] | None = None) -> int:
    return run_node('guard_node', GuardNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
